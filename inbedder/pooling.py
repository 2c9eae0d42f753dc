"""The readout stages of ``encode``: from a batch's runs to one vector per text.

- ``StatePooling``: the readout's pool function over the backend's states (``inbedder.readout``);
- ``ReEncoding``: the answers' text embedded by a sentence embedder, averaged over samples;
- ``HeadDistribution``: after the store, a pooled last-layer state through the LM head.

A stage's ``dimension`` is the size of what it returns.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
import torch

from inbedder.backends.base import AnswerStates, Backend
from inbedder.readout import Readout


class ReadoutStage(Protocol):
    """Vectors (B, dimension) for one batch, from its runs (one per sample) and their decoded answers."""

    @property
    def dimension(self) -> int: ...

    def __call__(self, runs: Sequence[AnswerStates], answers: Sequence[list[str]]) -> torch.Tensor: ...


class StatePooling:
    """The readout's pool function over the states of the first run, without the tokens of ``filter_words``."""

    def __init__(self, readout: Readout, backend: Backend) -> None:
        pool = readout.kind.pool
        if pool is None:
            raise ValueError(f"readout {readout.name!r} does not pool states")
        self.readout, self.pool, self.backend = readout, pool, backend

    @property
    def dimension(self) -> int:
        return self.backend.hidden_size

    def __call__(self, runs: Sequence[AnswerStates], answers: Sequence[list[str]]) -> torch.Tensor:
        run = runs[0]
        decode = self.backend.tokenizer.decode
        kept = filter_mask(run.answer_mask, run.answer_tokens, self.readout.filter_words, decode, run.token_column)
        return self.pool(run, kept)


class ReEncoding:
    """Each text's answers embedded by a sentence embedder (loaded on first use), the mean over samples."""

    def __init__(self, embedder: Callable[[], Any]) -> None:
        self._embedder = embedder

    @property
    def embedder(self) -> Any:
        return self._embedder()

    @property
    def dimension(self) -> int:
        return embedding_size(self.embedder)

    def __call__(self, runs: Sequence[AnswerStates], answers: Sequence[list[str]]) -> torch.Tensor:
        flat = [answer for sample in answers for answer in sample]
        vectors = torch.as_tensor(np.asarray(self.embedder.encode(flat)), dtype=torch.float32)
        return vectors.reshape(len(answers), len(answers[0]), -1).mean(0)


class HeadDistribution:
    """Square roots of the LM head's probabilities for last-layer states (n, H): (n, vocabulary), unit norm.

    Applied after the store, which keeps the smaller states; in chunks, to bound memory.
    """

    def __init__(self, backend: Backend, chunk: int = 256) -> None:
        self.backend, self.chunk = backend, chunk
        self._dimension: int | None = None

    @property
    def dimension(self) -> int:
        if self._dimension is None:
            with torch.inference_mode():
                probe = self.backend.vocabulary_logits(torch.zeros(1, self.backend.hidden_size))
            self._dimension = int(probe.shape[-1])
        return self._dimension

    @torch.inference_mode()
    def __call__(self, states: torch.Tensor) -> torch.Tensor:
        parts = [
            self.backend.vocabulary_logits(states[i : i + self.chunk]).softmax(-1).sqrt().cpu()
            for i in range(0, len(states), self.chunk)
        ]
        return torch.cat(parts) if parts else torch.empty((0, self.dimension))


def embedding_size(embedder: Any) -> int:
    """A sentence embedder's output size: as it reports it, else measured on a probe text."""
    for method in ("get_embedding_dimension", "get_sentence_embedding_dimension"):
        size = getattr(embedder, method, lambda: None)()
        if size:
            return int(size)
    return int(np.asarray(embedder.encode(["probe"])).shape[-1])


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
