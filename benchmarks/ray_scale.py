"""Embedding on Ray with 1 and 2 actors against one-process ``encode``, in one run.

The bundled reviews (repeated to --texts rows) are embedded under one question: first by
``encode`` in this process (model already loaded), then by ``inbedder.distributed.embed_dataset``
on a local Ray cluster with 1 actor (holding every core) and with 2 actors (one core each).
Ray's times include starting the actors and loading the model in each; the time that loading
took is given beside them. Each actor reports its peak resident memory. The vectors are checked
against the one-process ones.

    python benchmarks/ray_scale.py [--texts 960] [--model NAME]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from inbedder import InBedder, distributed

REVIEWS = Path(__file__).resolve().parent.parent / "examples" / "reviews-240.csv"
QUESTION = "Is the reviewer satisfied or dissatisfied?"


class Reporting:
    """The model an actor uses, writing its load time and peak memory to a file named by its pid."""

    def __init__(self, name: str | None, folder: str) -> None:
        self.name, self.folder = name, folder

    def __call__(self) -> object:
        start = time.perf_counter()
        model = InBedder(self.name)
        loaded = time.perf_counter() - start
        path = Path(self.folder) / f"actor-{os.getpid()}.json"
        original = model.encode_multi

        def encode_multi(*args, **kwargs):
            result = original(*args, **kwargs)
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux -> MiB
            path.write_text(json.dumps({"load_seconds": loaded, "peak_mib": peak}))
            return result

        model.encode_multi = encode_multi
        return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--texts", type=int, default=960)
    parser.add_argument("--model", default=None)
    parser.add_argument("--batch-size", type=int, default=64, help="rows per actor call")
    args = parser.parse_args()

    reviews = pd.read_csv(REVIEWS)
    rows = pd.concat([reviews] * (args.texts // len(reviews) + 1), ignore_index=True).iloc[: args.texts]
    rows = rows.assign(id=[f"{i}-{review}" for i, review in enumerate(rows["id"])])[["id", "text"]]
    texts = rows["text"].tolist()

    model = InBedder(args.model)
    model.encode(texts[:8], QUESTION)  # warm-up
    start = time.perf_counter()
    expected = model.encode(texts, QUESTION)
    direct = len(texts) / (time.perf_counter() - start)
    del model

    import ray

    cores = os.cpu_count() or 2
    distributed.init(num_cpus=cores + 1, include_dashboard=False, log_to_driver=False)  # one more for reading
    results = []
    for actors in (1, 2):
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            embedded = distributed.embed_dataset(
                ray.data.from_pandas(rows).repartition(8),
                QUESTION,
                model=Reporting(args.model, folder),
                concurrency=actors,
                num_cpus=cores / actors,
                rows_per_batch=args.batch_size,
            ).to_pandas()
            seconds = time.perf_counter() - start
            reports = [json.loads(p.read_text()) for p in Path(folder).glob("actor-*.json")]
        order = {row_id: i for i, row_id in enumerate(rows["id"])}
        got = np.stack(embedded.sort_values("id", key=lambda ids: ids.map(order))["embedding"].to_numpy())
        worst = float(np.abs(got - expected).max())
        load = max(r["load_seconds"] for r in reports)
        peak = max(r["peak_mib"] for r in reports)
        results.append((actors, len(texts) / seconds, load, peak, worst, len(embedded) == len(texts)))
    ray.shutdown()

    print(f"\n{len(texts)} reviews, one question; one-process encode: {direct:.2f} texts/s")
    head = "| actors | texts/s (start-up included) | ratio to encode | model load per actor | peak memory per actor |"
    print(head + " max diff |")
    print("|---|---|---|---|---|---|")
    for actors, rate, load, peak, worst, complete in results:
        check = f"{worst:.1e}" + ("" if complete else " (rows missing!)")
        print(f"| {actors} | {rate:.2f} | {rate / direct:.2f} | {load:.1f} s | {peak:.0f} MiB | {check} |")


if __name__ == "__main__":
    main()
