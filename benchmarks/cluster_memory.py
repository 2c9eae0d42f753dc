"""Peak memory of clustering precomputed vectors: the default readout's 1,024 numbers against fst_head's 49,152.

    python benchmarks/cluster_memory.py [--texts 50000] [--dim 1024] [--k 8]

Runs ``inbedder.clustering.cluster(texts, question, model, embeddings=[vectors], answers=[...])``
in a fresh process on synthetic short texts, answers and vectors (``--k`` well-separated groups
plus noise, seeded), with the default model loaded to name the clusters, and prints that
process's peak resident memory. Nothing here runs the language model over the texts: the vectors
stand for what ``encode`` would have stored.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--model", default=None)
    args = parser.parse_args()

    from inbedder import InBedder
    from inbedder.clustering import cluster

    model = InBedder(args.model)
    loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(args.k, args.dim)).astype(np.float32)
    groups = rng.integers(0, args.k, size=args.texts)
    vectors = centers[groups] + 0.5 * rng.normal(size=(args.texts, args.dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    texts = [f"review {i} of product group {g}" for i, g in enumerate(groups)]
    answers = [f"answer {g}" for g in groups]
    started = time.perf_counter()
    result = cluster(texts, "What is it about?", model, k=args.k, embeddings=[vectors], answers=[answers])
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    clustering = result.clusterings[0]
    print(
        f"{args.texts} texts x {args.dim} numbers ({vectors.nbytes / 2**20:.0f} MiB of vectors), k={clustering.k}: "
        f"{seconds:.0f} s; peak resident memory {peak:.0f} MiB (the model loaded: {loaded:.0f} MiB)"
    )
    print("cluster words:", [c.lm_head_tokens[:3] if c.lm_head_tokens else None for c in clustering.clusters[:3]])


if __name__ == "__main__":
    main()
