"""How examples/reviews-240.csv was drawn from the Multi-Domain Sentiment Dataset's dev split.

30 reviews of at most 60 words for each of 4 domains x 2 sentiments, seeded; run from the
repository root with the project's shared data beside it:

    python examples/build_review_corpus.py ../shared/data/amazon-reviews.dev.jsonl examples/reviews-240.csv
"""

import sys

import pandas as pd

source, target = sys.argv[1:3]
records = pd.read_json(source, lines=True)
records = records.join(pd.json_normalize(records.pop("labels")))
short = records[records["text"].str.split().str.len() <= 60]
sample = short.groupby(["domain", "sentiment"], group_keys=False).sample(n=30, random_state=0)
sample.sample(frac=1, random_state=0)[["id", "text", "domain", "sentiment"]].to_csv(target, index=False)
