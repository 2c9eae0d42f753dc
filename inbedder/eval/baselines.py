"""Baselines in the same harness: a sentence embedder without, or with, the instruction, and the
base language model's mean pooling over the raw text."""

from __future__ import annotations

from typing import Any

import numpy as np

from inbedder.reencoder import MINILM_HUB_ID, MINILM_PACKAGE, load_sentence_embedder, minilm_path
from inbedder.templates import one_per_text

__all__ = [
    "MINILM_HUB_ID",
    "MINILM_PACKAGE",
    "InstructionPrepended",
    "RawTextMean",
    "WithoutInstruction",
    "load_sentence_embedder",
    "minilm_path",
]


class WithoutInstruction:
    """A sentence embedder that embeds the text alone, whatever the question."""

    def __init__(self, model: Any, name: str) -> None:
        self.model, self.name = model, name

    def encode(self, sentences: list[str], instruction: Any = None, **kwargs: Any) -> np.ndarray:
        return self.model.encode(list(sentences), **kwargs)


class InstructionPrepended(WithoutInstruction):
    """A sentence embedder given ``"{instruction} {text}"``: the usual way to instruct it."""

    def encode(self, sentences: list[str], instruction: Any = None, **kwargs: Any) -> np.ndarray:
        instructions = one_per_text(instruction, len(sentences))
        texts = [f"{i} {t}" if i else t for t, i in zip(sentences, instructions)]
        return self.model.encode(texts, **kwargs)


class RawTextMean:
    """The base language model's mean-pooled states over the raw text (no prompt, no question).

    The question changes nothing, so a corpus asked again (robustness reruns it under every
    rewording) is embedded once.
    """

    def __init__(self, inbedder: Any, name: str) -> None:
        self.inbedder, self.name = inbedder, name
        self._done: dict[tuple, np.ndarray] = {}

    def encode(self, sentences: list[str], instruction: Any = None, **kwargs: Any) -> np.ndarray:
        key = (tuple(sentences), repr(sorted(kwargs.items())))
        if key not in self._done:
            self._done[key] = self.inbedder.encode(sentences, None, readout="avg_ppt", **kwargs)
        return self._done[key]
