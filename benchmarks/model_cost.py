"""What a model costs here: texts/s and peak memory of encode, encode_multi and the demo, per model, in one run.

    python benchmarks/model_cost.py --model smollm2-135m-inbedder-v2 --model qwen2.5-coder-0.5b-instruct [--rounds 2]

The texts are the demo's 240 reviews (examples/reviews-240.csv) and its three questions. Every
measurement runs in a fresh process, so the peak resident memory it reports is its own:
- ``encode``: the 240 reviews under the product question; texts/s counts the encoding only (the
  load is timed apart);
- ``encode_multi``: the 240 reviews under the three questions at once (texts x questions / s);
- ``demo``: ``inbedder cluster`` as ``make demo`` runs it, with ``--model``, end to end (loading,
  encoding, clustering, naming the clusters, the report).
Peak memory is given twice: all resident memory (``ru_maxrss``, which also counts the weights
file mapped while the model loads) and the process's own anonymous memory (RssAnon, sampled).
Each round runs every job for every model in turn, so the machine's drift falls on all alike; the
table gives each model's median over the rounds and its ratio to the first model. The models run
in their default dtype (bfloat16 on a CPU with AMX) and with their own readout unless ``--readout``
names one for all. Nothing else should run beside it.
"""

from __future__ import annotations

import argparse
import json
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
REVIEWS = REPO / "examples" / "reviews-240.csv"
QUESTIONS = (
    "What kind of product is being reviewed?",
    "Is the reviewer satisfied or dissatisfied?",
    "What does the reviewer complain about or praise most?",
)
JOBS = ("encode", "encode_multi", "demo")


def peak_mib() -> float:
    """Peak resident memory: the process's own (anonymous) pages and the files it maps (the weights
    file while it loads: page cache the kernel can take back)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class AnonymousPeak:
    """The peak of the process's anonymous resident memory (RssAnon), sampled every 20 ms: its own
    memory, without the mapped weights file that ``ru_maxrss`` also counts."""

    def __init__(self) -> None:
        self.kib = 0
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        while True:
            with open("/proc/self/status") as status:
                line = next(line for line in status if line.startswith("RssAnon:"))
            self.kib = max(self.kib, int(line.split()[1]))
            time.sleep(0.02)

    @property
    def mib(self) -> float:
        return self.kib / 1024


def child(job: str, model: str, readout: str | None) -> dict[str, float]:
    """One measurement, in this (fresh) process."""
    chosen = {"readout": readout} if readout else {}
    anonymous = AnonymousPeak()
    texts = pd.read_csv(REVIEWS)["text"].tolist()
    if job == "demo":
        from inbedder import cli

        with tempfile.TemporaryDirectory() as out:
            sys.argv = ["inbedder", "cluster", str(REVIEWS), "--id-column", "id", "--model", model, "-k", "auto"]
            sys.argv += [arg for q in QUESTIONS for arg in ("--instruction", q)]
            sys.argv += ["--label-column", "domain", "--label-column", "sentiment", "--out", out]
            sys.argv += ["--readout", readout] if readout else []
            start = time.perf_counter()
            try:
                cli.main()
            except SystemExit as done:
                if done.code:
                    raise
            return {"seconds": time.perf_counter() - start, "peak_mib": peak_mib(), "anon_mib": anonymous.mib}
    from inbedder import InBedder

    start = time.perf_counter()
    encoder = InBedder(model)
    loaded = time.perf_counter()
    if job == "encode":
        encoder.encode(texts, QUESTIONS[0], **chosen)
        done, count = time.perf_counter(), len(texts)
    else:
        encoder.encode_multi(texts, list(QUESTIONS), **chosen)
        done, count = time.perf_counter(), len(texts) * len(QUESTIONS)
    seconds = done - loaded
    return {
        "load_s": loaded - start,
        "seconds": seconds,
        "per_s": count / seconds,
        "peak_mib": peak_mib(),
        "anon_mib": anonymous.mib,
    }


def measure(job: str, model: str, readout: str | None) -> dict[str, float]:
    command = [sys.executable, __file__, "--child", job, model, *(["--readout", readout] if readout else [])]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, check=False)
    if done.returncode:
        sys.exit(f"{job} on {model} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help="models to compare; the first is the unit")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--readout", default=None, help="one readout for every model (default: each model's own)")
    parser.add_argument("--child", nargs=2, metavar=("JOB", "MODEL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child, args.readout)))
        return
    if not args.model:
        parser.error("name the models to compare with --model (at least one)")

    runs: dict[tuple[str, str], list[dict[str, float]]] = {}
    for round_ in range(args.rounds):
        for job in JOBS:
            for model in args.model:
                runs.setdefault((job, model), []).append(measure(job, model, args.readout))
                print(f"round {round_ + 1}, {job}, {model}: {runs[job, model][-1]}", file=sys.stderr, flush=True)

    def median(job: str, model: str, key: str) -> float:
        return statistics.median(run[key] for run in runs[job, model])

    print(f"`{shlex.join(['python', 'benchmarks/model_cost.py', *sys.argv[1:]])}`; medians of {args.rounds} rounds")
    print("(ratios to the first model; peak MiB of the encode / encode_multi / demo process: all resident")
    print("memory, the mapped weights file included, and in brackets the process's own, anonymous memory)\n")
    print("| model | load s | encode texts/s | encode_multi (texts x questions)/s | demo s | peak MiB |")
    print("|---|---|---|---|---|---|")
    unit = args.model[0]
    for model in args.model:
        speed = [median(job, model, "per_s") for job in JOBS[:2]]
        ratio = [s / median(job, unit, "per_s") for s, job in zip(speed, JOBS[:2], strict=True)]
        demo = median("demo", model, "seconds")
        peaks = " / ".join(
            f"{median(job, model, 'peak_mib'):,.0f} ({median(job, model, 'anon_mib'):,.0f})" for job in JOBS
        )
        print(
            f"| {model} | {median('encode', model, 'load_s'):.1f} | {speed[0]:.1f} ({ratio[0]:.2f}x) | "
            f"{speed[1]:.1f} ({ratio[1]:.2f}x) | {demo:.0f} ({demo / median('demo', unit, 'seconds'):.2f}x) | {peaks} |"
        )


if __name__ == "__main__":
    main()
