"""Loading a language model for inference or training: one loader, one device and dtype resolver.

``source`` is what ``models.resolve`` returns: a local directory (a model, or a LoRA adapter
that names its base) or a hub id. Weights load from safetensors only; remote code only when asked.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import AutoConfig, AutoTokenizer, PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as transformers_logging

from inbedder import models
from inbedder.backends import MODEL_CLASSES, check_family, detect_family
from inbedder.errors import InputError
from inbedder.model_settings import DTYPES

logger = logging.getLogger(__name__)


@contextmanager
def quiet_progress_bars() -> Iterator[None]:
    """Without transformers' progress bars (its "Loading weights" bar of every load), then as the user had them."""
    enabled = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            transformers_logging.enable_progress_bar()


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"``: CUDA when available, else the CPU; a CUDA device that is not there is refused."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"unknown device {device!r}; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} requested but CUDA is not available; use device='cpu'")
    return resolved


def cpu_runs_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 matrices natively (AMX tiles or AVX-512 BF16), as torch reports it.

    There, bfloat16 matmuls run several times faster than float32; elsewhere torch emulates them
    and they run slower, so ``"auto"`` keeps float32.
    """
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def warn_if_emulated(dtype: torch.dtype, device: torch.device) -> None:
    """Say (once a process) that bfloat16 asked for by name on a CPU without native bfloat16 runs emulated."""
    if dtype == torch.bfloat16 and device.type == "cpu" and not cpu_runs_bfloat16():
        _warn_emulated_bfloat16()


@functools.cache
def _warn_emulated_bfloat16() -> None:
    logger.warning(
        "bfloat16 on this CPU is emulated (torch reports neither AMX nor AVX-512 BF16): it runs several times "
        "slower than float32 here; use dtype 'auto' (--dtype auto), which picks float32 on such a CPU"
    )


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt")
DTYPE_ENV = "INBEDDER_DTYPE"
"""An environment variable that sets the dtype of every model loaded without one (each Ray actor's too)."""


def default_dtype(model_setting: str | None = None) -> str:
    """The dtype of a model loaded without one: ``$INBEDDER_DTYPE``, else the model's setting, else ``"auto"``."""
    chosen = os.environ.get(DTYPE_ENV)
    if chosen:
        if chosen not in DTYPES:
            raise InputError(f"{DTYPE_ENV}={chosen!r} is not a dtype; use one of {', '.join(DTYPES)}")
        return chosen
    return model_setting or "auto"


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """The weights' dtype; ``None`` or ``"auto"``: bfloat16 on a CPU that runs it natively
    (``cpu_runs_bfloat16``), else float32; on CUDA bfloat16, or float16 where bf16 is unsupported."""
    if dtype is None or dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device.type == "cpu" and cpu_runs_bfloat16():
            return torch.bfloat16
        return torch.float32
    if isinstance(dtype, torch.dtype):
        resolved = dtype
    else:
        resolved = getattr(torch, str(dtype), None) if str(dtype) in DTYPES else None
        if not isinstance(resolved, torch.dtype):
            raise InputError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    warn_if_emulated(resolved, device)  # asked for by name or as a torch.dtype alike
    return resolved


def read_config(source: str, trust_remote_code: bool = False) -> PretrainedConfig:
    """``source``'s model config (an adapter's is its base's), read without loading any weights."""
    base = models.adapter_base(source)
    if base is not None:
        return read_config(models.resolve(base), trust_remote_code)
    return AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)


def read_family(source: str, family: str = "auto", trust_remote_code: bool = False) -> str:
    """The model family of ``source`` (``family`` itself unless it is ``"auto"``), read from its config."""
    if check_family(family) != "auto":
        return family
    return detect_family(read_config(source, trust_remote_code))


def load_tokenizer(source: str, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """``source``'s tokenizer; a LoRA adapter directory without one (as packaged adapters ship) uses its base's."""
    base = models.adapter_base(source)
    if base is not None and not any((Path(source) / name).is_file() for name in TOKENIZER_FILES):
        return load_tokenizer(models.resolve(base), trust_remote_code)
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
    if base is not None:  # merged in float32, then cast: a small LoRA delta added in bfloat16 would round away
        tokenizer, model, family = load_language_model(
            models.resolve(base), family, dtype=torch.float32, trust_remote_code=trust_remote_code
        )
        return tokenizer, models.merge_adapter(model, source).to(dtype), family
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
        models.drop_gguf_quantization(config)  # a directory converted from GGUF by an earlier inbedder keeps one
        family = detect_family(config) if family == "auto" else family
        tokenizer = load_tokenizer(source, trust_remote_code)
        with quiet_progress_bars():
            model = MODEL_CLASSES[family].from_pretrained(
                source, config=config, dtype=dtype, trust_remote_code=trust_remote_code, use_safetensors=True
            )
    except OSError as err:
        raise OSError(
            f"could not load model {source!r}: not a registered name ({', '.join(sorted(models.REGISTRY))}), "
            f"a local model directory with safetensors weights, or a reachable hub id. {err}"
        ) from err
    except ValueError as err:  # an auto class that does not know the config: the wrong family
        raise InputError(f"could not load {source!r} as a {family} language model: {err}") from err
    return tokenizer, model, family
