"""First load of the default model (GGUF -> safetensors conversion) against later loads (cache).

Each load runs in a fresh process with an empty INBEDDER_CACHE for the first; the time is that of
``InBedder(...)`` alone, imports excluded.

    python benchmarks/load_time.py [--model smollm2-135m-instruct] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

TIMED_LOAD = (
    "import time, inbedder; t = time.perf_counter(); inbedder.InBedder({model!r}); print(time.perf_counter() - t)"
)


def timed_load(model: str, cache: str) -> float:
    env = {**os.environ, "INBEDDER_CACHE": cache, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", TIMED_LOAD.format(model=model)], env=env, capture_output=True, text=True, check=True
    )
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        first = timed_load(args.model, cache)
        later = [timed_load(args.model, cache) for _ in range(args.repeats)]
    print(f"| load of {args.model} | seconds |")
    print("|---|---|")
    print(f"| first (convert GGUF to safetensors) | {first:.1f} |")
    for i, seconds in enumerate(later, start=1):
        print(f"| later #{i} (read safetensors cache) | {seconds:.2f} |")
    print(f"first / later: {first / min(later):.0f}x")


if __name__ == "__main__":
    main()
