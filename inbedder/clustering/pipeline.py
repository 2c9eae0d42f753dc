"""Personalized clustering: one corpus, clustered under each instruction, every cluster explained."""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.cluster import HDBSCAN, KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import silhouette_score, v_measure_score

from inbedder.cache import FILE_NAME
from inbedder.clustering.explain import composition, ctfidf_keywords, representatives
from inbedder.clustering.result import NOISE, ClusteringResult, ClusterSummary, InstructionClustering
from inbedder.errors import InputError
from inbedder.generic import Precomputed
from inbedder.interface import Embedder, explains
from inbedder.options import EncodeOptions

METHODS = ("kmeans", "hdbscan")
MAPS = ("auto", "pca", "umap")
AUTO_K = range(2, 11)


def cluster(
    texts: Sequence[str],
    instructions: str | Sequence[str],
    model: Any = None,
    options: EncodeOptions | None = None,
    *,
    k: int | str = "auto",
    clusterer: str | Any = "kmeans",
    reducer: str | Any = "auto",
    labels: Mapping[str, Sequence[str]] | None = None,
    ids: Sequence[Any] | None = None,
    seed: int = 0,
    top_keywords: int = 8,
    top_examples: int = 3,
    work_dir: str | Path | None = None,
    cache: Any = None,
    embeddings: Sequence[Any] | None = None,
    answers: Sequence[Sequence[str]] | None = None,
) -> ClusteringResult:
    """Cluster ``texts`` once per instruction and explain each cluster.

    Args:
        texts: the corpus.
        instructions: one question or several; each clusters the corpus its own way.
        model: any ``Embedder`` (``inbedder.interface``): an ``InBedder``, a ``GuidedEmbedder``,
            a ``SentenceEmbedder``, ``Precomputed`` vectors; or a model name (default: the default
            model). One that ``explains`` names each cluster with LM-head words.
        options: how the model encodes (``EncodeOptions``); answers are always asked for (the keywords).
        k: the number of k-means clusters, or ``"auto"`` to pick it by silhouette over 2..10.
        clusterer: ``"kmeans"`` (seeded), ``"hdbscan"`` (may leave noise: -1), or an object with
            scikit-learn's ``fit_predict``, copied afresh per instruction.
        reducer: the 2-D map: ``"auto"`` (UMAP when umap-learn is installed, else PCA), ``"pca"``,
            ``"umap"``, or any object with ``fit_transform`` to two columns.
        labels, ids: known labels per text, by column name (composition, purity, entropy, v-measure);
            an id per text for the assignments table (default: the row number).
        work_dir, cache: a store for the vectors and answers, ``WORK_DIR/embeddings.sqlite`` or ``cache``
            (True: ``$INBEDDER_CACHE``'s): an interrupted run loses one batch, a rerun does no model work.
        embeddings, answers: vectors computed elsewhere, one (n, dim) array per instruction, as BERTopic
            takes them (``Precomputed``; ``model`` names their clusters if it can). Without ``answers`` the
            keywords come from the texts.
    """
    texts, instructions = list(texts), [instructions] if isinstance(instructions, str) else list(instructions)
    check_inputs(texts, instructions, k, clusterer, reducer, labels, ids)
    embedder = _embedder(texts, instructions, model, embeddings, answers)
    map_name, project = _mapper(reducer, seed)
    how = _How(k, clusterer, seed, top_keywords, top_examples, labels or {}, project)
    with contextlib.ExitStack() as scratch:
        options = _options(options, embedder, work_dir, cache, scratch)
        results = embedder.encode_multi(texts, instructions, options)
        clusterings = [
            _clustering(texts, q, result, embedder, options, how) for q, result in zip(instructions, results)
        ]
    return ClusteringResult(
        texts=texts,
        ids=[str(i) for i in (ids if ids is not None else range(len(texts)))],
        model=embedder.name,
        map_method=map_name,
        clusterings=clusterings,
        labels={name: [str(v) for v in values] for name, values in (labels or {}).items()},
    )


@dataclass(frozen=True)
class _How:
    """How each instruction's clustering is made and explained (``cluster``'s arguments)."""

    k: int | str
    clusterer: str | Any
    seed: int
    top_keywords: int
    top_examples: int
    labels: Mapping[str, Sequence[str]]
    project: Callable[[np.ndarray], Any]


def _embedder(texts: list[str], instructions: list[str], model: Any, embeddings: Any, answers: Any) -> Embedder:
    """The embedder ``cluster`` runs: ``model`` (loaded by name), or the given vectors (``model`` explaining them)."""
    if embeddings is None and answers is not None:
        raise InputError("answers come with embeddings; without embeddings the model generates them")
    if model is None and embeddings is None or isinstance(model, str):
        from inbedder.embedder import InBedder

        model = InBedder(model)
    if embeddings is not None:
        return Precomputed(texts, instructions, embeddings, answers, explainer=model)
    if not isinstance(model, Embedder):
        raise InputError(f"model must be an Embedder (with encode_multi) or a model name, got {type(model).__name__}")
    return model


def _options(
    options: EncodeOptions | None, embedder: Embedder, work_dir: Any, cache: Any, scratch: contextlib.ExitStack
) -> EncodeOptions:
    """The options of the run: answers asked for, and a store (the given one, ``work_dir``'s, or a scratch
    one when the embedder reads its vectors again to explain them)."""
    store = cache if cache is not None else (Path(work_dir) / FILE_NAME if work_dir is not None else None)
    options = EncodeOptions.build(options, return_generations=True, return_usage=False)
    if store is None and options.cache is None and explains(embedder):
        store = Path(scratch.enter_context(tempfile.TemporaryDirectory()))
    return replace(options, cache=store) if store is not None else options


def _clustering(
    texts: list[str], instruction: str, result: Any, embedder: Embedder, options: EncodeOptions, how: _How
) -> InstructionClustering:
    """One instruction's clusters, explained: keywords from the answers (or the texts), LM-head words."""
    vectors, said = result
    space = np.asarray(vectors, dtype=np.float32)
    answered = any(a for a in said)
    try:
        assignments, k_used = _assign(space, how.k, how.clusterer, how.seed)
    except ValueError as err:
        raise InputError(f"{instruction!r}: {err}") from None
    distances = _centroid_distances(space, assignments)
    words = embedder.explain_clusters(texts, instruction, space, assignments, options) if explains(embedder) else None
    note = None
    if words is None:
        need = "a readout at the last layer" if explains(embedder) else "the model that computed the embeddings"
        note = f"LM-head tokens need {need}"
    answers = ["" if a is None else a for a in said] if answered else texts
    return InstructionClustering(
        instruction=instruction,
        assignments=assignments.astype(np.int64),
        distances=distances,
        coords=np.asarray(how.project(space), dtype=np.float32),
        answers=answers if answered else [""] * len(texts),
        clusters=_summaries(assignments, distances, answers, texts, how, instruction, words or {}),
        method=how.clusterer if isinstance(how.clusterer, str) else type(how.clusterer).__name__,
        k=k_used,
        lm_head_note=note,
        v_measure={
            name: float(v_measure_score([str(v) for v in values], assignments)) for name, values in how.labels.items()
        },
    )


def check_map(reducer: str | Any) -> None:
    """Refuse a map that is unknown, that needs a package not installed, or an object that cannot map."""
    if not isinstance(reducer, str):
        if not callable(getattr(reducer, "fit_transform", None)):
            raise InputError(f"reducer must be one of {list(MAPS)} or an object with fit_transform, got {reducer!r}")
        return
    if reducer not in MAPS:
        raise InputError(f"unknown map {reducer!r}; choose one of {list(MAPS)}")
    if reducer == "umap" and importlib.util.find_spec("umap") is None:
        raise ImportError("map 'umap' needs umap-learn (pip install umap-learn); or use 'pca' or 'auto'")


def check_inputs(
    texts: list[str],
    instructions: list[str],
    k: int | str,
    clusterer: str | Any,
    reducer: str | Any,
    labels: Mapping[str, Sequence[str]] | None,
    ids: Sequence[Any] | None,
) -> None:
    """Refuse bad arguments to ``cluster`` before any model work, naming the value."""
    if not texts:
        raise InputError("the corpus is empty: there is nothing to cluster")
    if not instructions or any(not isinstance(i, str) or not i.strip() for i in instructions):
        raise InputError(f"instructions must be non-empty strings, got {instructions!r}")
    if len(set(instructions)) != len(instructions):
        raise InputError(f"instructions repeat: {instructions!r}")
    if isinstance(clusterer, str) and clusterer not in METHODS:
        raise InputError(f"unknown clustering method {clusterer!r}; choose one of {list(METHODS)}")
    if not isinstance(clusterer, str) and not callable(getattr(clusterer, "fit_predict", None)):
        raise InputError(f"clusterer must be one of {list(METHODS)} or an object with fit_predict, got {clusterer!r}")
    check_map(reducer)
    if k != "auto":
        if isinstance(k, bool) or not isinstance(k, int) or k < 2:
            raise InputError(f"k must be an int of at least 2 or 'auto', got {k!r}")
        if k > len(texts):
            raise InputError(f"k={k} is larger than the number of texts ({len(texts)})")
        if clusterer != "kmeans":
            raise InputError(f"k={k} is for k-means; {_name(clusterer)} finds the number of clusters itself")
    if len(texts) < 3:
        raise InputError(f"clustering needs at least 3 texts, got {len(texts)}")
    if len(set(texts)) < 2:
        raise InputError(f"all {len(texts)} texts are the same text: there is nothing to cluster")
    for name, values in (labels or {}).items():
        if len(values) != len(texts):
            raise InputError(f"label column {name!r} has {len(values)} values for {len(texts)} texts")
    if ids is not None and len(ids) != len(texts):
        raise InputError(f"ids has {len(ids)} values for {len(texts)} texts")
    if ids is not None:
        first: dict[str, int] = {}
        for row, value in enumerate(map(str, ids), start=1):
            if value in first:
                raise InputError(f"id {value!r} of row {row} repeats row {first[value]}'s; every text needs its own id")
            first[value] = row


def _name(part: str | Any) -> str:
    return {"hdbscan": "HDBSCAN"}.get(part, part) if isinstance(part, str) else type(part).__name__


def _fresh(part: Any) -> Any:
    """A new, unfitted copy of a scikit-learn-style part (each instruction fits its own)."""
    from sklearn.base import clone

    try:
        return clone(part)
    except TypeError:  # not a scikit-learn estimator: a deep copy, so the caller's object stays unfitted
        return copy.deepcopy(part)


def _assign(space: np.ndarray, k: int | str, clusterer: str | Any, seed: int) -> tuple[np.ndarray, int]:
    """Cluster ids per row (NOISE for noise) and the number of clusters."""
    if clusterer != "kmeans":
        model = HDBSCAN(min_cluster_size=min(5, len(space)), copy=True) if clusterer == "hdbscan" else _fresh(clusterer)
        found = np.asarray(model.fit_predict(space)).astype(np.int64)
        if found.shape != (len(space),):
            raise InputError(f"{_name(clusterer)}.fit_predict gave {found.shape} labels for {len(space)} texts")
        kept = sorted(set(found.tolist()) - {NOISE})
        if not kept:
            hint = " (lower min_cluster_size, or cluster with k-means)" if isinstance(model, HDBSCAN) else ""
            raise InputError(f"{_name(clusterer)} found no cluster among {len(space)} texts: every one is noise{hint}")
        number = {c: i for i, c in enumerate(kept)}  # clusters numbered 0..k-1, noise kept as it is
        return np.array([number.get(c, NOISE) for c in found.tolist()], dtype=np.int64), len(kept)
    distinct = len(np.unique(space.round(6), axis=0))
    if distinct < (2 if k == "auto" else k):
        wanted = "2 for k='auto'" if k == "auto" else f"k={k}"
        raise InputError(
            f"only {distinct} distinct embedding(s) among {len(space)} texts under this instruction: the model "
            f"sees them as the same, and k-means needs at least {wanted}; ask another question or lower k"
        )
    if k == "auto":
        candidates = [c for c in AUTO_K if c < min(len(space), distinct + 1)]
        fits = {c: KMeans(c, n_init=10, random_state=seed).fit_predict(space) for c in candidates}
        sample = min(len(space), 2000)
        scores = {c: silhouette_score(space, a, sample_size=sample, random_state=seed) for c, a in fits.items()}
        best = max(scores, key=scores.get)
        return fits[best], best
    return KMeans(k, n_init=10, random_state=seed).fit_predict(space), k


def _mapper(reducer: str | Any, seed: int) -> tuple[str, Any]:
    """The map's name and a function from (n, dim) states to (n, 2) coordinates."""
    if not isinstance(reducer, str):
        name = type(reducer).__name__
        return name, lambda x: _two_columns(_fresh(reducer).fit_transform(x), len(x), name)
    if reducer in ("auto", "umap"):
        try:
            import umap  # type: ignore[import-not-found]
        except ImportError:
            if reducer == "umap":
                raise ImportError("reducer='umap' needs umap-learn: pip install umap-learn") from None
        else:
            return "UMAP", lambda x: umap.UMAP(n_components=2, random_state=seed).fit_transform(x)
    return "PCA", lambda x: PCA(n_components=2, random_state=seed).fit_transform(x)


def _two_columns(coords: Any, rows: int, name: str) -> np.ndarray:
    """A user's reducer's output, checked to be the (rows, 2) map at once (not when the result is saved)."""
    coords = np.asarray(coords, dtype=np.float32)
    if coords.shape != (rows, 2):
        raise InputError(f"the reducer {name} gave an array of shape {coords.shape}; the map needs ({rows}, 2)")
    return coords


def _centroid_distances(space: np.ndarray, assignments: np.ndarray) -> np.ndarray:
    """Each text's distance to its cluster's mean; NaN for noise."""
    distances = np.full(len(space), np.nan)
    for c in set(assignments.tolist()) - {NOISE}:
        members = assignments == c
        distances[members] = np.linalg.norm(space[members] - space[members].mean(0), axis=1)
    return distances


def _summaries(
    assignments: np.ndarray,
    distances: np.ndarray,
    answers: list[str],
    texts: list[str],
    how: _How,
    instruction: str,
    head_words: Mapping[int, list[str]],
) -> list[ClusterSummary]:
    """A card per cluster, largest first, noise last, with its LM-head words where the embedder gave them."""
    ids = sorted(set(assignments.tolist()) - {NOISE}, key=lambda c: (-(assignments == c).sum(), c))
    keywords = ctfidf_keywords(answers, assignments, ids, how.top_keywords, exclude=instruction)
    summaries = []
    for c in ids + ([NOISE] if (assignments == NOISE).any() else []):
        members = np.flatnonzero(assignments == c)
        examples = how.top_examples
        nearest = members[:examples] if c == NOISE else representatives(distances, assignments, c, examples)
        summary = ClusterSummary(
            cluster=int(c),
            size=len(members),
            keywords=keywords.get(c, []),
            lm_head_tokens=head_words.get(c) if head_words else None,
            examples=[texts[i] for i in nearest],
        )
        for name, values in how.labels.items():
            counts, purity, entropy = composition([str(values[i]) for i in members])
            summary.composition[name], summary.purity[name], summary.entropy[name] = counts, purity, entropy
        summaries.append(summary)
    return summaries
