"""A subset of QA records whose answers name something: no yes/no answers, at most N words.

    python benchmarks/qa_subset.py ../shared/data/qa-short-answers.jsonl \
        --drop-answer yes --drop-answer no --max-answer-words 4 --out out/qa-named-answers.jsonl
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path


def keep(answer: str, dropped: set[str], max_words: int) -> bool:
    """Whether an answer stays: not one of the dropped answers (case and final period ignored), short enough."""
    return answer.strip().rstrip(".").lower() not in dropped and len(answer.split()) <= max_words


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", type=Path, help="JSONL with an answer column")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--answer-column", default="answer")
    parser.add_argument("--drop-answer", action="append", default=[], help="an answer to leave out (repeatable)")
    parser.add_argument("--max-answer-words", type=int, default=8)
    args = parser.parse_args()

    dropped = {answer.lower() for answer in args.drop_answer}
    records = [json.loads(line) for line in args.data.read_text(encoding="utf-8").splitlines() if line.strip()]
    kept = [record for record in records if keep(record[args.answer_column], dropped, args.max_answer_words)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(json.dumps(record) + "\n" for record in kept), encoding="utf-8")
    sources = Counter(record.get("source", "?") for record in kept)
    print(f"kept {len(kept)} of {len(records)} records in {args.out}: {dict(sources)}")


if __name__ == "__main__":
    main()
