"""Padding batches to a multiple of N tokens: its cost in speed and what it saves in memory.

Requests like a server's (1 to 8 reviews, one of three questions, seeded) go through ``encode`` in
one process per setting (a fresh process: compiled kernels are per process), ``--calls`` of them;
the script reports texts a second and the resident memory after loading and after the calls.

    python benchmarks/pad_multiple.py [--model NAME] [--calls 300] [--multiples 1 32]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

REVIEWS = Path(__file__).resolve().parent.parent / "examples" / "reviews-240.csv"
QUESTIONS = [
    "Is the reviewer satisfied or dissatisfied?",
    "What kind of product is being reviewed?",
    "What does the reviewer complain about?",
]


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def one_setting(model_name: str | None, multiple: int, calls: int) -> dict:
    """In this process: the model with ``pad_multiple=multiple``, ``calls`` requests, timed."""
    import os

    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "256")  # as `inbedder serve` sets it
    from inbedder import InBedder

    texts = pd.read_csv(REVIEWS)["text"].astype(str).tolist()
    model = InBedder(model_name, pad_multiple=multiple)
    model.encode(texts[:8], QUESTIONS[0])  # warm-up
    loaded = rss_mib()
    rng, done, seconds, samples = random.Random(0), 0, 0.0, []
    for call in range(calls):
        batch = rng.sample(texts, rng.randint(1, 8))
        started = time.perf_counter()
        model.encode(batch, rng.choice(QUESTIONS))
        seconds += time.perf_counter() - started
        done += len(batch)
        if (call + 1) % 50 == 0:
            samples.append(round(rss_mib()))
    return {"multiple": multiple, "texts_per_s": done / seconds, "rss_loaded": loaded, "rss_every_50": samples}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--multiples", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # a child's setting
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(one_setting(args.model, args.one, args.calls)))
        return
    rows = []
    for multiple in args.multiples:
        command = [sys.executable, __file__, "--one", str(multiple), "--calls", str(args.calls)]
        command += ["--model", args.model] if args.model else []
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    base = rows[0]["texts_per_s"]
    print("| pad_multiple | texts/s | speed vs first | RSS after load | RSS every 50 calls | growth |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        growth = row["rss_every_50"][-1] - row["rss_every_50"][0]
        print(
            f"| {row['multiple']} | {row['texts_per_s']:.1f} | {row['texts_per_s'] / base:.2f} | "
            f"{row['rss_loaded']:.0f} MiB | {', '.join(map(str, row['rss_every_50']))} | {growth:+d} MiB |"
        )


if __name__ == "__main__":
    main()
