"""Which hidden states make the embedding: the readout names and layers (pooling: ``inbedder.pooling``).

One grammar for every model family. What "the answer" is differs by family: the tokens a
causal LM generates after the prompt, the decoder states of an encoder-decoder, or the mask
slots after a masked LM's prompt (see ``inbedder.backends``); the pooling is the same.
Not every family offers every readout: a backend lists the ones it has.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

READOUTS: dict[str, str] = {
    "fst_gen": "state at the last prompt position, which predicts the first answer token",
    "avg_gen": "mean of fst_gen and the states of the generated answer tokens",
    "last_gen": "state of the last generated answer token",
    "avg_ppt": "mean over the prompt tokens",
    "avg_all": "mean over the prompt and the generated answer tokens",
    "re_encode": "the generated answer text embedded by a sentence embedder (mean over num_samples answers)",
}
GENERATING = frozenset({"avg_gen", "last_gen", "avg_all", "re_encode"})
"""Readouts that need the answer's tokens: generated, or (masked LMs) predicted at the mask slots."""


@dataclass(frozen=True)
class Readout:
    """A readout name, the layer it reads (0 = embeddings, -1 = last), and words to skip."""

    name: str = "fst_gen"
    layer: int = -1
    filter_words: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if self.name not in READOUTS:
            raise ValueError(f"unknown readout {self.name!r}; choose one of {sorted(READOUTS)}")
        if isinstance(self.layer, bool) or not isinstance(self.layer, int):
            raise TypeError(f"layer must be an int, got {self.layer!r}")
        words = frozenset(w.strip().lower() for w in self.filter_words)
        object.__setattr__(self, "filter_words", words)

    @classmethod
    def make(cls, name: str, layer: int, filter_words: Iterable[str] | None) -> Readout:
        return cls(name, layer, frozenset(filter_words or ()))

    @property
    def needs_generation(self) -> bool:
        return self.name in GENERATING

    def layer_index(self, num_layers: int) -> int:
        """The index into the model's ``num_layers + 1`` hidden states, checked."""
        if not -(num_layers + 1) <= self.layer <= num_layers:
            raise ValueError(
                f"layer {self.layer} does not exist: the model has {num_layers} layers, so layer "
                f"must be in [{-(num_layers + 1)}, {num_layers}] (0 = embeddings, -1 = last)"
            )
        return self.layer % (num_layers + 1)
