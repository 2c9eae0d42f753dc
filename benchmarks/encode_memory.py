"""Peak memory and disk of ``inbedder encode --out x.parquet`` for N texts, with a stubbed forward pass.

    python benchmarks/encode_memory.py --texts 100000 --readout fst_head_rp

What ``inbedder encode`` does after reading its table (``InBedder.encode`` of every text, then
``tables.write_embeddings`` to Parquet), in this process, on synthetic short texts, with the
default model loaded but its forward pass replaced by random states of the right shape: the
language model's own time and memory are not what is measured here, only what the readout's
vectors cost from the head onwards (the LM head, the projection, the array, the file).
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=100_000)
    parser.add_argument("--readout", default="fst_head_rp")
    args = parser.parse_args()

    from inbedder import InBedder, tables

    model = InBedder(readout=args.readout)
    backend = model.backend
    generator = torch.Generator().manual_seed(0)

    def stub(input_ids: torch.Tensor, attention_mask: torch.Tensor, layer: int):  # random last-layer states
        states = torch.randn(*input_ids.shape, backend.hidden_size, generator=generator)
        return backend.single_pass(states, attention_mask)

    backend.forward = stub
    loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    table = pd.DataFrame({"text": [f"review number {i}: fine" for i in range(args.texts)]})
    started = time.perf_counter()
    vectors = model.encode(table["text"].tolist(), "Is the reviewer satisfied?", batch_size=64)
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "x.parquet"
        tables.write_embeddings(out, vectors, table)
        size = out.stat().st_size
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{args.texts} texts, {args.readout} ({vectors.shape[1]} numbers): {seconds:.0f} s; Parquet {size / 2**20:.0f} "
        f"MiB; peak resident memory {peak:.0f} MiB (the model loaded: {loaded:.0f} MiB)"
    )


if __name__ == "__main__":
    main()
