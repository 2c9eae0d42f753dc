"""The keys of the store (``inbedder.cache``): what a model computes, with which settings, on which prompt.

Each is a hash: ``model_fingerprint`` samples the loaded weights and reads the config, generation
config and vocabulary; ``settings_fingerprint`` the settings that change a row (with the package
version and the store's ``FORMAT``); ``prompt_key`` a prompt's token ids; ``text_key`` a raw text
(for embedders that take the text itself).
"""

from __future__ import annotations

import hashlib
import json
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np

from inbedder import models
from inbedder._version import __version__

FORMAT = 1
"""Bump when what a row means changes (readout code, storage): older rows then never match."""
SAMPLE_VALUES = 4096
"""Values read from each weight tensor for its fingerprint, spread over it."""
_VOCABULARIES: weakref.WeakKeyDictionary[Any, tuple[int, str]] = weakref.WeakKeyDictionary()


def model_label(name: str) -> str:
    """The model name rows are filed under (``models.canonical_name``: a registered model's canonical name,
    a local path made absolute, or the hub id as given); ``clear(model=...)`` matches any of these spellings."""
    return models.canonical_name(name)


def prompt_key(token_ids: Sequence[int]) -> str:
    """A prompt's key: the hash of its token ids."""
    return _digest(np.asarray(token_ids, dtype="<i8").tobytes())


def text_key(text: str) -> str:
    """A raw text's key (for embedders that take the text itself, not token ids): the hash of its UTF-8 bytes."""
    return _digest(text.encode("utf-8", "surrogatepass"))


def weights_fingerprint(module: Any) -> str:
    """A hash of a torch module's parameters: names, shapes, dtypes, and ``SAMPLE_VALUES`` values of each.

    Reads a strided sample, not every weight, so it is cheap even for large models; the values are
    taken exactly (as float32), so it is the same in every process.
    """
    import torch

    digest = hashlib.sha256()
    samples = []
    with torch.no_grad():
        for name, tensor in module.named_parameters():
            flat = tensor.detach().reshape(-1)
            step = max(1, flat.numel() // SAMPLE_VALUES)
            digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
            samples.append(flat[::step][:SAMPLE_VALUES].to(torch.float32))
        if samples:
            digest.update(torch.cat(samples).cpu().numpy().astype("<f4").tobytes())
    return digest.hexdigest()[:32]


def model_fingerprint(model: Any, tokenizer: Any, family: str) -> str:
    """What the model computes: its weights (sampled), config, generation config, vocabulary and family."""
    parts = {
        "family": family,
        "weights": weights_fingerprint(model),
        "config": _public(model.config.to_dict()),
        "generation": _public(getattr(model, "generation_config", None) and model.generation_config.to_dict()),
        "vocabulary": _vocabulary_fingerprint(tokenizer),
        "special": sorted(map(str, tokenizer.all_special_ids)),
    }
    return _digest(json.dumps(parts, sort_keys=True, default=str).encode())


def settings_fingerprint(**settings: Any) -> str:
    """A hash of the settings that change a row (with the package version and this store's format)."""
    return _digest(json.dumps({**settings, "format": FORMAT, "inbedder": __version__}, sort_keys=True).encode())


def _vocabulary_fingerprint(tokenizer: Any) -> str:
    """A hash of the tokenizer's vocabulary (how answers decode), remembered while its size stays the same."""
    size = len(tokenizer)
    remembered = _VOCABULARIES.get(tokenizer)
    if remembered is None or remembered[0] != size:
        vocabulary = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
        remembered = _VOCABULARIES[tokenizer] = (size, _digest(json.dumps(vocabulary).encode()))
    return remembered[1]


def _public(settings: dict[str, Any] | None) -> dict[str, Any]:
    """A config without the fields that name where it came from or which library wrote it."""
    if not settings:
        return {}
    return {k: v for k, v in settings.items() if not k.startswith("_") and k not in ("transformers_version",)}


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]
