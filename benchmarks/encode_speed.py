"""Encode throughput of fst_gen (last layer, QA template) against the reference-style path.

The reference path is what the original InBedder code does: pad the batch, call
``generate(max_new_tokens=1, output_hidden_states=True)`` and read the last layer's state at the
last prompt position. Both paths embed the same texts chunk by chunk, alternating, so that the
machine's noise falls on both alike; the figure that matters is their ratio.

    python benchmarks/encode_speed.py [--data ../shared/data/syngoalex.dev.jsonl] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import platform
import resource
import time
from pathlib import Path

import numpy as np
import torch
from benchmark_data import DATA, load_texts_and_instructions

from inbedder import InBedder
from inbedder.templates import QA_PATTERN


def matmul_gflops(size: int = 2048, repeats: int = 10) -> float:
    """This machine's float32 matrix-product rate: the best of ``repeats`` products after a warm-up."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def gflop_per_token(model: InBedder) -> float:
    """Matrix-product work per token of a forward pass through the decoder layers (no LM head)."""
    weights = sum(m.weight.numel() for m in model.backend.layers.modules() if isinstance(m, torch.nn.Linear))
    return 2 * weights / 1e9


@torch.inference_mode()
def reference_encode(model: InBedder, texts: list[str], instruction: str, batch_size: int) -> tuple[np.ndarray, int]:
    """The original code's way: input order, padded batches, generate() with all hidden states."""
    tokenizer, lm = model.tokenizer, model.backend.model
    tokenizer.padding_side = "left"
    prompts = [QA_PATTERN.format(input=t, instruction=instruction) for t in texts]
    out, padded = [], 0
    for start in range(0, len(prompts), batch_size):
        batch = tokenizer(prompts[start : start + batch_size], return_tensors="pt", padding=True)
        generated = lm.generate(
            **batch,
            max_new_tokens=1,
            do_sample=False,
            output_hidden_states=True,
            return_dict_in_generate=True,
            pad_token_id=model.backend.pad_id,
        )
        out.append(generated.hidden_states[0][-1][:, -1].float())
        padded += batch["input_ids"].numel()
    return torch.cat(out).numpy(), padded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--model", default=None)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--chunk", type=int, default=128, help="texts per alternation between the two paths")
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()

    texts, (instruction, *_) = load_texts_and_instructions(args.data, args.limit)
    model = InBedder(args.model)
    real_tokens = sum(len(model.prompts(t, instruction, model.template)) for t in texts)
    model.encode(texts[:4], instruction)  # warm-up
    reference_encode(model, texts[:4], instruction, 4)

    times = {"inbedder": 0.0, "reference": 0.0}
    ours, theirs, reference_padded = [], [], 0
    for start in range(0, len(texts), args.chunk):
        chunk = texts[start : start + args.chunk]
        t0 = time.perf_counter()
        ours.append(model.encode(chunk, instruction, batch_size=args.batch_size))
        t1 = time.perf_counter()
        emb, padded = reference_encode(model, chunk, instruction, args.batch_size)
        t2 = time.perf_counter()
        theirs.append(emb)
        reference_padded += padded
        times["inbedder"] += t1 - t0
        times["reference"] += t2 - t1
    difference = float(np.abs(np.concatenate(ours) - np.concatenate(theirs)).max())

    gflops, per_token = matmul_gflops(), gflop_per_token(model)
    limit = gflops / per_token
    n = len(texts)
    print(f"model {model.name}, {n} texts from {args.data.name}, instruction {instruction!r}, batch {args.batch_size}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print(f"prompt tokens: {real_tokens} real; reference path pads to {reference_padded}")
    print("| path | seconds | texts/s | real tokens/s |")
    print("|---|---|---|---|")
    for name, seconds in times.items():
        print(f"| {name} | {seconds:.1f} | {n / seconds:.2f} | {real_tokens / seconds:.1f} |")
    print(
        f"compute-bound limit: {gflops:.0f} GFLOP/s float32 matmul / {per_token:.3f} GFLOP per token"
        f" = {limit:.0f} tokens/s"
    )
    print(f"inbedder / limit: {real_tokens / times['inbedder'] / limit:.0%}")
    print(f"speed-up inbedder / reference: {times['reference'] / times['inbedder']:.2f}x")
    print(f"max |inbedder - reference| over all embeddings: {difference:.2e}")
    print(f"peak resident memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
