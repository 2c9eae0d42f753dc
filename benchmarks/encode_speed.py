"""Encode throughput in float32 and bfloat16 (fst_gen and fst_head), each against its own matmul limit.

The same texts are embedded chunk by chunk by every (dtype, readout) pair in turn, so that the
machine's noise falls on all alike; the figures that matter are ratios within the run. The limit
of a dtype is this machine's best matrix-product rate for that dtype at the model's shapes (the
tokens of a batch x hidden size x MLP width, e.g. 1024 x 576 x 1536 for SmolLM2-135M), divided by
the matmul work per token of the decoder layers: the tokens/s a forward pass would reach if it were
nothing but its matrix products.

    python benchmarks/encode_speed.py [--data ../shared/data/syngoalex.dev.jsonl] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import itertools
import platform
import resource
import time
from pathlib import Path

import numpy as np
import torch
from benchmark_data import DATA, load_texts_and_instructions

from inbedder import InBedder
from inbedder.loading import cpu_runs_bfloat16

DTYPES = ("float32", "bfloat16")
READOUTS = ("fst_gen", "fst_head")


def matmul_gflops(rows: int, inner: int, outer: int, dtype: torch.dtype, repeats: int = 20) -> float:
    """The best rate of ``(rows x inner) @ (inner x outer)`` products in ``dtype`` after a warm-up."""
    x, weight = torch.randn(rows, inner, dtype=dtype), torch.randn(outer, inner, dtype=dtype)
    for _ in range(3):
        torch.nn.functional.linear(x, weight)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.nn.functional.linear(x, weight)
        best = min(best, time.perf_counter() - start)
    return 2 * rows * inner * outer / best / 1e9


def gflop_per_token(model: InBedder) -> float:
    """Matrix-product work per token of a forward pass through the decoder layers (no LM head)."""
    weights = sum(m.weight.numel() for m in model.backend.layers.modules() if isinstance(m, torch.nn.Linear))
    return 2 * weights / 1e9


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--model", default=None)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--chunk", type=int, default=64, help="texts per turn of each (dtype, readout) pair")
    parser.add_argument("--limit", type=int, default=256)
    args = parser.parse_args()

    texts, (instruction, *_) = load_texts_and_instructions(args.data, args.limit)
    models = {dtype: InBedder(args.model, dtype=dtype) for dtype in DTYPES}
    reference = models["float32"]
    batch_tokens: list[int] = []
    prompts = [len(reference.prompt_tokenizer(t, instruction, reference.template)) for t in texts]
    real_tokens = sum(prompts)
    for model in models.values():
        model.encode(texts[:4], instruction)  # warm-up

    pairs = list(itertools.product(DTYPES, READOUTS))
    seconds = dict.fromkeys(pairs, 0.0)
    vectors: dict[tuple[str, str], list[np.ndarray]] = {pair: [] for pair in pairs}
    for start in range(0, len(texts), args.chunk):
        chunk = texts[start : start + args.chunk]
        for dtype, readout in pairs:
            model = models[dtype]
            watch = model.watch(
                lambda batch, at=start: batch_tokens.append(max(prompts[at + i] for i in batch) * len(batch))
            )
            with watch:
                began = time.perf_counter()
                vectors[dtype, readout].append(
                    model.encode(chunk, instruction, readout=readout, batch_size=args.batch_size)
                )
                seconds[dtype, readout] += time.perf_counter() - began

    rows = int(np.mean(batch_tokens))
    hidden = reference.backend.hidden_size
    width = reference.backend.model.config.intermediate_size
    per_token = gflop_per_token(reference)
    limits = {dtype: matmul_gflops(rows, hidden, width, getattr(torch, dtype)) for dtype in DTYPES}

    n = len(texts)
    print(
        f"model {reference.name}, {n} texts from {args.data.name}, instruction {instruction!r}, batch {args.batch_size}"
    )
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
        f"native bf16: {cpu_runs_bfloat16()}"
    )
    print(f"prompt tokens: {real_tokens}; a batch holds {rows} padded tokens on average")
    for dtype, gflops in limits.items():
        print(
            f"matmul limit {dtype}: {gflops:.0f} GFLOP/s at {rows} x {hidden} x {width} "
            f"/ {per_token:.3f} GFLOP per token = {gflops / per_token:.0f} tokens/s"
        )
    print("| dtype | readout | seconds | texts/s | tokens/s | share of its dtype's limit |")
    print("|---|---|---|---|---|---|")
    for (dtype, readout), spent in seconds.items():
        rate = real_tokens / spent
        share = rate / (limits[dtype] / per_token)
        print(f"| {dtype} | {readout} | {spent:.1f} | {n / spent:.2f} | {rate:.0f} | {share:.0%} |")
    for readout in READOUTS:
        speedup = seconds["float32", readout] / seconds["bfloat16", readout]
        agree = cosines(*(np.concatenate(vectors[d, readout]) for d in DTYPES))
        print(
            f"{readout}: bfloat16 / float32 speed-up {speedup:.2f}x; "
            f"cosine to float32 min {agree.min():.5f}, mean {agree.mean():.5f}"
        )
    print(f"peak resident memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
