"""Baselines in the same harness: a sentence embedder without, or with, the instruction, and the
base language model's mean pooling over the raw text."""

from __future__ import annotations

from typing import Any

import numpy as np

from inbedder.options import EncodeOptions
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

    def encode(self, sentences: list[str], instruction: Any = None, options: EncodeOptions | None = None) -> np.ndarray:
        return self._embed(list(sentences), options)

    def _embed(self, texts: list[str], options: EncodeOptions | None) -> np.ndarray:
        """The sentence embedder's vectors; of the options, only the batch size applies."""
        return np.asarray(self.model.encode(texts, batch_size=(options or EncodeOptions()).batch_size))


class InstructionPrepended(WithoutInstruction):
    """A sentence embedder given ``"{instruction} {text}"``: the usual way to instruct it."""

    def encode(self, sentences: list[str], instruction: Any = None, options: EncodeOptions | None = None) -> np.ndarray:
        instructions = one_per_text(instruction, len(sentences))
        return self._embed([f"{i} {t}" if i else t for t, i in zip(sentences, instructions)], options)


class RawTextMean:
    """The base language model's mean-pooled states over the raw text (no prompt, no question).

    The question changes nothing, so with a store in the options (``inbedder.eval.suite.run``
    gives one) a corpus asked again (robustness reruns it under every rewording) is embedded once.
    """

    def __init__(self, inbedder: Any, name: str) -> None:
        self.inbedder, self.name = inbedder, name

    def encode(self, sentences: list[str], instruction: Any = None, options: EncodeOptions | None = None) -> np.ndarray:
        return self.inbedder.encode(sentences, None, EncodeOptions.build(options, readout="avg_ppt"))
