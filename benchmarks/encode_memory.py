"""Peak memory and disk of encoding N texts to Parquet, with a stubbed forward pass: in one process or on Ray.

    python benchmarks/encode_memory.py --texts 100000 --readout fst_head_rp
    python benchmarks/encode_memory.py --texts 100000 --readout fst_head_rp --engine ray

``--engine local``: what ``inbedder encode --out x.parquet`` does after reading its table
(``InBedder.encode`` of every text, then ``tables.write_embeddings`` to Parquet), in this process.
``--engine ray``: what ``inbedder encode --engine ray`` does (``distributed.embed_dataset`` with one
actor on a local Ray cluster, written as Parquet shards); the driver's and the actor's peak
resident memory, and the most the object store held (sampled each second), are reported.
Synthetic short texts; the default model is loaded but its forward pass is replaced by random
states of the right shape: the language model's own time and memory are not what is measured
here, only what the readout's vectors cost from the head onwards (the LM head, the projection,
the arrays, the object store, the files).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import torch

QUESTION = "Is the reviewer satisfied?"


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def stubbed_model(readout: str) -> object:
    """The default model with random last-layer states in place of its forward pass."""
    from inbedder import InBedder

    model = InBedder(readout=readout)
    backend = model.backend
    generator = torch.Generator().manual_seed(0)

    def stub(input_ids: torch.Tensor, attention_mask: torch.Tensor, layer: int):
        states = torch.randn(*input_ids.shape, backend.hidden_size, generator=generator)
        return backend.single_pass(states, attention_mask)

    backend.forward = stub
    return model


class ReportingStub:
    """The stubbed model an actor builds, writing its peak memory to a file after each batch."""

    def __init__(self, readout: str, folder: str) -> None:
        self.readout, self.folder = readout, folder

    def __call__(self) -> object:
        model = stubbed_model(self.readout)
        original, path = model.encode_multi, Path(self.folder) / f"actor-{os.getpid()}.json"

        def encode_multi(*args, **kwargs):
            result = original(*args, **kwargs)
            path.write_text(json.dumps({"peak_mib": peak_mib()}))
            return result

        model.encode_multi = encode_multi
        return model


def local(table: pd.DataFrame, readout: str) -> str:
    from inbedder import tables

    model = stubbed_model(readout)
    loaded = peak_mib()
    started = time.perf_counter()
    vectors = model.encode(table["text"].tolist(), QUESTION, batch_size=64)
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "x.parquet"
        tables.write_embeddings(out, vectors, table)
        size = out.stat().st_size
    seconds = time.perf_counter() - started
    return (
        f"{len(table)} texts, {readout} ({vectors.shape[1]} numbers): {seconds:.0f} s; Parquet {size / 2**20:.0f} "
        f"MiB; peak resident memory {peak_mib():.0f} MiB (the model loaded: {loaded:.0f} MiB)"
    )


def on_ray(table: pd.DataFrame, readout: str) -> str:
    import ray

    from inbedder import distributed

    distributed.init(num_cpus=3, include_dashboard=False, log_to_driver=False)
    store_peak, done = [0.0], threading.Event()

    def watch_store() -> None:
        while not done.wait(1.0):
            total = ray.cluster_resources().get("object_store_memory", 0)
            free = ray.available_resources().get("object_store_memory", total)
            store_peak[0] = max(store_peak[0], (total - free) / 2**20)

    watcher = threading.Thread(target=watch_store, daemon=True)
    watcher.start()
    with tempfile.TemporaryDirectory() as reports, tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        embedded = distributed.embed_dataset(
            ray.data.from_pandas(table).repartition(16),
            QUESTION,
            model=ReportingStub(readout, reports),
            concurrency=1,
            num_cpus=2,
            batch_size=64,
        )
        embedded.write_parquet(folder)
        seconds = time.perf_counter() - started
        size = sum(p.stat().st_size for p in Path(folder).glob("*.parquet"))
        actor = max(json.loads(p.read_text())["peak_mib"] for p in Path(reports).glob("actor-*.json"))
    done.set()
    ray.shutdown()
    return (
        f"{len(table)} texts on Ray (1 actor), {readout}: {seconds:.0f} s; Parquet shards {size / 2**20:.0f} MiB; "
        f"peak resident memory: driver {peak_mib():.0f} MiB, actor {actor:.0f} MiB (model included); "
        f"object store at most {store_peak[0]:.0f} MiB in use (sampled each second)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=100_000)
    parser.add_argument("--readout", default="fst_head_rp")
    parser.add_argument("--engine", choices=("local", "ray"), default="local")
    args = parser.parse_args()
    table = pd.DataFrame({"text": [f"review number {i}: fine" for i in range(args.texts)]})
    print((local if args.engine == "local" else on_ray)(table, args.readout))


if __name__ == "__main__":
    main()
