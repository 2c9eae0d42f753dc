"""Dynamic int8 quantization of the linear layers against the exact float32 path, in one run.

Two copies of the model: float32 as loaded, and PyTorch's dynamic int8 quantization (int8
weights, one scale per output row; inputs quantized on the fly with one scale per call) of every
linear layer but the output head. Measured: speed (chunks alternating between the two, so the
machine's noise falls on both alike; the figure is their ratio), the cosine of each int8
embedding to its float32 one, whether a text's int8 embedding depends on its batch mates (each
text alone against the same text in a batch), and each aspect's k-means v-measure (k = classes,
mean over seeds) on the data's texts.

    python benchmarks/quantization.py [--data ../shared/data/syngoalex.dev.jsonl] [--limit N]
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from benchmark_data import DATA

from inbedder import InBedder
from inbedder.eval import load_local
from inbedder.eval.tasks import cosine_rows, score_clustering

SEEDS = range(5)


def quantize_int8(model: InBedder) -> InBedder:
    """``model`` with its LM's linear layers, all but the output head, dynamically quantized to int8 in place."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    lm = model.backend.model
    head = lm.get_output_embeddings()
    linear = {
        name: per_channel_dynamic_qconfig
        for name, module in lm.named_modules()
        if isinstance(module, torch.nn.Linear) and module is not head
    }
    with warnings.catch_warnings():  # torch.ao announces its move to torchao
        warnings.simplefilter("ignore")
        quantize_dynamic(lm, linear, dtype=torch.qint8, inplace=True)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--model", default=None)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--chunk", type=int, default=128)
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()

    data = load_local(args.data.name.split(".")[0], args.data.parent)
    if args.limit is not None:
        data = data.subsample(args.limit)
    texts = data.texts
    aspects = {name: aspect["instruction"] for name, aspect in data.aspects.items()}
    models = {"float32": InBedder(args.model), "int8": quantize_int8(InBedder(args.model))}
    for model in models.values():
        model.encode(texts[:4], next(iter(aspects.values())))  # warm-up

    seconds = dict.fromkeys(models, 0.0)
    vectors: dict[str, dict[str, list[np.ndarray]]] = {name: {a: [] for a in aspects} for name in models}
    for start in range(0, len(texts), args.chunk):
        chunk = texts[start : start + args.chunk]
        for name, model in models.items():
            began = time.perf_counter()
            per_instruction = model.encode_multi(chunk, list(aspects.values()), batch_size=args.batch_size)
            for aspect, chunk_vectors in zip(aspects, per_instruction):
                vectors[name][aspect].append(chunk_vectors)
            seconds[name] += time.perf_counter() - began
    stacked = {name: {a: np.concatenate(v) for a, v in per_aspect.items()} for name, per_aspect in vectors.items()}

    first_aspect, first_instruction = next(iter(aspects.items()))
    probe = texts[:8]
    alone = np.stack([models["int8"].encode([text], first_instruction)[0] for text in probe])
    batched = stacked["int8"][first_aspect][: len(probe)]
    exact_alone = np.stack([models["float32"].encode([text], first_instruction)[0] for text in probe])

    print(f"model {models['float32'].name}, {len(texts)} texts from {args.data.name}, {len(aspects)} instructions")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    ratio = seconds["float32"] / seconds["int8"]
    print(f"speed-up int8 / float32: {ratio:.2f}x ({seconds['float32']:.1f} s against {seconds['int8']:.1f} s)")
    for aspect in aspects:
        cosines = cosine_rows(stacked["float32"][aspect], stacked["int8"][aspect])
        print(f"{aspect}: cosine int8 to float32 mean {cosines.mean():.4f}, min {cosines.min():.4f}")
    exact_batched = stacked["float32"][first_aspect][: len(probe)]
    print(
        f"a text alone against in a batch of {args.batch_size}, max |difference|:"
        f" int8 {np.abs(alone - batched).max():.3g},"
        f" float32 {np.abs(exact_alone - exact_batched).max():.3g} (mean |value| {np.abs(batched).mean():.3g})"
    )
    print("| aspect | float32 v-measure | int8 v-measure | difference |")
    print("|---|---|---|---|")
    for aspect in aspects:
        labels = data.labels(aspect)
        exact, quantized = (score_clustering(stacked[name][aspect], labels, SEEDS)["v_measure"] for name in models)
        print(f"| {aspect} | {exact:.3f} | {quantized:.3f} | {quantized - exact:+.3f} |")


if __name__ == "__main__":
    main()
