"""The readout stages of ``encode``: from a batch's runs to one vector per text.

- ``StatePooling``: the readout's pool function over the backend's states (``inbedder.readout``);
- ``ReEncoding``: the answers' text embedded by a sentence embedder, averaged over samples;
- ``HeadDistribution``: after the store, a pooled last-layer state through the LM head.

A stage's ``dimension`` is the size of what it returns; ``readout_stage`` makes the one a readout's
type (``inbedder.readout``: pooled, re-encoded, head) calls for.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any, Protocol

import numpy as np
import torch

from inbedder.backends.base import AnswerStates, Backend
from inbedder.errors import InputError
from inbedder.readout import KINDS, Readout


class ReadoutStage(Protocol):
    """Vectors (B, dimension) for one batch, from its runs (one per sample) and their decoded answers."""

    @property
    def dimension(self) -> int: ...

    def __call__(self, runs: Sequence[AnswerStates], answers: Sequence[list[str]]) -> torch.Tensor: ...


def readout_stage(readout: Readout, backend: Backend, sentence_embedder: Callable[[], Any]) -> ReadoutStage:
    """The stage that makes, from a batch's runs, the vectors the store keeps for ``readout``: its pooled
    states, its re-encoded answers, or (for a head readout) the pooled states the head will read."""
    kind = KINDS[readout.kind.stored]
    if kind.reencodes:
        return ReEncoding(sentence_embedder)
    return StatePooling(replace(readout, name=kind.name), backend)


class StatePooling:
    """The readout's pool function over the states of the first run, without the tokens of ``filter_words``."""

    def __init__(self, readout: Readout, backend: Backend) -> None:
        if readout.kind.pool is None:
            raise InputError(f"readout {readout.name!r} does not pool states")
        self.readout, self.pool, self.backend = readout, readout.kind.pool, backend

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
    """Square roots of the LM head's probabilities for last-layer states (n, H): (n, vocabulary), unit norm;
    or, given ``top``, the ``top`` likeliest tokens' log-probabilities less the ``top``-th's (zero elsewhere),
    scaled to unit norm; either, given ``dim``, under a fixed random +-1 projection to ``dim`` numbers
    (scaled by 1/sqrt(dim)).

    A random projection keeps dot products (Johnson-Lindenstrauss), so the cosine of two projected
    vectors is close to that of the distributions (their Bhattacharyya coefficient). Its signs come
    from NumPy's PCG64 stream (seed ``PROJECTION_SEED``), whose raw output NumPy keeps stable across
    versions and machines, so the same text gets the same vector anywhere; they are kept as bits
    (vocabulary x 128 bytes) and unpacked a block of rows at a time. Column j is the same whatever
    ``dim``, so the first d numbers of a projection are the d-number projection.

    Applied after the store, which keeps the smaller states; in chunks, to bound memory.
    """

    PROJECTION_SEED = 0
    MAX_PROJECTION = 1024
    ROWS_PER_BLOCK = 8192

    def __init__(self, backend: Backend, chunk: int = 256) -> None:
        self.backend, self.chunk = backend, chunk
        self._dimension: int | None = None
        self._signs: np.ndarray | None = None

    @property
    def dimension(self) -> int:
        if self._dimension is None:
            with torch.inference_mode():
                probe = self.backend.vocabulary_logits(torch.zeros(1, self.backend.hidden_size))
            self._dimension = int(probe.shape[-1])
        return self._dimension

    @torch.inference_mode()
    def __call__(self, states: torch.Tensor, dim: int | None = None, top: int | None = None) -> torch.Tensor:
        parts = []
        for i in range(0, len(states), self.chunk):
            logits = self.backend.vocabulary_logits(states[i : i + self.chunk]).float()
            vectors = (logits.softmax(-1).sqrt() if top is None else top_margins(logits, top)).cpu()
            parts.append(vectors if dim is None else self.project(vectors, dim))
        return torch.cat(parts) if parts else torch.empty((0, dim or self.dimension))

    def project(self, roots: torch.Tensor, dim: int) -> torch.Tensor:
        """(n, vocabulary) -> (n, dim): ``roots @ R[:, :dim] / sqrt(dim)`` with R the fixed +-1 matrix."""
        out = torch.zeros((len(roots), dim))
        for start, block in self._sign_blocks(dim):
            out += roots[:, start : start + len(block)] @ block
        return out / dim**0.5

    def back_project(self, vectors: torch.Tensor) -> torch.Tensor:
        """(n, dim) projected vectors -> (n, vocabulary) scores ``vectors @ R[:, :dim].T``, whose largest
        entries are the tokens the projected distribution weighs most (R R^T is about dim x identity)."""
        dim = vectors.shape[-1]
        return torch.cat([vectors @ block.T for _, block in self._sign_blocks(dim)], dim=-1)

    def _sign_blocks(self, dim: int) -> Iterator[tuple[int, torch.Tensor]]:
        """(first row, R's rows from there as a float +-1 block of ``dim`` columns), block after block."""
        if not 8 <= dim <= self.MAX_PROJECTION or dim % 8:
            raise InputError(f"a projection has a multiple of 8 up to {self.MAX_PROJECTION} numbers, got {dim}")
        if self._signs is None:
            words = np.random.PCG64(self.PROJECTION_SEED).random_raw(self.dimension * self.MAX_PROJECTION // 64)
            self._signs = words.astype("<u8").view(np.uint8).reshape(self.dimension, self.MAX_PROJECTION // 8)
        for start in range(0, self.dimension, self.ROWS_PER_BLOCK):
            bits = np.unpackbits(self._signs[start : start + self.ROWS_PER_BLOCK, : dim // 8], axis=1)
            yield start, torch.from_numpy(bits).float().mul_(2).sub_(1)


def top_margins(logits: torch.Tensor, top: int) -> torch.Tensor:
    """(n, vocabulary) logits -> the ``top`` largest less the ``top``-th largest (a log-probability margin,
    whatever the softmax's normaliser), zero elsewhere, each row scaled to unit length."""
    if top > logits.shape[-1]:
        raise InputError(f"the head has {logits.shape[-1]} tokens, fewer than the {top} to keep")
    best = logits.topk(top, dim=-1)
    margins = torch.zeros_like(logits).scatter_(-1, best.indices, best.values - best.values[:, -1:])
    return torch.nn.functional.normalize(margins, dim=-1)


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
