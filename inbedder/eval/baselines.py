"""Baselines in the same harness: generic sentence embedders (all-MiniLM-L6-v2, all-mpnet-base-v2,
EmbeddingGemma-300M) without, or with, the instruction in the way each takes one, and the base
language model's mean pooling over the raw text."""

from __future__ import annotations

from typing import Any

from inbedder.generic import SentenceEmbedder
from inbedder.interface import EncodesOneAtATime
from inbedder.options import EncodeOptions
from inbedder.reencoder import EMBEDDINGGEMMA, MINILM, MPNET, load_sentence_embedder

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


class RawTextMean(EncodesOneAtATime):
    """The base language model's mean-pooled states over the raw text (no prompt, no question).

    The question changes nothing, so with a store in the options (``inbedder.eval.suite.run``
    gives one) a corpus asked again (robustness reruns it under every rewording) is embedded once.
    """

    def __init__(self, inbedder: Any, name: str) -> None:
        self.inbedder, self.name = inbedder, name

    def encode(self, sentences: list[str], instruction: Any = None, options: EncodeOptions | None = None) -> Any:
        return self.inbedder.encode(sentences, None, EncodeOptions.build(options, readout="avg_ppt"))


def generic_baselines(names: tuple[str, ...] = GENERIC_EMBEDDERS) -> dict[str, SentenceEmbedder]:
    """Each sentence embedder of ``names`` on the text alone (``NAME``) and once per way it is prompted
    (``NAME + instruction``, ``NAME + clustering prompt``: ``PROMPTS``); loaded once each."""
    encoders: dict[str, SentenceEmbedder] = {}
    for name in names:
        model = load_sentence_embedder(name)
        encoders[name] = SentenceEmbedder(model, name=name)
        for row, pattern in PROMPTS.get(name, DEFAULT_PROMPTS).items():
            encoders[f"{name} + {row}"] = SentenceEmbedder(model, pattern, name=f"{name} + {row}")
    return encoders
