"""What two models answer to each aspect's question about a few texts of a local set (markdown table).

    python benchmarks/compare_answers.py --models smollm2-135m-instruct smollm2-135m-inbedder \
        --data ../shared/data/syngoalex.dev.jsonl --texts 4
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmark_data import DATA, load_texts_and_instructions

from inbedder import InBedder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--texts", type=int, default=4)
    parser.add_argument("--stride", type=int, default=37, help="take every Nth text, to mix the classes")
    parser.add_argument("--max-new-tokens", type=int, default=8)
    args = parser.parse_args()

    texts, instructions = load_texts_and_instructions(args.data)
    texts = texts[:: args.stride][: args.texts]
    answers = {}
    for name in args.models:
        model = InBedder(name)
        results = model.encode_multi(texts, instructions, max_new_tokens=args.max_new_tokens, return_generations=True)
        answers[name] = [said for _, said in results]
    print("| text | question | " + " | ".join(args.models) + " |")
    print("|---|---|" + "---|" * len(args.models))
    for i, text in enumerate(texts):
        for k, question in enumerate(instructions):
            cells = [answers[name][k][i].replace("|", "/").replace("\n", " ") for name in args.models]
            short = text[:60].replace("|", "/").replace("\n", " ")
            print(f"| {short}... | {question} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
