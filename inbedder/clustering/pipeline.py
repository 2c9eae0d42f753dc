"""Personalized clustering: one corpus, clustered under each instruction, every cluster explained."""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.cluster import HDBSCAN, KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import silhouette_score, v_measure_score

from inbedder.cache import FILE_NAME
from inbedder.clustering.explain import composition, ctfidf_keywords, representatives
from inbedder.clustering.result import NOISE, ClusteringResult, ClusterSummary, InstructionClustering
from inbedder.errors import InputError
from inbedder.guided import GuidedEmbedder, GuidedOptions, SampleAnswers
from inbedder.options import EncodeOptions
from inbedder.postprocess import postprocess
from inbedder.readout import HeadReadout

METHODS = ("kmeans", "hdbscan")
MAPS = ("auto", "pca", "umap")
AUTO_K = range(2, 11)
PRECOMPUTED = "precomputed embeddings"
"""The model name a result records when it was given embeddings and no model."""


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
    guided: bool | GuidedOptions = False,
    sample: int | None = None,
    generic: Any = None,
) -> ClusteringResult:
    """Cluster ``texts`` once per instruction and explain each cluster.

    Args:
        texts: the corpus.
        instructions: one question or several; each clusters the corpus its own way.
        model: an ``InBedder`` (or a model name; default: the default model). Not needed with
            ``embeddings``; given, it still post-processes them and names the LM-head tokens.
        options: how the model encodes (``EncodeOptions``: ``batch_size``, ``max_new_tokens`` of
            the answers the keywords come from, ``show_progress_bar``, ...); answers are always
            generated, and the model's post-processing applies to the whole corpus.
        k: the number of k-means clusters, or ``"auto"`` to pick it by silhouette over 2..10.
        clusterer: ``"kmeans"`` (seeded, with ``k``), ``"hdbscan"`` (finds its own number and may
            leave noise points), or any object with scikit-learn's ``fit_predict`` (``HDBSCAN(
            min_cluster_size=10)``, ``AgglomerativeClustering(5)``, ...), copied afresh for each
            instruction; a label of -1 is noise.
        reducer: the 2-D map: ``"auto"`` (UMAP when umap-learn is installed, else PCA),
            ``"pca"``, ``"umap"``, or any object with ``fit_transform`` to two columns.
        labels: known labels per text, by column name: each cluster's composition,
            purity and entropy, and the v-measure of each clustering.
        ids: an id per text for the assignments table (default: the row number).
        work_dir: keeps the embeddings and answers in ``WORK_DIR/embeddings.sqlite`` (the
            persistent cache, see ``inbedder.cache``) as each batch finishes: an interrupted run
            loses at most one batch, and a rerun with the same texts, model weights and settings
            does no model work.
        cache: the store to use instead (True: the shared store under ``$INBEDDER_CACHE``; a path).
        embeddings, answers: vectors computed elsewhere, one (n, dim) array per instruction, as
            BERTopic's ``fit_transform(docs, embeddings=...)`` takes them; with them no model
            runs. Without ``answers`` the keywords come from the texts themselves.
        guided, sample, generic: cluster guided embeddings (``inbedder.guided``): a generic
            sentence embedder (``generic``, default all-MiniLM-L6-v2) embeds every text, the model
            answers each instruction for a seeded sample of ``sample`` texts (default 2,000), and a
            map learned from them places every text; ``guided`` may be ``GuidedOptions``. Keywords
            and LM-head tokens then come from each cluster's sampled members.
    """
    instructions = [instructions] if isinstance(instructions, str) else list(instructions)
    texts = list(texts)
    explain: list[np.ndarray] | None = None
    samples: list[SampleAnswers | None] = [None] * len(instructions)
    check_inputs(texts, instructions, k, clusterer, reducer, labels, ids)
    guided_options = _guided_options(guided, sample, embeddings)
    guided_note = ""
    if embeddings is not None:
        states, said = _precomputed(embeddings, answers, instructions, len(texts))
        if isinstance(model, str):
            model = _load(model)
    else:
        if answers is not None:
            raise InputError("answers come with embeddings; without embeddings the model generates them")
        model = _load(model) if model is None or isinstance(model, str) else model
        store = cache if cache is not None else (Path(work_dir) / FILE_NAME if work_dir is not None else None)
        options = EncodeOptions.build(
            options,
            postprocess="none",  # post-processed below, the same way for given embeddings
            return_generations=True,
            return_usage=False,
            **({"cache": store} if store is not None else {}),
        )
        if guided_options is not None:
            states, said, samples, generic_name = _guided(texts, instructions, model, options, guided_options, generic)
            shown = min(guided_options.sample, len(texts))
            guided_note = f" (guided by {generic_name}, {guided_options.method} map, sample {shown})"
        else:
            states, said, explain = _embed(texts, instructions, model, options)
    reads_last = model is not None and model.readout.layer_index(model.num_layers) == model.num_layers
    post = model.postprocess if model is not None and guided_options is None else "none"
    map_name, project = _mapper(reducer, seed)
    method = clusterer if isinstance(clusterer, str) else type(clusterer).__name__
    head = model if reads_last else None
    clusterings = []
    for number, (instruction, raw, generated) in enumerate(zip(instructions, states, said)):
        space = postprocess(torch.from_numpy(raw), post).numpy()
        try:
            assignments, k_used = _assign(space, k, clusterer, seed)
        except ValueError as err:
            raise InputError(f"{instruction!r}: {err}") from None
        distances = _centroid_distances(space, assignments)
        clusterings.append(
            InstructionClustering(
                instruction=instruction,
                assignments=assignments.astype(np.int64),
                distances=distances,
                coords=np.asarray(project(space), dtype=np.float32),
                answers=generated if generated is not None else [""] * len(texts),
                clusters=_summaries(
                    raw,
                    assignments,
                    distances,
                    generated if generated is not None else texts,
                    texts,
                    labels or {},
                    head,
                    top_keywords,
                    top_examples,
                    instruction,
                    explain[number] if explain is not None else None,
                    samples[number],
                ),
                method=method,
                k=k_used,
                lm_head_note=None if head is not None else _no_head_note(model),
                v_measure={
                    name: float(v_measure_score([str(v) for v in values], assignments))
                    for name, values in (labels or {}).items()
                },
            )
        )
    return ClusteringResult(
        texts=texts,
        ids=[str(i) for i in (ids if ids is not None else range(len(texts)))],
        model=(model.name if model is not None else PRECOMPUTED) + guided_note,
        map_method=map_name,
        clusterings=clusterings,
        labels={name: [str(v) for v in values] for name, values in (labels or {}).items()},
    )


def _embed(
    texts: list[str], instructions: list[str], model: Any, options: EncodeOptions
) -> tuple[list[np.ndarray], list[list[str] | None], list[np.ndarray] | None]:
    """The model's vectors and answers per instruction, and (for a projected head) the full head
    distributions its clusters are named from."""
    explain = None
    with contextlib.ExitStack() as scratch:
        kind = model.readout.kind
        explained_by = kind.of if isinstance(kind, HeadReadout) and kind.dim else None  # a projected head
        if explained_by and options.cache is None:  # the states' second read must come from a store
            options = replace(options, cache=Path(scratch.enter_context(tempfile.TemporaryDirectory())))
        results = model.encode_multi(texts, instructions, options)
        states = [np.asarray(vectors, dtype=np.float32) for vectors, _ in results]
        said: list[list[str] | None] = [list(generated) for _, generated in results]
        if explained_by:  # a projected head: its clusters' words come from the full distribution of the states
            plain = replace(options, readout=explained_by, return_generations=False, show_progress_bar=False)
            explain = [np.asarray(v, dtype=np.float32) for v in model.encode_multi(texts, instructions, plain)]
    return states, said, explain


def _guided_options(guided: bool | GuidedOptions, sample: int | None, embeddings: Any) -> GuidedOptions | None:
    if guided is False or guided is None:
        if sample is not None:
            raise InputError(f"sample={sample} applies to guided clustering only (guided=True)")
        return None
    if embeddings is not None:
        raise InputError("guided clustering computes its own embeddings; give embeddings or guided, not both")
    options = guided if isinstance(guided, GuidedOptions) else GuidedOptions()
    return replace(options, sample=sample) if sample is not None else options


def _guided(
    texts: list[str],
    instructions: list[str],
    model: Any,
    options: EncodeOptions,
    guided: GuidedOptions,
    generic: Any,
) -> tuple[list[np.ndarray], list[list[str] | None], list[SampleAnswers | None], str]:
    """Guided vectors per instruction; answers for the sampled texts ("" for the others); the generic embedder."""
    embedder = GuidedEmbedder(model, generic, guided, cache=options.cache if options.cache is not None else False)
    generic_vectors = embedder.generic_vectors(texts, options.show_progress_bar)
    states, said, samples = [], [], []
    for instruction in instructions:
        fitted = embedder.fit(texts, instruction, options, generic_vectors=generic_vectors)
        sampled = fitted.sample
        assert sampled is not None and sampled.answers is not None
        answers = [""] * len(texts)
        for row, answer in zip(sampled.rows, sampled.answers):
            answers[row] = answer
        states.append(fitted.transform(generic_vectors))
        said.append(answers)
        samples.append(sampled)
    return states, said, samples, embedder.generic_name


def _load(name: str | None) -> Any:
    from inbedder.embedder import InBedder

    return InBedder(name)


def _no_head_note(model: Any) -> str:
    if model is None:
        return "LM-head tokens need the model that computed the embeddings"
    return "LM-head tokens need a readout at the last layer"


def _precomputed(
    embeddings: Sequence[Any], answers: Sequence[Sequence[str]] | None, instructions: list[str], n: int
) -> tuple[list[np.ndarray], list[list[str] | None]]:
    """The given vectors (and answers) checked: one (n, dim) array (and n answers) per instruction."""
    if isinstance(embeddings, np.ndarray) and embeddings.ndim == 2:
        embeddings = [embeddings]
    states = [np.asarray(e, dtype=np.float32) for e in embeddings]
    if len(states) != len(instructions):
        raise InputError(f"embeddings has {len(states)} arrays for {len(instructions)} instructions; give one each")
    for instruction, array in zip(instructions, states):
        if array.ndim != 2 or array.shape[0] != n:
            raise InputError(f"the embeddings for {instruction!r} have shape {array.shape}; expected ({n}, dim)")
    if answers is None:
        return states, [None] * len(states)
    said = [list(a) for a in answers]
    if len(said) != len(instructions) or any(len(a) != n for a in said):
        raise InputError(f"answers must hold {n} answers for each of the {len(instructions)} instructions")
    return states, said


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


def _distribution_shifts(model: Any, states: np.ndarray, assignments: np.ndarray, ids: list[int]) -> np.ndarray:
    """(clusters, vocabulary): each cluster's mean head distribution (square roots) minus the corpus mean,
    a block of states at a time, so memory holds k vocabulary-sized rows, not n."""
    sums, total = np.zeros((len(ids), 0)), None
    for start in range(0, len(states), 1024):
        full = model.head(torch.as_tensor(states[start : start + 1024])).numpy()
        block = assignments[start : start + 1024]
        if total is None:
            sums, total = np.zeros((len(ids), full.shape[1])), np.zeros(full.shape[1])
        total += full.sum(0)
        for row, c in enumerate(ids):
            sums[row] += full[block == c].sum(0)
    counts = np.array([(assignments == c).sum() for c in ids], dtype=np.float64)[:, None]
    return (sums / counts - total / len(states)).astype(np.float32)


def _head_tokens(
    head: Any,
    raw: np.ndarray,
    assignments: np.ndarray,
    ids: list[int],
    states: np.ndarray | None,
    sample: SampleAnswers | None,
) -> dict[int, list[str]]:
    """Each cluster's LM-head words: what its members' vectors (or head distributions) hold more than the corpus's."""
    if sample is not None:  # guided vectors are not the model's: read its vectors of the sampled members
        raw, assignments = sample.vectors, assignments[sample.rows]
        ids = [c for c in ids if (assignments == c).any()]
    if not ids:
        return {}
    if states is None:
        shifts = np.stack([raw[assignments == c].mean(0) - raw.mean(0) for c in ids])
    else:
        shifts = _distribution_shifts(head, states, assignments, ids)
    return dict(zip(ids, head.top_tokens(shifts)))


def _summaries(
    raw: np.ndarray,
    assignments: np.ndarray,
    distances: np.ndarray,
    answers: list[str],
    texts: list[str],
    labels: Mapping[str, Sequence[str]],
    head: Any,
    top_keywords: int,
    top_examples: int,
    instruction: str,
    states: np.ndarray | None = None,
    sample: SampleAnswers | None = None,
) -> list[ClusterSummary]:
    """A card per cluster, largest first, noise last; LM-head tokens when ``head`` is given (from the
    full head distribution of ``states``, when the vectors are a projection of it; from the model's
    vectors of the sampled texts, for guided vectors)."""
    ids = sorted(set(assignments.tolist()) - {NOISE}, key=lambda c: (-(assignments == c).sum(), c))
    keywords = ctfidf_keywords(answers, assignments, ids, top_keywords, exclude=instruction)
    head_tokens = _head_tokens(head, raw, assignments, ids, states, sample) if head is not None else {}
    summaries = []
    for c in ids + ([NOISE] if (assignments == NOISE).any() else []):
        members = np.flatnonzero(assignments == c)
        nearest = members[:top_examples] if c == NOISE else representatives(distances, assignments, c, top_examples)
        summary = ClusterSummary(
            cluster=int(c),
            size=len(members),
            keywords=keywords.get(c, []),
            lm_head_tokens=head_tokens.get(c),
            examples=[texts[i] for i in nearest],
        )
        for name, values in labels.items():
            counts, purity, entropy = composition([str(values[i]) for i in members])
            summary.composition[name], summary.purity[name], summary.entropy[name] = counts, purity, entropy
        summaries.append(summary)
    return summaries
