"""Which hidden states make the embedding: the readout names, layers, and pooling.

One grammar for every model family. What "the answer" is differs by family: the tokens a
causal LM generates after the prompt, the decoder states of an encoder-decoder, or the mask
slots after a masked LM's prompt (see ``inbedder.backends``); the pooling here is the same.
Not every family offers every readout: a backend lists the ones it has.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch

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


def masked_mean(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over dim 1 of ``states`` (B, T, H) where ``mask`` (B, T) is true."""
    weights = mask.to(states.dtype).unsqueeze(-1)
    return (states * weights).sum(1) / weights.sum(1).clamp(min=1)


def pool_generation(
    name: str,
    prompt_states: torch.Tensor,
    prompt_mask: torch.Tensor,
    answer_states: torch.Tensor,
    answer_mask: torch.Tensor,
    kept_mask: torch.Tensor,
    token_column: int = 1,
) -> torch.Tensor:
    """Readouts over prompt states (B, P, H) and answer states (B, T, H).

    ``answer_states[:, 0]`` is the fst_gen state; ``answer_mask`` marks real answer states
    and ``kept_mask`` those that survive ``filter_words``. Columns from ``token_column`` on
    are the answer tokens' states (see ``inbedder.backends.Generation``): 1 when column 0
    is the state before the answer, 0 for a masked LM's mask slots.
    """
    if name == "fst_gen":
        return answer_states[:, 0]
    if name == "avg_ppt":
        return masked_mean(prompt_states, prompt_mask)
    if name == "avg_gen":
        return masked_mean(answer_states, kept_mask)
    if name == "last_gen":
        last = answer_mask.long().cumsum(1).argmax(1)
        return answer_states[torch.arange(len(last)), last]
    if name == "avg_all":
        states = torch.cat([prompt_states, answer_states[:, token_column:]], dim=1)
        return masked_mean(states, torch.cat([prompt_mask, answer_mask[:, token_column:]], dim=1))
    raise ValueError(f"unknown readout {name!r}")


def filter_mask(
    answer_mask: torch.Tensor,
    answer_tokens: list[list[int]],
    filter_words: frozenset[str],
    decode: Callable[[list[int]], str],
    token_column: int = 1,
) -> torch.Tensor:
    """``answer_mask`` without the states of answer tokens that spell a filtered word.

    Token j's state is column ``j + token_column``. With ``token_column=1`` the fst_gen
    state (column 0) is always kept; a row that would lose every state keeps them all.
    """
    if not filter_words:
        return answer_mask
    kept = answer_mask.clone()
    for row, tokens in enumerate(answer_tokens):
        for column, token in enumerate(tokens[: kept.shape[1] - token_column], start=token_column):
            if decode([token]).strip().lower() in filter_words:
                kept[row, column] = False
        if not kept[row].any():
            kept[row] = answer_mask[row]
    return kept
