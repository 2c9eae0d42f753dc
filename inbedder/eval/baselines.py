"""Baselines in the same harness: generic sentence embedders (all-MiniLM-L6-v2, all-mpnet-base-v2)
without, or with, the instruction, and the base language model's mean pooling over the raw text."""

from __future__ import annotations

from typing import Any

import numpy as np

from inbedder.options import EncodeOptions
from inbedder.reencoder import MINILM, MPNET, load_sentence_embedder
from inbedder.templates import one_per_text

GENERIC_EMBEDDERS = (MINILM, MPNET)
"""The generic sentence embedders every quality table reports, plain and with the instruction."""


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


def generic_baselines(names: tuple[str, ...] = GENERIC_EMBEDDERS) -> dict[str, WithoutInstruction]:
    """Each sentence embedder of ``names`` twice: on the text alone (``NAME``) and with the instruction
    prepended (``NAME + instruction``); loaded once each."""
    encoders: dict[str, WithoutInstruction] = {}
    for name in names:
        model = load_sentence_embedder(name)
        encoders[name] = WithoutInstruction(model, name)
        encoders[f"{name} + instruction"] = InstructionPrepended(model, f"{name} + instruction")
    return encoders
