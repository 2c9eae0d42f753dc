"""Fault tests: ``encode --cache`` and ``cluster`` killed (SIGKILL) at random points, then run again.

The rerun must end with what an uninterrupted run writes, and a killed run must never leave a
partial output file. The kill points are drawn over the whole run (start-up included) from the
run's own duration, seeded; ``make test-slow`` tries more seeds (BENCHMARKS.md, "Reliability").
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

TEXTS = [
    f"review {i}: {'great' if i % 2 else 'awful'} {['book', 'lamp', 'chair'][i % 3]} number {i}" for i in range(160)
]


def cli(*args: object) -> list[str]:
    return [sys.executable, "-m", "inbedder.cli", *map(str, args)]


def run(args: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(args, env=env, check=True, capture_output=True)
    return time.perf_counter() - started


def killed(args: list[str], env: dict[str, str], after: float) -> None:
    process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(after)
    process.send_signal(signal.SIGKILL)
    process.wait()


@pytest.fixture()
def env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "INBEDDER_CACHE": str(tmp_path / "user-cache"), "OMP_NUM_THREADS": "1"}


def kill_points(seed: int, duration: float, count: int) -> list[float]:
    rng = random.Random(seed)
    return sorted(rng.uniform(0.1, 1.0) * duration for _ in range(count))


def check_encode(tiny_model_dir: Path, tmp_path: Path, env: dict[str, str], seed: int, kills: int) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(t + "\n" for t in TEXTS))
    common = ["encode", corpus, "-m", tiny_model_dir, "-i", "What product?", "--batch-size", 4, "--no-progress"]
    common += ["--readout", "avg_gen", "--max-new-tokens", 3, "--return-generations"]
    duration = run(cli(*common, "-o", tmp_path / "reference.npy"), env)
    out = tmp_path / "resumed.npy"
    for after in kill_points(seed, duration, kills):
        killed(cli(*common, "-o", out, "--cache", "--overwrite"), env, after)
        if out.exists():  # written whole or not at all
            assert np.load(out).shape == (len(TEXTS), 32)
    run(cli(*common, "-o", out, "--cache", "--overwrite"), env)
    np.testing.assert_allclose(np.load(out), np.load(tmp_path / "reference.npy"), atol=1e-5)
    answers = [p.with_suffix(".answers.txt").read_text() for p in (out, tmp_path / "reference.npy")]
    assert answers[0] == answers[1]


def check_cluster(tiny_model_dir: Path, tmp_path: Path, env: dict[str, str], seed: int, kills: int) -> None:
    corpus = tmp_path / "corpus.csv"
    pd.DataFrame({"id": [f"t{i}" for i in range(len(TEXTS))], "text": TEXTS}).to_csv(corpus, index=False)
    common = ["cluster", corpus, "--id-column", "id", "-i", "What product?", "-i", "Is it good?", "-k", 3]
    common += ["-m", tiny_model_dir, "--batch-size", 4, "--max-new-tokens", 3, "--map", "pca"]
    duration = run(cli(*common, "--out", tmp_path / "reference"), env)
    out = tmp_path / "resumed"
    for after in kill_points(seed, duration, kills):
        killed(cli(*common, "--out", out, "--overwrite"), env, after)
        if (out / "assignments.parquet").exists():
            assert len(pd.read_parquet(out / "assignments.parquet")) == 2 * len(TEXTS)
    run(cli(*common, "--out", out, "--overwrite"), env)
    resumed, reference = (pd.read_parquet(d / "assignments.parquet") for d in (out, tmp_path / "reference"))
    pd.testing.assert_frame_equal(resumed.drop(columns="distance"), reference.drop(columns="distance"))
    np.testing.assert_allclose(resumed["distance"], reference["distance"], atol=1e-4)


@pytest.mark.parametrize("check", [check_encode, check_cluster], ids=["encode", "cluster"])
def test_a_killed_run_resumes_to_the_uninterrupted_result(check, tiny_model_dir, tmp_path, env):
    check(tiny_model_dir, tmp_path, env, seed=0, kills=2)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(1, 6))
@pytest.mark.parametrize("check", [check_encode, check_cluster], ids=["encode", "cluster"])
def test_killed_runs_resume_over_many_seeds(check, seed, tiny_model_dir, tmp_path, env):
    check(tiny_model_dir, tmp_path, env, seed=seed, kills=3)
