"""Embedders without a language model of their own (``inbedder.interface``'s ``Embedder``).

- ``SentenceEmbedder``: a sentence-transformers model (all-MiniLM-L6-v2, all-mpnet-base-v2,
  EmbeddingGemma, any other), the instruction put into each text by a pattern or left out.
- ``Precomputed``: vectors computed elsewhere, one (n, dim) array per instruction, as BERTopic's
  ``fit_transform(docs, embeddings=...)`` takes them; an LM-head ``explainer`` (the ``InBedder``
  that computed them) may name their clusters.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from inbedder.errors import InputError
from inbedder.interface import explains, unit_rows
from inbedder.options import EncodeOptions
from inbedder.templates import one_per_text
from inbedder.validation import check_texts

TEXT_ONLY = "{text}"
"""The pattern of a sentence embedder that sees the text alone, whatever the question."""


class SentenceEmbedder:
    """A sentence embedder given each text in a pattern: ``{text}``, and ``{instruction}`` where the
    pattern asks the question (a text without an instruction goes in alone).

    Args:
        model: a loaded sentence-transformers model, or a name or folder ``load_sentence_embedder``
            takes (loaded on first use).
        pattern: ``"{text}"`` (the default: the instruction is left out), ``"{instruction} {text}"``,
            or a model's own task prompt (EmbeddingGemma: ``"task: {instruction} | query: {text}"``).
        name: what results call it (default: the model's name, with the pattern when it has one).
    """

    def __init__(self, model: Any, pattern: str = TEXT_ONLY, name: str | None = None) -> None:
        if "{text}" not in pattern:
            raise InputError(f"the pattern {pattern!r} has no {{text}}: the texts would go nowhere")
        self._model, self.pattern = model, pattern
        base = model if isinstance(model, str) else type(model).__name__
        self.name = name or (base if pattern == TEXT_ONLY else f"{base} + {pattern!r}")

    @property
    def model(self) -> Any:
        if isinstance(self._model, str):
            from inbedder.reencoder import load_sentence_embedder

            self._model = load_sentence_embedder(self._model)
        return self._model

    def encode(self, sentences: Sequence[str], instruction: Any = None, options: EncodeOptions | None = None) -> Any:
        """The vectors of ``sentences`` under ``instruction`` (as the pattern puts it), an array (n, dim)."""
        return self.encode_multi(sentences, [instruction], options)[0]

    def encode_multi(
        self, sentences: Sequence[str], instructions: Sequence[Any], options: EncodeOptions | None = None
    ) -> list:
        """One array per instruction; the model runs once when the pattern leaves the instruction out. Of the
        options, ``batch_size``, ``show_progress_bar``, ``normalize_embeddings`` and ``return_generations``
        (no answers: None for each text) apply."""
        options = EncodeOptions.build(options)
        texts = check_texts(sentences)
        asks = "{instruction}" in self.pattern
        results, done = [], None
        for instruction in instructions:
            if done is None or asks:
                filled = [self._fill(t, q) for t, q in zip(texts, one_per_text(instruction, len(texts)))]
                vectors = np.asarray(
                    self.model.encode(
                        filled, batch_size=options.batch_size, show_progress_bar=bool(options.show_progress_bar)
                    ),
                    dtype=np.float32,
                )
                done = unit_rows(vectors) if options.normalize_embeddings else vectors
            results.append((done, [None] * len(texts)) if options.return_generations else done)
        return results

    def _fill(self, text: str, instruction: str | None) -> str:
        if "{instruction}" in self.pattern and not instruction:
            return text
        values = {"text": text, "instruction": instruction or ""}
        return re.sub(r"\{(text|instruction)\}", lambda found: values[found.group(1)], self.pattern)  # one pass


class Precomputed:
    """Vectors computed elsewhere as an ``Embedder``: ``embeddings`` holds one (n, dim) array per instruction
    (one array for one instruction), ``answers`` one answer per text per instruction (optional), for
    ``texts`` in that order. ``explainer``: the ``InBedder`` that computed them, to name their clusters."""

    name = "precomputed embeddings"

    def __init__(
        self,
        texts: Sequence[str],
        instructions: Sequence[str],
        embeddings: Any,
        answers: Sequence[Sequence[str]] | None = None,
        explainer: Any = None,
    ) -> None:
        if isinstance(embeddings, np.ndarray) and embeddings.ndim == 2:
            embeddings = [embeddings]
        vectors = [np.asarray(e, dtype=np.float32) for e in embeddings]
        if len(vectors) != len(instructions):
            raise InputError(
                f"embeddings has {len(vectors)} arrays for {len(instructions)} instructions; give one each"
            )
        n = len(texts)
        for instruction, array in zip(instructions, vectors):
            if array.ndim != 2 or array.shape[0] != n:
                raise InputError(f"the embeddings for {instruction!r} have shape {array.shape}; expected ({n}, dim)")
        if answers is not None and (len(answers) != len(instructions) or any(len(a) != n for a in answers)):
            raise InputError(f"answers must hold {n} answers for each of the {len(instructions)} instructions")
        self.texts = list(texts)
        self.vectors = dict(zip(instructions, vectors))
        self.answers = dict(zip(instructions, [list(a) for a in answers])) if answers is not None else None
        self.explainer = explainer
        if explainer is not None:  # the model that computed them (it names their clusters)
            self.name = getattr(explainer, "name", type(explainer).__name__)

    def encode_multi(
        self, sentences: Sequence[str], instructions: Sequence[Any], options: EncodeOptions | None = None
    ) -> list:
        """The given arrays, for the texts they were given for; with ``return_generations``, the given answers
        (None for each text when none were given)."""
        options = EncodeOptions.build(options)
        if list(sentences) != self.texts:
            raise InputError("precomputed embeddings serve the texts they were computed for, in that order")
        results = []
        for instruction in instructions:
            if instruction not in self.vectors:
                raise InputError(f"no precomputed embeddings for {instruction!r}; they are for {list(self.vectors)}")
            vectors = self.vectors[instruction]
            vectors = unit_rows(vectors) if options.normalize_embeddings else vectors
            said = self.answers[instruction] if self.answers is not None else [None] * len(self.texts)
            results.append((vectors, said) if options.return_generations else vectors)
        return results

    @property
    def names_clusters(self) -> bool:
        """Whether the explainer can name their clusters."""
        return explains(self.explainer)

    def explain_clusters(
        self,
        texts: Sequence[str],
        instruction: Any,
        vectors: np.ndarray,
        assignments: np.ndarray,
        options: EncodeOptions | None = None,
    ) -> dict[int, list[str]] | None:
        """The explainer's words for the given vectors (read as they are: nothing is embedded again)."""
        if not self.names_clusters:
            return None
        return self.explainer.explain_clusters(texts, instruction, vectors, assignments, options, reread=False)
