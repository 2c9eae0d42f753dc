"""Reading vectors in the model's vocabulary: the LM head's top words, and what sets a group of texts apart.

``InBedder.top_tokens`` and ``InBedder.explain_clusters`` are built from these: a cluster's words are
the head's top words for how its members' vectors (or head distributions) differ from the corpus's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from inbedder.errors import InputError
from inbedder.options import EncodeOptions
from inbedder.readout import Readout

NOISE = -1
"""The cluster id of texts in no cluster, left out of every explanation."""
BLOCK_ROWS = 1024
"""States read through the head at a time, so memory holds a block of vocabulary-sized rows, not all."""


def top_words(logits: torch.Tensor, decode: Callable[[list[int]], str], special: set[int], top: int) -> list[list[str]]:
    """For each row of ``logits`` (n, vocabulary), its ``top`` highest tokens decoded: stripped, kept when
    they hold a letter and are not special, deduplicated ignoring case."""
    words = []
    for row in logits.topk(min(top * 10, logits.shape[-1])).indices.tolist():
        seen: dict[str, str] = {}
        for token in row:
            word = decode([token]).strip()
            if token not in special and any(ch.isalpha() for ch in word):
                seen.setdefault(word.lower(), word)
            if len(seen) == top:
                break
        words.append(list(seen.values()))
    return words


@torch.inference_mode()
def vocabulary_scores(vectors: torch.Tensor, backend: Any, head: Any, readout: Readout) -> torch.Tensor:
    """(n, vocabulary) scores: a head readout's vectors as they are; last-layer states through the LM head;
    the model's projected ``readout`` (truncated too: its first numbers are a smaller projection) projected
    back to the vocabulary. Any other width is refused by name."""
    width, hidden, prefix = vectors.shape[-1], backend.hidden_size, readout.kind.prefix_dim
    if width == head.dimension:
        return vectors.reshape(-1, width)
    if width == hidden:
        return backend.vocabulary_logits(vectors.reshape(-1, hidden))
    if prefix is not None and width <= prefix and width % 8 == 0:
        return head.back_project(vectors.reshape(-1, width))
    projected = f", or up to {prefix} ({readout.name}, truncated too)" if prefix else ""
    raise InputError(
        f"top_tokens reads vectors of {hidden} numbers (states) or {head.dimension} (fst_head){projected}; got {width}"
    )


def clusters_of(assignments: np.ndarray) -> list[int]:
    """The cluster ids among ``assignments``, noise left out, in order."""
    return sorted(set(np.asarray(assignments).tolist()) - {NOISE})


def mean_shifts(vectors: np.ndarray, assignments: np.ndarray, clusters: Sequence[int]) -> np.ndarray:
    """(clusters, dim): each cluster's mean vector minus the corpus's."""
    vectors = np.asarray(vectors, dtype=np.float32)
    return np.stack([vectors[assignments == c].mean(0) - vectors.mean(0) for c in clusters])


def distribution_shifts(
    head: Callable[[torch.Tensor], torch.Tensor], states: np.ndarray, assignments: np.ndarray, clusters: Sequence[int]
) -> np.ndarray:
    """(clusters, vocabulary): each cluster's mean head distribution (``head`` of its states) minus the
    corpus's, a block of states at a time."""
    sums: np.ndarray | None = None
    total: np.ndarray | None = None
    for start in range(0, len(states), BLOCK_ROWS):
        full = head(torch.as_tensor(states[start : start + BLOCK_ROWS])).numpy()
        block = assignments[start : start + BLOCK_ROWS]
        if sums is None or total is None:
            sums, total = np.zeros((len(clusters), full.shape[1])), np.zeros(full.shape[1])
        total += full.sum(0)
        for row, c in enumerate(clusters):
            sums[row] += full[block == c].sum(0)
    assert sums is not None and total is not None
    counts = np.array([(assignments == c).sum() for c in clusters], dtype=np.float64)[:, None]
    return (sums / counts - total / len(states)).astype(np.float32)


def cluster_words(
    model: Any,
    texts: Sequence[str],
    instruction: Any,
    vectors: np.ndarray,
    assignments: np.ndarray,
    spec: Readout,
    postprocess: str | None,
    options: EncodeOptions,
    top: int,
) -> dict[int, list[str]]:
    """``InBedder.explain_clusters`` once the readout is known to read the last layer: the head's words for
    each cluster's shift from the corpus, in the vectors, or (a projected head, standardised vectors) in
    the full head distributions or raw states, which ``model`` reads again (from the store ``options``
    name). ``postprocess`` None: read the vectors as they are."""
    clusters = clusters_of(assignments)
    if not clusters:
        return {}
    unprojected = spec.kind.unprojected if postprocess is not None else None
    if unprojected is not None or postprocess == "standardize":
        # the call's own settings otherwise (answers asked or not), so the rows it stored are found again
        raw = {"postprocess": "none", "normalize_embeddings": False, "truncate_dim": None, "return_usage": False}
        again = replace(options, readout=unprojected or spec.name, show_progress_bar=False, **raw)
        result = model.encode(list(texts), instruction, again)
        vectors = np.asarray(result[0] if isinstance(result, tuple) else result)
    if unprojected is not None:
        shifts = distribution_shifts(model.head, vectors, assignments, clusters)
    else:
        shifts = mean_shifts(vectors, assignments, clusters)
    return dict(zip(clusters, model.top_tokens(shifts, top)))


class HeadWords:
    """An ``InBedder``'s reading of vectors through its LM head (mixed into it): ``top_tokens`` and
    ``explain_clusters``."""

    names_clusters = True
    """It names clusters of its vectors with its LM head's words (``explain_clusters``)."""

    def top_tokens(self, states: Any, top: int = 10) -> list[list[str]]:
        """For each row of ``states`` (n, dim), the words the LM head ranks highest.

        Meaningful for states read at the last layer, the head's input, or for vectors of a
        head readout (``fst_head``), which already hold one number per token. Tokens are decoded,
        stripped, kept when they hold a letter, and deduplicated ignoring case.
        """
        scores = vocabulary_scores(torch.as_tensor(states, dtype=torch.float32), self.backend, self.head, self.readout)
        return top_words(scores, self.tokenizer.decode, set(self.tokenizer.all_special_ids), top)

    def explain_clusters(
        self,
        texts: Sequence[str],
        instruction: Any,
        vectors: Any,
        assignments: Any,
        options: EncodeOptions | None = None,
        top: int = 10,
        reread: bool = True,
    ) -> dict[int, list[str]] | None:
        """Each cluster's LM-head words: what its members' vectors hold more than the corpus's (``Explains``).

        ``vectors`` are this model's ``encode(texts, instruction, options)``. With ``reread``, a
        projected head's clusters are named from the full head distributions and standardised
        vectors from the raw ones, both read again from the store ``options`` name (else the model
        runs again); without it, the vectors are read as they are. None when the readout is not at
        the last layer, the head's input.
        """
        options = EncodeOptions.build(options)
        spec = self._spec(options)
        if self._check_readout(spec) != self.num_layers:
            return None
        post = self.postprocess if options.postprocess is None else options.postprocess
        vectors, assignments = np.asarray(vectors), np.asarray(assignments)
        return cluster_words(
            self, texts, instruction, vectors, assignments, spec, post if reread else None, options, top
        )
