"""What int8 storage of an adapter changes: file size, and the embeddings against the float16 adapter.

    python benchmarks/adapter_int8.py /root/inbedder-train/run3 --limit 200

Packages the adapter both ways into a temporary folder (as ``scripts/package_adapter.py`` does),
embeds the amazon-reviews and syngoalex dev texts under each aspect's main question with both,
and reports the sizes, the cosine between the two vectors of each text, and the clustering
v-measure of each aspect with each.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from inbedder import InBedder, models
from inbedder.adapter_storage import save_int8
from inbedder.eval.datasets import clustering_tasks, load_local
from inbedder.eval.tasks import per_text_instructions, score_clustering


def package(source: Path, target: Path, int8: bool) -> Path:
    target.mkdir(parents=True)
    for name in (models.ADAPTER_CONFIG, "inbedder.json"):
        if (source / name).is_file():
            shutil.copy(source / name, target / name)
    weights = load_file(str(source / "adapter_model.safetensors"))
    if int8:
        save_int8(weights, target)
    else:
        half = {k: v.to(torch.float16).contiguous() for k, v in weights.items()}
        save_file(half, str(target / "adapter_model.safetensors"), metadata={"format": "pt"})
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("adapter", type=Path)
    parser.add_argument("--limit", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        dirs = {kind: package(args.adapter, Path(tmp) / kind, kind == "int8") for kind in ("float16", "int8")}
        for kind, directory in dirs.items():
            size = sum(f.stat().st_size for f in directory.iterdir()) / 2**20
            print(f"{kind}: {size:.2f} MiB")
        embedders = {kind: InBedder(str(directory)) for kind, directory in dirs.items()}
        print("| task | cosine min / mean | v-measure float16 | v-measure int8 |\n|---|---|---|---|")
        for dataset in ("amazon-reviews", "syngoalex"):
            for task in clustering_tasks(load_local(dataset).subsample(args.limit, 0)):
                asked = per_text_instructions(task.instruction, task.fields)
                vectors = {k: m.encode(task.texts, asked, normalize_embeddings=True) for k, m in embedders.items()}
                cosine = (vectors["float16"] * vectors["int8"]).sum(1)
                scores = {k: score_clustering(v, task.labels, task.seeds)["v_measure"] for k, v in vectors.items()}
                print(
                    f"| {task.name} | {cosine.min():.5f} / {np.mean(cosine):.5f} | "
                    f"{scores['float16']:.3f} | {scores['int8']:.3f} |"
                )


if __name__ == "__main__":
    main()
