"""Copy a trained LoRA adapter into the package (inbedder/adapters/NAME), its weights as float16 (or int8).

    python scripts/package_adapter.py /root/inbedder-train/run2 --name smollm2-135m-inbedder

Keeps ``adapter_config.json``, ``training.json`` (the run's settings, losses and time) and
``inbedder.json`` (the template it was trained with; ``--readout``/``--layer`` add the readout
chosen for it); ``--scale S`` ships the adapter at S times its trained strength (its
``lora_alpha`` times S: merged weights ``base + S * (trained - base)``, as WiSE-FT interpolates a
fine-tuned model with its base); the weights are stored at half size and cast back to the base model's dtype on
loading, or with ``--int8`` at about a quarter (``inbedder.adapter_storage``). The adapter must
name a registered base model, so that it loads on any machine. Register the name in
``inbedder/models.py`` (``RegisteredModel(adapter=NAME)``).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from inbedder import models
from inbedder.adapter_storage import INT8_WEIGHTS, leading_components, save_int8
from inbedder.model_settings import SETTINGS_FILE, write_settings

WEIGHTS = "adapter_model.safetensors"


def package(
    source: Path, name: str, int8: bool = False, scale: float = 1.0, rank: int | None = None, **settings: Any
) -> Path:
    if not scale > 0:
        raise SystemExit(f"--scale must be positive, not {scale}")
    base = models.adapter_base(str(source))
    if base is None:
        raise SystemExit(f"{source} is not an adapter directory (no {models.ADAPTER_CONFIG})")
    if models.registered(base) is None:
        raise SystemExit(f"{source} adapts {base!r}, not a registered model: it would not load elsewhere")
    target = models.ADAPTERS_DIR / name
    target.mkdir(parents=True, exist_ok=True)
    config = json.loads((source / models.ADAPTER_CONFIG).read_text())
    if scale != 1.0:
        if config.get("alpha_pattern"):
            raise SystemExit(f"{source}: --scale does not handle an adapter with an alpha_pattern")
        config["lora_alpha"] *= scale
    if rank is not None:
        if config.get("rank_pattern") or not 0 < rank < config["r"]:
            raise SystemExit(f"--rank must be below the adapter's rank {config['r']} (and no rank_pattern), not {rank}")
        config["lora_alpha"] *= rank / config["r"]  # LoRA scales by alpha / r: the same scale at the lower rank
        config["r"] = rank
    (target / models.ADAPTER_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    for name in ("training.json", SETTINGS_FILE):
        if (source / name).is_file():
            shutil.copy(source / name, target / name)
    if (scale != 1.0 or rank is not None) and (target / "training.json").is_file():  # what shipped, not only trained
        record = json.loads((target / "training.json").read_text())
        record.update({"shipped_scale": scale} if scale != 1.0 else {})
        record.update({"shipped_rank": rank} if rank is not None else {})
        (target / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    write_settings(target, **settings)
    tensors = load_file(str(source / WEIGHTS))
    if rank is not None:
        tensors = leading_components(tensors, rank)
    for old in (WEIGHTS, INT8_WEIGHTS):  # a re-packaged adapter keeps one form of its weights
        (target / old).unlink(missing_ok=True)
    if int8:
        save_int8(tensors, target)
    else:
        weights = {key: tensor.to(torch.float16).contiguous() for key, tensor in tensors.items()}
        save_file(weights, str(target / WEIGHTS), metadata={"format": "pt"})
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source", type=Path, help="the directory `inbedder train` wrote")
    parser.add_argument("--name", required=True, help="the registered name, and the folder under inbedder/adapters")
    parser.add_argument("--readout", help="the readout InBedder uses for this model by default")
    parser.add_argument("--layer", type=int, help="the layer it reads by default")
    parser.add_argument("--int8", action="store_true", help="store the weights as int8 with a scale per rank component")
    parser.add_argument(
        "--scale", type=float, default=1.0, help="ship the adapter at this share of its trained strength (default 1)"
    )
    parser.add_argument("--rank", type=int, help="keep each module's leading RANK singular components (a smaller file)")
    args = parser.parse_args()
    target = package(
        args.source, args.name, int8=args.int8, scale=args.scale, rank=args.rank, readout=args.readout, layer=args.layer
    )
    size = sum(f.stat().st_size for f in target.iterdir()) / 2**20
    print(f"{target}: {size:.1f} MiB")


if __name__ == "__main__":
    main()
