"""Loading a language model for inference or training: one loader, one device and dtype resolver.

``source`` is what ``models.resolve`` returns: a local directory (a model, or a LoRA adapter
that names its base) or a hub id. Weights load from safetensors only; remote code only when asked.
"""

from __future__ import annotations

import torch
from transformers import AutoConfig, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from inbedder import models
from inbedder.backends import MODEL_CLASSES, check_family, detect_family


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"``: CUDA when available, else the CPU; a CUDA device that is not there is refused."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; use device='cpu'")
    return resolved


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """The weights' dtype: float32 on the CPU, bfloat16 (else float16) on CUDA, unless given."""
    if dtype is None:
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    resolved = getattr(torch, str(dtype), None)
    if not isinstance(resolved, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}; use e.g. 'float32', 'bfloat16' or 'float16'")
    return resolved


def read_family(source: str, family: str = "auto", trust_remote_code: bool = False) -> str:
    """The model family of ``source`` (``family`` itself unless it is ``"auto"``), read from its config."""
    if check_family(family) != "auto":
        return family
    base = models.adapter_base(source)
    if base is not None:
        return read_family(models.resolve(base), family, trust_remote_code)
    return detect_family(AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code))


def load_tokenizer(source: str, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)


def load_language_model(
    source: str,
    family: str = "auto",
    *,
    dtype: torch.dtype = torch.float32,
    trust_remote_code: bool = False,
) -> tuple[PreTrainedTokenizerBase, PreTrainedModel, str]:
    """Tokenizer, model with its family's LM head, and the family.

    A LoRA adapter directory loads its base model (resolved like any name) with the adapter
    merged in, so it runs as fast as the base.
    """
    check_family(family)
    base = models.adapter_base(source)
    if base is not None:
        tokenizer, model, family = load_language_model(
            models.resolve(base), family, dtype=dtype, trust_remote_code=trust_remote_code
        )
        return tokenizer, models.merge_adapter(model, source), family
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
        family = detect_family(config) if family == "auto" else family
        tokenizer = load_tokenizer(source, trust_remote_code)
        model = MODEL_CLASSES[family].from_pretrained(
            source, config=config, dtype=dtype, trust_remote_code=trust_remote_code, use_safetensors=True
        )
    except OSError as err:
        raise OSError(
            f"could not load model {source!r}: not a registered name ({', '.join(sorted(models.REGISTRY))}), "
            f"a local model directory with safetensors weights, or a reachable hub id. {err}"
        ) from err
    except ValueError as err:  # an auto class that does not know the config: the wrong family
        raise ValueError(f"could not load {source!r} as a {family} language model: {err}") from err
    return tokenizer, model, family
