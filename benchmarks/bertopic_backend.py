"""BERTopic with an InBedder backend against BERTopic's default embedder (all-MiniLM-L6-v2) on amazon dev.

    python benchmarks/bertopic_backend.py [--limit 200] [--model NAME] [--seeds 3] [--data-dir ../shared/data]

Needs ``pip install 'inbedder[bertopic,eval]'``. amazon dev is subsampled as the quality suite does
(stratified, seed 0). Every row runs BERTopic's own pipeline (UMAP to 5 dimensions, HDBSCAN with
its default minimum of 10, c-TF-IDF), with UMAP seeded per run; a second set of rows sets the
clustering step to k-means with k = 2, the number of sentiment classes. The InBedder backend asks
each of the card's two questions (the satisfaction question, and the product question for
contrast); MiniLM is what ``BERTopic()`` uses when given no embedding model. Each embedder embeds
the texts once, as BERTopic's ``fit_transform`` does through the backend's ``embed``; the seeds
reuse those vectors. Per row: v-measure of the topics (HDBSCAN's outliers, -1, count as one more
topic) against sentiment and against domain, topics found and the outlier share, mean over seeds.
"""

from __future__ import annotations

import argparse
import shlex
import sys

import numpy as np
from bertopic import BERTopic
from sklearn.cluster import KMeans
from sklearn.metrics import v_measure_score
from umap import UMAP

from inbedder import InBedder
from inbedder.eval.datasets import default_data_dir, load_local
from inbedder.integrations.bertopic import InBedderBackend
from inbedder.reencoder import MINILM, load_sentence_embedder


def topics_of(docs: list[str], vectors: np.ndarray, seed: int, kmeans: bool) -> np.ndarray:
    """BERTopic's topic per document, its defaults but for the seed (and k-means when asked)."""
    umap = UMAP(n_neighbors=15, n_components=5, min_dist=0.0, metric="cosine", random_state=seed)
    extra = {"hdbscan_model": KMeans(2, n_init=10, random_state=seed)} if kmeans else {}
    assigned, _ = BERTopic(umap_model=umap, **extra).fit_transform(docs, embeddings=vectors)
    return np.asarray(assigned)


def row(name: str, docs: list[str], vectors: np.ndarray, labels: dict[str, list[str]], seeds: int, kmeans: bool) -> str:
    scores = {aspect: [] for aspect in labels}
    found, outliers = [], []
    for seed in range(seeds):
        assigned = topics_of(docs, vectors, seed, kmeans)
        for aspect, truth in labels.items():
            scores[aspect].append(v_measure_score(truth, assigned))
        found.append(len(set(assigned) - {-1}))
        outliers.append(float(np.mean(assigned == -1)))
    cells = " | ".join(f"{np.mean(v):.3f}" for v in scores.values())
    return f"| {name} | {cells} | {np.mean(found):.1f} | {np.mean(outliers):.0%} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--model", default=None, help="the InBedder model (default: the default model)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()

    data = load_local("amazon-reviews", args.data_dir or default_data_dir()).subsample(args.limit, 0)
    docs = data.texts
    labels = {"sentiment": data.labels("sentiment"), "domain": data.labels("domain")}
    model = InBedder(args.model)
    embedders = {
        "BERTopic's default, all-MiniLM-L6-v2": load_sentence_embedder(MINILM).encode(docs),
        **{
            f"InBedder backend ({model.name}), {question!r}": InBedderBackend(model, instruction=question).embed(docs)
            for question in (data.aspects["sentiment"]["instruction"], data.aspects["domain"]["instruction"])
        },
    }
    print(f"`{shlex.join([sys.executable.rsplit('/', 1)[-1], *sys.argv])}`, amazon dev, {len(docs)} texts\n")
    for kmeans in (False, True):
        step = "k-means, k = 2" if kmeans else "HDBSCAN (BERTopic's default)"
        print(f"clustering step: {step}; mean over {args.seeds} seeds\n")
        print("| embedder | v-measure vs sentiment | vs domain | topics | outliers |\n|---|---|---|---|---|")
        for name, vectors in embedders.items():
            print(row(name, docs, np.asarray(vectors), labels, args.seeds, kmeans), flush=True)
        print()


if __name__ == "__main__":
    main()
