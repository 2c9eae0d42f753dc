"""One module per model family; each turns padded prompt ids into hidden states.

- ``causal`` (decoder-only, ``AutoModelForCausalLM``): ``CausalBackend``;
- ``masked`` (BERT/RoBERTa family, ``AutoModelForMaskedLM``): ``MaskedBackend``;
- ``seq2seq`` (T5, Flan-T5, BART, ``AutoModelForSeq2SeqLM``): ``Seq2SeqBackend``.

This is the one registry of what inbedder knows per family: the auto class that loads it
(``MODEL_CLASSES``), its LoRA task type for training (``LORA_TASK_TYPES``), how a config shows
it (``detect_family``) and its backend (``make_backend``; each backend names the readouts it
lacks and its default). Every backend offers the ``Backend`` interface ``InBedder`` uses.
"""

from __future__ import annotations

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

FAMILIES = ("causal", "masked", "seq2seq")
MODEL_CLASSES: dict[str, Any] = {
    "causal": AutoModelForCausalLM,
    "masked": AutoModelForMaskedLM,
    "seq2seq": AutoModelForSeq2SeqLM,
}
"""The transformers auto class that loads each family with its LM head."""
LORA_TASK_TYPES: dict[str, str | None] = {"causal": "CAUSAL_LM", "masked": None, "seq2seq": "SEQ_2_SEQ_LM"}
"""peft's ``TaskType`` for LoRA on each family (None: a plain model, as peft wraps a masked LM)."""


def detect_family(config: PretrainedConfig) -> str:
    """``seq2seq`` for encoder-decoders, ``masked`` for BERT-like encoders, else ``causal``."""
    if getattr(config, "is_encoder_decoder", False):
        return "seq2seq"
    architectures = getattr(config, "architectures", None) or []
    if any(a.endswith("ForMaskedLM") for a in architectures) or config.model_type in MASKED_MODEL_TYPES:
        return "masked"
    return "causal"


def check_family(family: str) -> str:
    """``family`` if it is ``"auto"`` or a known family; a ValueError naming the choices otherwise."""
    if family not in ("auto", *FAMILIES):
        raise InputError(f"unknown model family {family!r}; use 'auto' or one of {', '.join(FAMILIES)}")
    return family


def make_backend(
    family: str, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, *, mask_length: int | None = None
) -> Backend:
    """The backend of ``family`` over a loaded model; ``mask_length`` applies to masked LMs only."""
    if family == "masked":
        return MaskedBackend(model, tokenizer, DEFAULT_MASK_LENGTH if mask_length is None else mask_length)
    if mask_length is not None:
        raise InputError(f"mask_length applies to masked LMs; this is a {family} model")
    if family == "seq2seq":
        return Seq2SeqBackend(model, tokenizer)
    if family == "causal":
        return CausalBackend(model, tokenizer)
    raise InputError(f"unknown model family {family!r}; use one of {', '.join(FAMILIES)}")


__all__ = [
    "FAMILIES",
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
