"""One corpus under several instructions: encode_multi (shared prefix run once) against separate encodes.

Both paths embed the same texts chunk by chunk, alternating, so the machine's noise falls on both
alike; the figure is their ratio. Instructions: each aspect's main instruction from the data card.

    python benchmarks/multi_instruction.py [--data ../shared/data/syngoalex.dev.jsonl] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from benchmark_data import DATA, load_texts_and_instructions

from inbedder import InBedder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--model", default=None)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--chunk", type=int, default=128)
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()

    texts, instructions = load_texts_and_instructions(args.data, args.limit)
    model = InBedder(args.model)
    model.encode_multi(texts[:4], instructions)  # warm-up

    times = {"encode_multi": 0.0, "separate": 0.0}
    multi, separate = [], []
    for start in range(0, len(texts), args.chunk):
        chunk = texts[start : start + args.chunk]
        t0 = time.perf_counter()
        multi.append(model.encode_multi(chunk, instructions, batch_size=args.batch_size))
        t1 = time.perf_counter()
        separate.append([model.encode(chunk, i, batch_size=args.batch_size) for i in instructions])
        t2 = time.perf_counter()
        times["encode_multi"] += t1 - t0
        times["separate"] += t2 - t1
    difference = max(
        float(np.abs(np.concatenate([m[k] for m in multi]) - np.concatenate([s[k] for s in separate])).max())
        for k in range(len(instructions))
    )
    print(f"model {model.name}, {len(texts)} texts from {args.data.name}, batch {args.batch_size}")
    print(f"instructions: {instructions}")
    print("| path | seconds | texts x instructions / s |")
    print("|---|---|---|")
    for name, seconds in times.items():
        print(f"| {name} | {seconds:.1f} | {len(texts) * len(instructions) / seconds:.2f} |")
    print(f"speed-up encode_multi / separate: {times['separate'] / times['encode_multi']:.2f}x")
    print(f"max |encode_multi - encode| over all embeddings: {difference:.2e}")


if __name__ == "__main__":
    main()
