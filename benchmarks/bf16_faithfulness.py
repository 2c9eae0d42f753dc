"""How closely bfloat16 encoding follows float32: per-text cosines, and a text alone against the same text in a batch.

Loads the model twice (float32 and bfloat16), embeds every text of a benchmark set under each of
its aspects' instructions with both, and prints the cosine between the two vectors of each text
(fst_gen, and fst_head computed from the same states). Then, in each dtype, it embeds texts one at
a time and inside batches of 16 and prints the cosine between the two.

    python benchmarks/bf16_faithfulness.py [--data ../shared/data/syngoalex.dev.jsonl] [--limit 128]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from benchmark_data import DATA, load_texts_and_instructions

from inbedder import InBedder


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def describe(values: np.ndarray) -> str:
    return f"min {values.min():.5f}, mean {values.mean():.5f}, share >= 0.999: {(values >= 0.999).mean():.1%}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--model", default=None)
    parser.add_argument("--limit", type=int, default=None, help="texts of the set (default: all)")
    parser.add_argument("--alone", type=int, default=32, help="texts embedded alone and in a batch of 16")
    args = parser.parse_args()

    texts, instructions = load_texts_and_instructions(args.data, args.limit)
    encoders = {dtype: InBedder(args.model, dtype=dtype) for dtype in ("float32", "bfloat16")}
    name = encoders["float32"].name
    print(f"model {name}, {len(texts)} texts of {args.data.name}, {len(instructions)} instructions")
    print("| instruction | readout | cosine bfloat16 to float32 |")
    print("|---|---|---|")
    for instruction in instructions:
        states = {d: m.encode(texts, instruction, readout="fst_gen", batch_size=16) for d, m in encoders.items()}
        heads = {d: m.encode(texts, instruction, readout="fst_head", batch_size=16) for d, m in encoders.items()}
        for readout, vectors in (("fst_gen", states), ("fst_head", heads)):
            print(f"| {instruction} | {readout} | {describe(cosines(vectors['float32'], vectors['bfloat16']))} |")

    print()
    print(f"a text alone against the same text in a batch of 16 ({args.alone} texts, {instructions[0]!r}):")
    print("| dtype | readout | cosine alone to batched |")
    print("|---|---|---|")
    chosen = texts[: args.alone]
    for dtype, model in encoders.items():
        for readout in ("fst_gen", "fst_head"):
            batched = model.encode(chosen, instructions[0], readout=readout, batch_size=16)
            alone = np.stack([model.encode([t], instructions[0], readout=readout)[0] for t in chosen])
            print(f"| {dtype} | {readout} | {describe(cosines(alone, batched))} |")


if __name__ == "__main__":
    main()
