"""fst_gen throughput under different caps on padded tokens per forward pass (max_batch_tokens).

The settings alternate run by run over the same texts, so the machine's noise falls on all alike.

    python benchmarks/batch_budget.py [--data ../shared/data/syngoalex.dev.jsonl] [--budgets 512 1024 0]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from benchmark_data import DATA, load_texts_and_instructions

from inbedder import InBedder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--model", default=None)
    parser.add_argument("--texts", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--budgets", type=int, nargs="+", default=[512, 1024, 0], help="0 = no cap")
    parser.add_argument("--repeats", type=int, default=4)
    args = parser.parse_args()

    texts, (instruction, *_) = load_texts_and_instructions(args.data, args.texts)
    model = InBedder(args.model)
    model.encode(texts[:16], instruction)  # warm-up
    tokens = sum(len(model.prompt_tokenizer(t, instruction, model.template)) for t in texts)

    seconds: dict[int, list[float]] = {budget: [] for budget in args.budgets}
    for _ in range(args.repeats):
        for budget in args.budgets:
            model.max_batch_tokens = budget or None
            start = time.perf_counter()
            model.encode(texts, instruction, batch_size=args.batch_size)
            seconds[budget].append(time.perf_counter() - start)
    print(f"model {model.name}, {len(texts)} texts ({tokens} prompt tokens), batch_size {args.batch_size}")
    print("| max_batch_tokens | mean real tokens/s | best real tokens/s |")
    print("|---|---|---|")
    for budget, runs in seconds.items():
        print(f"| {budget or 'no cap'} | {len(runs) * tokens / sum(runs):.0f} | {tokens / min(runs):.0f} |")


if __name__ == "__main__":
    main()
