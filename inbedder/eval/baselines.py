"""Baselines in the same harness: generic sentence embedders (all-MiniLM-L6-v2, all-mpnet-base-v2,
EmbeddingGemma-300M) without, or with, the instruction in the way each takes one, and the base
language model's mean pooling over the raw text."""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from inbedder.options import EncodeOptions
from inbedder.reencoder import EMBEDDINGGEMMA, MINILM, MPNET, load_sentence_embedder
from inbedder.templates import one_per_text

GENERIC_EMBEDDERS = (MINILM, MPNET)
"""The generic sentence embedders every quality table reports, plain and with the instruction."""
PROMPTS: dict[str, dict[str, str]] = {
    EMBEDDINGGEMMA: {
        "clustering prompt": "task: clustering | query: {text}",
        "instruction": "task: {instruction} | query: {text}",
    },
}
"""How a sentence embedder trained with task prompts is asked, row by row (``{instruction}``: the question);
any other takes the instruction before the text."""
DEFAULT_PROMPTS = {"instruction": "{instruction} {text}"}


class WithoutInstruction:
    """A sentence embedder that embeds the text alone, whatever the question."""

    def __init__(self, model: Any, name: str) -> None:
        self.model, self.name = model, name

    def encode(self, sentences: list[str], instruction: Any = None, options: EncodeOptions | None = None) -> np.ndarray:
        return self._embed(list(sentences), options)

    def _embed(self, texts: list[str], options: EncodeOptions | None) -> np.ndarray:
        """The sentence embedder's vectors; of the options, only the batch size applies."""
        return np.asarray(self.model.encode(texts, batch_size=(options or EncodeOptions()).batch_size))


class Prompted(WithoutInstruction):
    """A sentence embedder given each text in a pattern: ``{text}``, and ``{instruction}`` where the
    pattern asks the question (a text without an instruction goes in alone)."""

    def __init__(self, model: Any, name: str, pattern: str = "{instruction} {text}") -> None:
        super().__init__(model, name)
        self.pattern = pattern

    def encode(self, sentences: list[str], instruction: Any = None, options: EncodeOptions | None = None) -> np.ndarray:
        instructions = one_per_text(instruction, len(sentences))
        return self._embed([self._fill(t, i) for t, i in zip(sentences, instructions)], options)

    def _fill(self, text: str, instruction: str | None) -> str:
        if "{instruction}" in self.pattern and not instruction:
            return text
        values = {"text": text, "instruction": instruction or ""}
        return re.sub(r"\{(text|instruction)\}", lambda found: values[found.group(1)], self.pattern)  # one pass


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
    """Each sentence embedder of ``names`` on the text alone (``NAME``) and once per way it is prompted
    (``NAME + instruction``, ``NAME + clustering prompt``: ``PROMPTS``); loaded once each."""
    encoders: dict[str, WithoutInstruction] = {}
    for name in names:
        model = load_sentence_embedder(name)
        encoders[name] = WithoutInstruction(model, name)
        for row, pattern in PROMPTS.get(name, DEFAULT_PROMPTS).items():
            encoders[f"{name} + {row}"] = Prompted(model, f"{name} + {row}", pattern)
    return encoders
