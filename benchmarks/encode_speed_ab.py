"""Encode speed of this checkout against an earlier commit, in one run: the before/after ratio.

The earlier commit is checked out into a temporary git worktree; the two versions then take
turns (A, B, A, B, ...) embedding the same texts in fresh interpreters, so that the machine's
noise falls on both alike. Each turn loads the model first and times only ``encode``: one call
over every text, ``encode_multi`` under three questions, and 16 calls of two texts each whose rows
are all in a store (a new one per turn), as a server makes them.

    python benchmarks/encode_speed_ab.py --before cd219e4 [--texts 192] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TURN = r"""
import json, sys, time
import torch
sys.path.insert(0, {benchmarks!r})
from benchmark_data import DATA, load_texts_and_instructions
import inbedder
from inbedder import InBedder

assert inbedder.__file__.startswith({tree!r}), inbedder.__file__  # the version under test
texts, instructions = load_texts_and_instructions(DATA, limit={texts})
model = InBedder({model!r})
model.encode(texts[:8], instructions[0], batch_size={batch_size})  # warm-up
timings = {{}}
start = time.perf_counter()
model.encode(texts, instructions[0], batch_size={batch_size})
timings["encode"] = len(texts) / (time.perf_counter() - start)
start = time.perf_counter()
model.encode_multi(texts, instructions[:3], batch_size={batch_size})
timings["encode_multi"] = 3 * len(texts) / (time.perf_counter() - start)
store = {store!r}
model.encode(texts[:32], instructions[0], cache=store)  # the rows the calls below find
start = time.perf_counter()
for i in range(0, 32, 2):  # what a server does: many small calls, every row already in the store
    model.encode(texts[i : i + 2], instructions[0], cache=store)
timings["small cached calls (calls/s)"] = 16 / (time.perf_counter() - start)
print(json.dumps(timings))
"""


def turn(tree: Path, args: argparse.Namespace) -> dict[str, float]:
    """One timing in a fresh interpreter that imports inbedder from ``tree``."""
    code = TURN.format(
        benchmarks=str(ROOT / "benchmarks"),
        tree=str(tree),
        store=str(Path(tempfile.mkdtemp(prefix="inbedder-ab-")) / "store.sqlite"),
        texts=args.texts,
        model=args.model,
        batch_size=args.batch_size,
    )
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tree)
    if done.returncode != 0:
        raise RuntimeError(f"timing in {tree} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", required=True, help="the earlier commit (or branch, tag)")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--texts", type=int, default=192)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="inbedder-before-") as folder:
        before = Path(folder) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(before), args.before], check=True)
        try:
            runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
            for round_ in range(args.rounds):
                for name, tree in (("before", before), ("after", ROOT)):
                    runs[name].append(turn(tree, args))
                    print(f"round {round_ + 1} {name}: {runs[name][-1]}", flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(before)], check=True)

    print(f"\n{args.texts} texts, batch size {args.batch_size}, {args.model}; texts/s, median of {args.rounds} turns")
    print("| path | before | after | after / before |")
    print("|---|---|---|---|")
    for path in runs["before"][0]:
        old = statistics.median(r[path] for r in runs["before"])
        new = statistics.median(r[path] for r in runs["after"])
        print(f"| {path} | {old:.1f} | {new:.1f} | {new / old:.3f} |")


if __name__ == "__main__":
    main()
