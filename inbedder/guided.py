"""Guided embeddings: one instruction's space learned from a sample, applied to generic sentence embeddings.

After GSTransform (Feng et al., ACL 2025): every text is embedded once by a generic sentence
embedder (all-MiniLM-L6-v2 by default; its vectors are kept in the store, so another instruction
over the same corpus reuses them); the InBedder model answers the instruction for a seeded sample
of the texts; a small map learned on that sample takes the generic vectors into the instruction's
space. The map saves to a folder and applies without the language model, at the sentence
embedder's speed.

The maps, how each is fitted, saved and loaded: ``inbedder.guided_map`` (BENCHMARKS.md "Guided embeddings"
compares them). A ``GuidedEmbedder`` is an ``Embedder`` (``inbedder.interface``): ``cluster``, Ray
and the CLI take it as they take an ``InBedder``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inbedder.errors import InputError
from inbedder.extras import require
from inbedder.generic import sentence_embedder_fingerprint
from inbedder.guided_map import METHODS, GuidedMap, GuidedOptions, SampleAnswers, fit_projection
from inbedder.interface import explains, unit_rows
from inbedder.options import EncodeOptions

__all__ = ["METHODS", "GuidedEmbedder", "GuidedMap", "GuidedOptions", "SampleAnswers"]


class GuidedEmbedder:
    """Instruction-following embeddings at a sentence embedder's speed: a map fitted per instruction.

    An ``Embedder``: ``encode_multi(texts, instructions)`` embeds every text with the generic
    embedder once, has the InBedder model embed a seeded sample of them under each instruction,
    fits that instruction's map and applies it. The fitted maps stay in ``maps`` (by
    instruction), to ``save``; ``GuidedEmbedder.from_maps(folders)`` applies saved ones with no
    language model.

    Args:
        model: an ``InBedder`` or a model name (default: the default model), loaded on first fit
            (with ``model_options``, ``InBedder``'s keywords), after the generic embedder.
        generic: the sentence embedder: a sentence-transformers name or folder (default
            all-MiniLM-L6-v2, offline from its package), or a loaded ``SentenceTransformer``.
        options, overrides: the ``GuidedOptions`` (method, sample, dim, seed, ...).
        cache: where the generic vectors are kept (as ``InBedder``'s ``cache``: False, True or a
            path); the InBedder model's own vectors use the store its encode options name.
        dtype: the generic embedder's weights when it is loaded here by name: None for
            ``$INBEDDER_DTYPE``, else ``"auto"`` (bfloat16 on a CPU with AMX or AVX-512 BF16, 2.6
            times float32's speed for MiniLM there, cosine to float32 >= 0.996; else float32), or a
            dtype name. Its fingerprint is taken in float32, so a map applies whichever dtype the
            machine picks.
    """

    def __init__(
        self,
        model: Any = None,
        generic: Any = None,
        options: GuidedOptions | None = None,
        *,
        cache: Any = False,
        dtype: str | None = None,
        model_options: Mapping[str, Any] | None = None,
        **overrides: Any,
    ) -> None:
        require("reencode", "sentence_transformers")
        require("cluster", "sklearn")
        from inbedder.cache import open_cache
        from inbedder.reencoder import MINILM

        self.options = replace(options or GuidedOptions(), **overrides)
        self.maps: dict[Any, GuidedMap] = {}
        self.fits = True
        """False for saved maps applied as they are (``from_maps``): no language model, no new map."""
        self._model = model
        self._model_options = dict(model_options or {})
        self._generic = generic if generic is not None else MINILM
        self.generic_name = self._generic if isinstance(self._generic, str) else sentence_embedder_name(self._generic)
        self._fingerprint: str | None = None
        self.dtype = dtype
        self.cache = open_cache(cache)

    @classmethod
    def from_maps(
        cls,
        maps: GuidedMap | str | Path | Sequence[GuidedMap | str | Path],
        *,
        cache: Any = False,
        dtype: str | None = None,
    ) -> GuidedEmbedder:
        """Saved maps (``GuidedMap``s or the folders ``save`` wrote) applied as they are: each to the
        instruction it was fitted for, with the sentence embedder it was fitted on; no language model runs."""
        given = [maps] if isinstance(maps, (GuidedMap, str, Path)) else list(maps)
        loaded = [m if isinstance(m, GuidedMap) else GuidedMap.load(m) for m in given]
        if not loaded:
            raise InputError("from_maps needs at least one map")
        generics = sorted({m.generic for m in loaded})
        if len({m.generic_fingerprint for m in loaded}) > 1:
            raise InputError(f"these maps were fitted on different sentence embedders ({generics}): apply them apart")
        embedder = cls(loaded[0].model, loaded[0].generic, loaded[0].options, cache=cache, dtype=dtype)
        embedder.fits = False
        embedder.maps = {m.instruction: m for m in loaded}
        return embedder

    def __repr__(self) -> str:
        return (
            f"GuidedEmbedder(model={self.model_name!r}, generic={self.generic_name!r}, method={self.options.method!r})"
        )

    @property
    def name(self) -> str:
        """The model, the sentence embedder and the map, as a result records them."""
        how = f"{self.options.method} map, sample {self.options.sample}" if self.fits else "saved map"
        return f"{self.model_name} (guided by {self.generic_name}, {how})"

    @property
    def model_name(self) -> str:
        from inbedder.models import DEFAULT_MODEL

        return getattr(self._model, "name", None) or self._model or DEFAULT_MODEL

    @property
    def model(self) -> Any:
        """The InBedder model, loaded on first use."""
        if not self.fits:
            raise InputError("saved guided maps are applied without their language model; fit new ones to use it")
        if self._model is None or isinstance(self._model, str):
            from inbedder.embedder import InBedder

            self._model = InBedder(self._model, **self._model_options)
        return self._model

    @property
    def generic(self) -> Any:
        """The sentence embedder, loaded on first use (fingerprinted in float32, then cast to ``dtype``)."""
        if isinstance(self._generic, str):
            from inbedder.loading import default_dtype, resolve_dtype
            from inbedder.reencoder import load_sentence_embedder

            loaded = load_sentence_embedder(self._generic)
            self._fingerprint = sentence_embedder_fingerprint(loaded)
            self._generic = loaded.to(resolve_dtype(self.dtype or default_dtype(), loaded.device))
        return self._generic

    def generic_fingerprint(self) -> str:
        """The generic embedder's class and weights (sampled), which a map records and checks."""
        embedder = self.generic
        if self._fingerprint is None:
            self._fingerprint = sentence_embedder_fingerprint(embedder)
        return self._fingerprint

    def generic_vectors(self, texts: Sequence[str], show_progress_bar: bool | None = None) -> np.ndarray:
        """(n, d) unit-length vectors of the generic embedder; with a store, computed once per text."""
        from inbedder.generic import stored_sentence_vectors
        from inbedder.validation import check_texts

        vectors = stored_sentence_vectors(
            self.generic,
            check_texts(texts),
            self.cache,
            fingerprint=self.generic_fingerprint(),
            name=self.generic_name,
            show_progress_bar=show_progress_bar,
        )
        return unit_rows(vectors)

    def sample_rows(self, n: int) -> np.ndarray:
        """The seeded sample's rows of an ``n``-text corpus (all of them, when ``n`` is at most the sample size)."""
        if n <= self.options.sample:
            return np.arange(n)
        return np.sort(np.random.default_rng(self.options.seed).choice(n, self.options.sample, replace=False))

    def fit(
        self,
        sentences: Sequence[str],
        instruction: Any,
        options: EncodeOptions | None = None,
        *,
        generic_vectors: np.ndarray | None = None,
    ) -> GuidedMap:
        """Fit the map for ``instruction`` on a sample of ``sentences``; ``options`` go to the InBedder model
        (its store, batch size; with ``return_generations`` the sample's answers are kept on ``map.sample``)."""
        from inbedder.fingerprints import model_label
        from inbedder.templates import one_per_text

        texts = list(sentences)
        generic = self.generic_vectors(texts) if generic_vectors is None else np.asarray(generic_vectors, np.float32)
        if len(generic) != len(texts):
            raise InputError(f"generic_vectors has {len(generic)} rows for {len(texts)} texts")
        if len(texts) < 3:
            raise InputError(f"a guided map needs at least 3 texts to learn from, got {len(texts)}")
        rows = self.sample_rows(len(texts))
        asked = sorted(set(one_per_text(instruction, len(texts), "instruction")), key=str)
        if len(asked) > 1:
            raise InputError(
                f"a guided map is learned for one question, and these texts are asked {len(asked)} "
                f"({', '.join(map(repr, asked[:3]))}{', ...' if len(asked) > 3 else ''}): fit one map per question"
            )
        encode = EncodeOptions.build(
            options, normalize_embeddings=False, truncate_dim=None, convert_to_numpy=True, return_usage=False
        )
        result = self.model.encode([texts[i] for i in rows], asked[0], encode)
        vectors, answers = result if encode.return_generations else (result, None)
        projection, hidden = fit_projection(generic[rows], np.asarray(vectors, dtype=np.float32), self.options)
        return GuidedMap(
            instruction=asked[0],
            generic=self.generic_name,
            generic_fingerprint=self.generic_fingerprint(),
            model=model_label(self.model.name),
            model_fingerprint=self.model.fingerprint,
            options=self.options,
            projection=projection,
            hidden=hidden,
            sample=SampleAnswers(rows, np.asarray(vectors, dtype=np.float32), answers),
        )

    def transform(self, sentences: Sequence[str], guided_map: GuidedMap) -> np.ndarray:
        """A fitted or saved map applied to ``sentences`` (no language model runs)."""
        return self.transform_vectors(self.generic_vectors(sentences), guided_map)

    def transform_vectors(self, generic_vectors: np.ndarray, guided_map: GuidedMap) -> np.ndarray:
        """A map applied to this embedder's generic vectors; a map fitted on another embedder's is refused."""
        fingerprint = self.generic_fingerprint()
        if guided_map.generic_fingerprint != fingerprint:
            raise InputError(
                f"this guided map was fitted on vectors of {guided_map.generic!r} "
                f"({guided_map.generic_fingerprint}); this embedder's generic model is {self.generic_name!r} "
                f"({fingerprint}): load the map with GuidedEmbedder(generic={guided_map.generic!r})"
            )
        return guided_map.transform(generic_vectors)

    def encode(
        self,
        sentences: str | Sequence[str],
        instruction: Any = None,
        options: EncodeOptions | None = None,
        **overrides: Any,
    ) -> Any:
        """``encode_multi`` under one instruction: (n, dim), or (dim,) for one string (with its answer, given
        ``return_generations``)."""
        single = isinstance(sentences, str)
        result = self.encode_multi([sentences] if single else sentences, [instruction], options, **overrides)[0]
        if not single:
            return result
        return (result[0][0], result[1][0]) if isinstance(result, tuple) else result[0]

    def encode_multi(
        self,
        sentences: Sequence[str],
        instructions: Sequence[Any],
        options: EncodeOptions | None = None,
        **overrides: Any,
    ) -> list:
        """Each instruction's map (fitted on a sample of ``sentences``, or saved) applied to every text.

        ``options`` (``EncodeOptions``) go to the InBedder model's run over the sample; of the
        output options, ``normalize_embeddings``, ``convert_to_tensor`` and ``return_generations``
        (the sampled texts' answers, None for the others) apply here.
        """
        from inbedder.validation import check_texts

        options = EncodeOptions.build(options, **overrides)
        if isinstance(instructions, str) or not instructions:
            raise InputError(f"instructions must be a non-empty list of instructions, got {instructions!r}")
        if options.return_usage:
            raise InputError("return_usage does not apply to guided embeddings: most texts reach no language model")
        if options.truncate_dim is not None:
            raise InputError("truncate_dim applies to the model's own readouts, not to guided ones")
        texts = check_texts(sentences)
        generic = self.generic_vectors(texts, options.show_progress_bar)
        results = []
        for instruction in instructions:
            guided_map = self._map_for(texts, instruction, options, generic)
            vectors = self.transform_vectors(generic, guided_map)
            vectors = unit_rows(vectors) if options.normalize_embeddings else vectors
            result: Any = torch.from_numpy(vectors) if options.convert_to_tensor else vectors
            results.append((result, _scattered(guided_map, len(texts))) if options.return_generations else result)
        return results

    @property
    def names_clusters(self) -> bool:
        """Whether its maps' clusters can be named: fitted here, by a model that names its own (one given by
        name is an ``InBedder``, which does; it is not loaded to ask)."""
        model = self._model
        return self.fits and (model is None or isinstance(model, str) or explains(model))

    def explain_clusters(
        self,
        texts: Sequence[str],
        instruction: Any,
        vectors: np.ndarray,
        assignments: np.ndarray,
        options: EncodeOptions | None = None,
    ) -> dict[int, list[str]] | None:
        """LM-head words per cluster, from the InBedder model's vectors of the sampled members (``Explains``);
        None for a saved map (no model) or a model that cannot name its clusters."""
        guided_map = self.maps.get(instruction)
        if not self.names_clusters or guided_map is None or guided_map.sample is None:
            return None
        rows = guided_map.sample.rows
        sampled = [texts[row] for row in rows]
        sample_vectors, sample_assignments = guided_map.sample.vectors, np.asarray(assignments)[rows]
        return self.model.explain_clusters(sampled, instruction, sample_vectors, sample_assignments, options)

    def _map_for(self, texts: list[str], instruction: Any, options: EncodeOptions, generic: np.ndarray) -> GuidedMap:
        """The instruction's saved map, or a map fitted now (kept in ``maps``)."""
        if self.fits:
            if instruction is None:
                raise InputError("guided embeddings need an instruction: the map is learned per question")
            fitted = self.fit(texts, instruction, options, generic_vectors=generic)
            self.maps[fitted.instruction] = fitted
            return fitted
        if instruction is None and len(self.maps) == 1:
            return next(iter(self.maps.values()))
        if instruction not in self.maps:
            fitted_for = " or ".join(repr(q) for q in self.maps)
            raise InputError(f"the saved map was fitted for {fitted_for}, not {instruction!r}")
        return self.maps[instruction]


def _scattered(guided_map: GuidedMap, n: int) -> list[Any]:
    """One answer per text: the sampled texts' answers where the model gave them, None for the others."""
    sample = guided_map.sample
    if sample is None or sample.answers is None:
        raise InputError("a saved guided map runs no language model, so there are no answers to return")
    said: list[Any] = [None] * n
    for row, answer in zip(sample.rows, sample.answers):
        said[row] = answer
    return said


def sentence_embedder_name(model: Any) -> str:
    """A loaded sentence embedder's name, as ``load_sentence_embedder`` takes it: a known name for the
    models inbedder finds offline, else the folder or hub id it was loaded from, else its class."""
    from inbedder.reencoder import MINILM, SENTENCE_EMBEDDERS, minilm_path

    source = getattr(getattr(model, "tokenizer", None), "name_or_path", None)
    if not source:
        return type(model).__name__
    if Path(source).resolve() == Path(minilm_path()).resolve():
        return MINILM
    return next((name for name in SENTENCE_EMBEDDERS if source.lower().endswith(name.lower())), str(source))
