"""The ``Embedder`` protocol: what ``cluster``, the server, Ray, the evaluation harness and the CLI take.

An embedder has a ``name`` and ``encode_multi(sentences, instructions, options)``: one result per
instruction, each an array (n, dim), or ``(vectors, answers)`` when ``options.return_generations``
asks for the answers (None for a text the embedder did not answer). These are embedders:

- ``InBedder``: a language model's state at the answer;
- ``GuidedEmbedder``: a map fitted per instruction on a sample, or saved maps applied
  (``inbedder.guided``);
- ``SentenceEmbedder`` (a sentence-transformers model, the instruction in a pattern or left out)
  and ``Precomputed`` (vectors computed elsewhere), in ``inbedder.generic``.

What only some embedders can do they declare with an attribute, as llm's embedding models declare
``supports_text``: ``names_clusters`` with ``explain_clusters`` (the words of an LM head that set a
cluster apart, ``Explains``). A caller asks ``explains(embedder)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from inbedder.options import EncodeOptions


@runtime_checkable
class Embedder(Protocol):
    """Texts and instructions in, one result per instruction out (see the module's docstring)."""

    name: str

    def encode_multi(
        self, sentences: Sequence[str], instructions: Sequence[Any], options: EncodeOptions | None = None
    ) -> list: ...


@runtime_checkable
class Explains(Protocol):
    """An embedder that names clusters of its vectors with the words of its LM head: it says so with
    ``names_clusters`` (True; a wrapper's may depend on what it wraps) and has ``explain_clusters``."""

    names_clusters: bool

    def explain_clusters(
        self,
        texts: Sequence[str],
        instruction: Any,
        vectors: np.ndarray,
        assignments: np.ndarray,
        options: EncodeOptions | None = None,
    ) -> dict[int, list[str]] | None:
        """Each cluster's words (by cluster id; noise left out), or None when these vectors cannot be read
        through the head (a readout away from the last layer)."""
        ...


def explains(embedder: Any) -> bool:
    """Whether ``embedder`` can name its clusters with LM-head words."""
    return isinstance(embedder, Explains) and bool(embedder.names_clusters)


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Each row scaled to unit length (a zero row stays zero)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)


class EncodesOneAtATime:
    """A mixin: ``encode_multi`` from the class's ``encode(sentences, instruction, options)``, called once per
    instruction (for an embedder that gains nothing from seeing them together)."""

    def encode_multi(
        self, sentences: Sequence[str], instructions: Sequence[Any], options: EncodeOptions | None = None
    ) -> list:
        return [self.encode(sentences, instruction, options) for instruction in instructions]  # type: ignore[attr-defined]
