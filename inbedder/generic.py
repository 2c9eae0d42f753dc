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
STORE_CHUNK = 1024
"""Texts per sentence-embedder call when a store is given, each call's vectors committed at once."""


def sentence_embedder_fingerprint(model: Any) -> str:
    """A loaded sentence embedder's class and weights (sampled), which its stored vectors and fitted maps record."""
    from inbedder.fingerprints import weights_fingerprint

    return f"{type(model).__qualname__}:{weights_fingerprint(model)}"


def stored_sentence_vectors(
    model: Any,
    texts: Sequence[str],
    store: Any = None,
    *,
    fingerprint: str | None = None,
    name: str = "sentence embedder",
    batch_size: int = 64,
    show_progress_bar: bool | None = False,
) -> np.ndarray:
    """(n, d) raw float32 vectors of a sentence-transformers ``model``. With a ``store`` (an
    ``inbedder.cache.EmbeddingCache``) and the model's ``fingerprint``, each distinct text is computed
    once, ever, and an interrupted call keeps every chunk of ``STORE_CHUNK`` texts it finished."""
    from tqdm.auto import tqdm

    from inbedder.fingerprints import model_label, settings_fingerprint, text_key

    if not texts:
        raise InputError("no texts to embed: give at least one")
    keys = [text_key(t) for t in texts]
    found: dict[str, tuple[np.ndarray, str]] = {}
    if store is not None:
        dtype = str(next(model.parameters()).dtype)
        settings = settings_fingerprint(sentence_embedder="raw", max_seq_length=model.max_seq_length, dtype=dtype)
        found = store.get_many(fingerprint, settings, keys)
    todo = list(dict.fromkeys(k for k in keys if k not in found))
    first = {k: i for i, k in reversed(list(enumerate(keys)))}
    chunks = range(0, len(todo), STORE_CHUNK)
    for start in tqdm(chunks, desc=name, unit="chunk", disable=not show_progress_bar or len(chunks) < 2):
        chunk = todo[start : start + STORE_CHUNK]
        vectors = model.encode([texts[first[k]] for k in chunk], batch_size=batch_size, show_progress_bar=False)
        vectors = np.asarray(vectors.float().cpu() if hasattr(vectors, "float") else vectors, dtype=np.float32)
        found.update({k: (v, "") for k, v in zip(chunk, vectors)})
        if store is not None:
            store.put_many(fingerprint, settings, model_label(name), [(k, v, "") for k, v in zip(chunk, vectors)])
    return np.stack([found[k][0] for k in keys]).astype(np.float32)


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
        self._fingerprint: str | None = None
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
        options, ``batch_size``, ``show_progress_bar``, ``normalize_embeddings``, ``return_generations``
        (no answers: None for each text) and ``cache`` (a store of ``inbedder.cache``: each filled-in text
        is embedded once, ever) apply."""
        from inbedder.cache import open_cache

        options = EncodeOptions.build(options)
        texts = check_texts(sentences)
        store = open_cache(options.cache)
        asks = "{instruction}" in self.pattern
        results, done = [], None
        for instruction in instructions:
            if done is None or asks:
                filled = [self._fill(t, q) for t, q in zip(texts, one_per_text(instruction, len(texts)))]
                vectors = stored_sentence_vectors(
                    self.model,
                    filled,
                    store,
                    fingerprint=self.fingerprint if store is not None else None,
                    name=self.name,
                    batch_size=options.batch_size,
                    show_progress_bar=options.show_progress_bar,
                )
                done = unit_rows(vectors) if options.normalize_embeddings else vectors
            results.append((done, [None] * len(texts)) if options.return_generations else done)
        return results

    @property
    def fingerprint(self) -> str:
        """The model's class and weights (sampled), computed once: its stored vectors are filed by it."""
        if self._fingerprint is None:
            self._fingerprint = sentence_embedder_fingerprint(self.model)
        return self._fingerprint

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
