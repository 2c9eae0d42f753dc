"""Training in float32 against bfloat16 autocast: steps a second and held-out loss of a pilot, in one run.

    python benchmarks/train_precision.py --data ../shared/data/qa-open.jsonl:0.6 \
        --data ../shared/data/qa-aspects.jsonl:0.3 --data ../shared/data/qa-short-answers.jsonl:0.1 \
        --steps 200 --out out/train-precision

Both runs start from the same base with the same seed (so the same LoRA initialisation, data
order and held-out records) and differ only in ``dtype``; the held-out loss is computed in
float32 for both. The first step of each run warms up and is not timed. ``--order`` sets which
dtype runs first; the machine is noisy, so the ratio is the figure to quote.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from inbedder import models
from inbedder.training import train


def pilot(dtype: str, args: argparse.Namespace) -> dict[str, float | str]:
    started = time.perf_counter()
    result = train(
        args.base,
        args.data,
        args.out / dtype,
        dtype=dtype,
        max_steps=args.steps,
        batch_size=args.batch_size,
        max_length="auto",
        train_layers=args.train_layers,
        lora_rank=args.lora_rank,
        lora_alpha=2 * args.lora_rank,
        lr=args.lr,
        limit=args.steps * args.batch_size,
        eval_size=args.eval_size,
        save_every=0,
        progress=False,
        seed=args.seed,
    )
    step_seconds = result.details["step_seconds"][1:]
    return {
        "dtype": dtype,
        "compute_dtype": result.details["compute_dtype"],
        "steps_per_second": len(step_seconds) / sum(step_seconds),
        "tokens_per_second": sum(result.details["step_tokens"][1:]) / sum(step_seconds),
        "last_50_train_loss": sum(result.train_losses[-50:]) / len(result.train_losses[-50:]),
        "held_out_loss": result.eval_loss,
        "wall_seconds": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default=models.BASE_MODEL)
    parser.add_argument("--data", action="append", required=True, help="PATH or PATH:WEIGHT (repeatable)")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--train-layers", type=int, default=12)
    parser.add_argument("--lora-rank", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--eval-size", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--order", default="float32,bfloat16")
    parser.add_argument("--out", type=Path, required=True, help="a folder for the two runs (must not hold them yet)")
    args = parser.parse_args()
    rows = [pilot(dtype, args) for dtype in args.order.split(",")]
    for row in rows:
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}))
    by = {row["dtype"]: row for row in rows}
    if {"float32", "bfloat16"} <= set(by):
        f32, b16 = by["float32"], by["bfloat16"]
        print(f"steps/s bfloat16 / float32: {b16['steps_per_second'] / f32['steps_per_second']:.2f}")
        change = b16["held_out_loss"] / f32["held_out_loss"] - 1
        print(
            f"held-out loss bfloat16 {b16['held_out_loss']:.4f} vs float32 {f32['held_out_loss']:.4f} ({change:+.2%})"
        )
    (args.out / "train_precision.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
