"""One module per model family; each turns padded prompt ids into hidden states.

- ``causal`` (decoder-only, ``AutoModelForCausalLM``): ``CausalBackend``;
- ``masked`` (BERT/RoBERTa family, ``AutoModelForMaskedLM``): ``MaskedBackend``;
- ``seq2seq`` (T5, Flan-T5, BART, ``AutoModelForSeq2SeqLM``): ``Seq2SeqBackend``.

This is the one registry of what inbedder knows per family (``FAMILY_TABLE``, one ``Family``
each): the auto class that loads it, its LoRA task type for training and its backend (each
backend names the readouts it lacks and its default); ``detect_family`` says how a config shows
it. Every backend offers the ``Backend`` interface ``InBedder`` uses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from transformers import (
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSeq2SeqLM,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from inbedder.backends.base import AnswerStates, Backend, GenerationSettings
from inbedder.backends.causal import CausalBackend
from inbedder.backends.masked import DEFAULT_MASK_LENGTH, MASKED_MODEL_TYPES, MaskedBackend
from inbedder.backends.seq2seq import Seq2SeqBackend
from inbedder.errors import InputError


def _is_encoder_decoder(config: PretrainedConfig) -> bool:
    return bool(getattr(config, "is_encoder_decoder", False))


def _is_masked_lm(config: PretrainedConfig) -> bool:
    architectures = getattr(config, "architectures", None) or []
    masked = any(a.endswith("ForMaskedLM") for a in architectures) or config.model_type in MASKED_MODEL_TYPES
    return masked and not _is_encoder_decoder(config)


def _is_decoder_only(config: PretrainedConfig) -> bool:
    return not _is_encoder_decoder(config) and not _is_masked_lm(config)


@dataclass(frozen=True)
class Family:
    """What inbedder knows of one model family, in one place."""

    name: str
    model_class: Any
    """The transformers auto class that loads it with its LM head."""
    lora_task_type: str | None
    """peft's ``TaskType`` for LoRA on it (None: a plain model, as peft wraps a masked LM)."""
    backend: Callable[..., Backend]
    """Its backend, over a loaded model and tokenizer."""
    recognises: Callable[[PretrainedConfig], bool]
    """Whether a model's config is of this family (exactly one family recognises any config)."""
    takes_mask_length: bool = False


FAMILY_TABLE: dict[str, Family] = {
    family.name: family
    for family in (
        Family("causal", AutoModelForCausalLM, "CAUSAL_LM", CausalBackend, _is_decoder_only),
        Family("masked", AutoModelForMaskedLM, None, MaskedBackend, _is_masked_lm, takes_mask_length=True),
        Family("seq2seq", AutoModelForSeq2SeqLM, "SEQ_2_SEQ_LM", Seq2SeqBackend, _is_encoder_decoder),
    )
}
FAMILIES = tuple(FAMILY_TABLE)
MODEL_CLASSES: dict[str, Any] = {name: family.model_class for name, family in FAMILY_TABLE.items()}
LORA_TASK_TYPES: dict[str, str | None] = {name: family.lora_task_type for name, family in FAMILY_TABLE.items()}


def detect_family(config: PretrainedConfig) -> str:
    """The family that recognises ``config``: ``seq2seq`` for encoder-decoders, ``masked`` for BERT-like
    encoders, ``causal`` for the rest."""
    return next(family.name for family in FAMILY_TABLE.values() if family.recognises(config))


def check_family(family: str) -> str:
    """``family`` if it is ``"auto"`` or a known family; a ValueError naming the choices otherwise."""
    if family not in ("auto", *FAMILIES):
        raise InputError(f"unknown model family {family!r}; use 'auto' or one of {', '.join(FAMILIES)}")
    return family


def make_backend(
    family: str, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, *, mask_length: int | None = None
) -> Backend:
    """The backend of ``family`` over a loaded model; ``mask_length`` applies to masked LMs only."""
    known = FAMILY_TABLE.get(check_family(family))
    if known is None:  # "auto": the caller resolves it first
        raise InputError("make_backend takes a resolved family, not 'auto'")
    if not known.takes_mask_length:
        if mask_length is not None:
            raise InputError(f"mask_length applies to masked LMs; this is a {family} model")
        return known.backend(model, tokenizer)
    return known.backend(model, tokenizer, DEFAULT_MASK_LENGTH if mask_length is None else mask_length)


__all__ = [
    "FAMILIES",
    "FAMILY_TABLE",
    "Family",
    "LORA_TASK_TYPES",
    "MODEL_CLASSES",
    "Backend",
    "CausalBackend",
    "AnswerStates",
    "GenerationSettings",
    "MaskedBackend",
    "Seq2SeqBackend",
    "check_family",
    "detect_family",
    "make_backend",
]
