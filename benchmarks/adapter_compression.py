"""Smaller forms of a LoRA adapter, and how far each moves its merged weight change B·A.

    python benchmarks/adapter_compression.py ~/.cache/inbedder-train/v4

For every adapted module, the change the adapter merges into the base is ``B @ A`` (times a
constant scale, which cancels here). Each form is scored by the relative error of that change
over the whole adapter, ``sqrt(sum |ΔW' - ΔW|² / sum |ΔW|²)``, and by the bytes it would take:
int8 as inbedder ships it (``inbedder.adapter_storage``: one float16 scale per rank component),
int4 with a scale per rank component or per 64 values, and the change's leading singular
components (rank r < the trained rank) stored as int8 or int4.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import torch
from safetensors.torch import load_file

from inbedder.adapter_storage import dequantize_int8, leading_components, quantize_int8


def pairs(directory: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Module -> (A, B) in float32."""
    found: dict[str, dict[str, torch.Tensor]] = defaultdict(dict)
    for key, tensor in load_file(str(directory / "adapter_model.safetensors")).items():
        module, _, rest = key.partition(".lora_")
        found[module][rest[0]] = tensor.float()
    return {module: (ab["A"], ab["B"]) for module, ab in found.items()}


def int8(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    back = dequantize_int8(quantize_int8({"a": a, "b": b}))
    return back["a"], back["b"]


def int_k(x: torch.Tensor, bits: int, group: int | None = None) -> torch.Tensor:
    """Symmetric rounding to ``bits`` along the long side, one scale per rank component (or per ``group``)."""
    top = 2 ** (bits - 1) - 1
    rows = x if x.shape[0] <= x.shape[1] else x.T
    shaped = rows.reshape(rows.shape[0], -1, group or rows.shape[1])
    scale = (shaped.abs().amax(-1, keepdim=True) / top).clamp(min=1e-12)
    back = (torch.round(shaped / scale).clamp(-top, top) * scale).reshape(rows.shape)
    return back if x.shape[0] <= x.shape[1] else back.T


def leading(a: torch.Tensor, b: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The best rank-``rank`` factors of ``b @ a``, as ``package_adapter.py --rank`` ships them."""
    cut = leading_components({"m.lora_A.weight": a, "m.lora_B.weight": b}, rank)
    return cut["m.lora_A.weight"], cut["m.lora_B.weight"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("adapter", type=Path, help="a folder `inbedder train` wrote (adapter_model.safetensors)")
    args = parser.parse_args()
    modules = pairs(args.adapter)
    rank = next(iter(modules.values()))[0].shape[0]
    values = sum(a.numel() + b.numel() for a, b in modules.values())
    forms = {
        f"int8, rank {rank} (shipped)": (int8, 1.0),
        f"int4, rank {rank}, scale per component": (lambda a, b: (int_k(a, 4), int_k(b, 4)), 0.5),
        f"int4, rank {rank}, scale per 64 values": (lambda a, b: (int_k(a, 4, 64), int_k(b, 4, 64)), 0.5 + 2 / 64),
    }
    for r in (rank * 3 // 4, rank // 2 - 1):
        forms[f"leading rank {r}, int8"] = (lambda a, b, r=r: int8(*leading(a, b, r)), r / rank)
        forms[f"leading rank {r}, int4 per 64"] = (
            lambda a, b, r=r: tuple(int_k(x, 4, 64) for x in leading(a, b, r)),
            r / rank * (0.5 + 2 / 64),
        )
    print(f"{args.adapter}: {len(modules)} modules, rank {rank}, {values:,} values\n")
    print("| form | bytes (about) | relative error of B·A |\n|---|---|---|")
    for name, (compress, bytes_per_value) in forms.items():
        error = total = 0.0
        for a, b in modules.values():
            change = b @ a
            a2, b2 = compress(a, b)
            error += float(((b2 @ a2 - change) ** 2).sum())
            total += float((change**2).sum())
        print(f"| {name} | {values * bytes_per_value / 1e6:.2f} MB | {(error / total) ** 0.5:.3f} |")


if __name__ == "__main__":
    main()
