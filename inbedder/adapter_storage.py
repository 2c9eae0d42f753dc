"""Shipping LoRA adapters small: int8 weights with one float16 scale per rank component.

Each rank component of a LoRA pair (a row of A, a column of B) gets its own symmetric int8
scale, so every weight stays within about half a step of ``max |component| / 127`` (0.6 of one,
with the float16 scale's rounding), and the scales cost 2 bytes per component, not per row of B;
merged into the base model the change is
far below what moves an embedding (BENCHMARKS.md measures it for the shipped adapter).
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

INT8_WEIGHTS = "adapter_int8.safetensors"
"""An adapter directory's weights stored as int8 (instead of peft's ``adapter_model.safetensors``)."""
_SCALE = ".int8_scale"


def quantize_int8(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each 2-D tensor as int8 plus a float16 scale per slice along its short side, the LoRA rank
    (key + ``.int8_scale``: a row of A, a column of B); other tensors as float16."""
    packed = {}
    for name, tensor in tensors.items():
        tensor = tensor.detach().float().cpu()
        if tensor.dim() != 2:
            packed[name] = tensor.to(torch.float16).contiguous()
            continue
        across = 1 if tensor.shape[0] <= tensor.shape[1] else 0  # one scale per rank component
        scale = (tensor.abs().amax(dim=across, keepdim=True) / 127).clamp(min=1e-12)
        packed[name] = torch.round(tensor / scale).clamp(-127, 127).to(torch.int8).contiguous()
        packed[name + _SCALE] = scale.to(torch.float16).contiguous()
    return packed


def dequantize_int8(packed: dict[str, torch.Tensor], dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """The tensors ``quantize_int8`` stored, back in ``dtype``."""
    tensors = {}
    for name, tensor in packed.items():
        if name.endswith(_SCALE):
            continue
        if tensor.dtype == torch.int8:
            tensors[name] = (tensor.float() * packed[name + _SCALE].float()).to(dtype)
        else:
            tensors[name] = tensor.to(dtype)
    return tensors


def save_int8(tensors: dict[str, torch.Tensor], directory: str | Path) -> Path:
    path = Path(directory) / INT8_WEIGHTS
    save_file(quantize_int8(tensors), str(path), metadata={"format": "pt", "inbedder": "int8 per-row"})
    return path


def load_int8(directory: str | Path, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    return dequantize_int8(load_file(str(Path(directory) / INT8_WEIGHTS)), dtype)


def leading_components(tensors: dict[str, torch.Tensor], rank: int) -> dict[str, torch.Tensor]:
    """Each LoRA pair (``...lora_A.weight``, ``...lora_B.weight``) cut to the leading ``rank`` singular
    components of ``B @ A`` (its best rank-``rank`` approximation), split evenly between the factors."""
    cut = dict(tensors)
    for key in [k for k in tensors if ".lora_A." in k]:
        other = key.replace(".lora_A.", ".lora_B.")
        a, b = tensors[key].float(), tensors[other].float()
        qb, rb = torch.linalg.qr(b)  # b @ a = qb (rb raᵀ) qaᵀ: the SVD of a rank-r product from an r x r one
        qa, ra = torch.linalg.qr(a.T)
        u, s, vh = torch.linalg.svd(rb @ ra.T)
        root = s[:rank].sqrt()
        cut[key] = (root[:, None] * (vh[:rank] @ qa.T)).contiguous()
        cut[other] = ((qb @ u[:, :rank]) * root).contiguous()
    return cut
