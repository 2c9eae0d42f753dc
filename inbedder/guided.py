"""Guided embeddings: one instruction's space learned from a sample, applied to generic sentence embeddings.

After GSTransform (Feng et al., ACL 2025): every text is embedded once by a generic sentence
embedder (all-MiniLM-L6-v2 by default; its vectors are kept in the store, so another instruction
over the same corpus reuses them); the InBedder model answers the instruction for a seeded sample
of the texts; a small map learned on that sample takes the generic vectors into the instruction's
space. The map saves to a folder and applies without the language model, at the sentence
embedder's speed.

Maps (``GuidedOptions.method``; BENCHMARKS.md "Guided embeddings" compares them):

- ``ridge`` (the default, best on the local suite): ridge regression from the generic vectors
  onto the leading principal components of the InBedder vectors;
- ``contrastive``: a linear projection trained so that texts in the same answer cluster (k-means
  of the InBedder vectors) come together (InfoNCE over same-cluster pairs), with a reconstruction
  term that keeps what the generic embedding knows;
- ``gstransform``: GSTransform's recipe: a two-layer encoder, a margin contrastive loss over the
  answer clusters and a reconstruction loss;
- ``concat``: the control: the generic vector beside the ridge map's (each unit length).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inbedder.errors import InputError, check_positive_int
from inbedder.extras import require
from inbedder.options import EncodeOptions

METHODS = ("ridge", "contrastive", "gstransform", "concat")
SETTINGS_FILE = "guided.json"
WEIGHTS_FILE = "map.safetensors"
GENERIC_BATCH = 1024
"""Texts per sentence-embedder call, each call's vectors stored at once."""


@dataclass(frozen=True)
class GuidedOptions:
    """How a guided map is fitted.

    Attributes:
        method: the map (see the module's docstring).
        sample: texts the InBedder model embeds (a seeded sample; the whole corpus if smaller).
        dim: numbers per vector (at most; ridge gives at most one fewer than the sample size).
        clusters: answer clusters for the contrastive maps (None: about sqrt(sample / 2), 2 to 50).
        steps, learning_rate, temperature, margin, reconstruction: the training of the
            contrastive maps: full-batch Adam steps, InfoNCE temperature (``contrastive``), cosine
            margin between clusters (``gstransform``) and the reconstruction loss's weight.
        seed: the sample, the clusters and the training.
    """

    method: str = "ridge"
    sample: int = 2000
    dim: int = 256
    clusters: int | None = None
    steps: int = 300
    learning_rate: float = 1e-3
    temperature: float = 0.1
    margin: float = 0.3
    reconstruction: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InputError(f"unknown guided method {self.method!r}; choose one of {list(METHODS)}")
        for name in ("sample", "dim", "steps"):
            check_positive_int(name, getattr(self, name))
        if self.sample < 3:
            raise InputError(f"sample must be at least 3 texts, got {self.sample}")
        if self.clusters is not None and (isinstance(self.clusters, bool) or self.clusters < 2):
            raise InputError(f"clusters must be an int of at least 2 or None, got {self.clusters!r}")


class Projection(torch.nn.Module):
    """The map: generic vectors (centred) through a linear layer or a two-layer encoder; with
    ``keep_input``, the generic vector (unit length) beside the result (unit length)."""

    def __init__(self, input_dim: int, dim: int, hidden: int | None = None, keep_input: bool = False) -> None:
        super().__init__()
        self.register_buffer("center", torch.zeros(input_dim))
        self.encoder: torch.nn.Module = (
            torch.nn.Linear(input_dim, dim)
            if hidden is None
            else torch.nn.Sequential(torch.nn.Linear(input_dim, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, dim))
        )
        self.keep_input = keep_input

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        mapped = self.encoder(vectors - self.center)
        if not self.keep_input:
            return mapped
        unit = torch.nn.functional.normalize
        return torch.cat([unit(vectors, dim=-1), unit(mapped, dim=-1)], dim=-1)


@dataclass
class SampleAnswers:
    """What the InBedder model said about the sampled texts: their rows, raw vectors and answers."""

    rows: np.ndarray
    vectors: np.ndarray
    answers: list[Any] | None = None


@dataclass
class GuidedMap:
    """A fitted map from one sentence embedder's vectors to one instruction's space.

    ``save(folder)`` writes its settings (``guided.json``: the instruction, the generic embedder's
    name and fingerprint, the InBedder model's name and fingerprint, the options) and weights
    (``map.safetensors``); ``GuidedMap.load(folder)`` reads them back. ``sample`` (the InBedder
    model's vectors and answers for the sampled texts) is kept only in memory.
    """

    instruction: str | None
    generic: str
    generic_fingerprint: str
    model: str
    model_fingerprint: str
    options: GuidedOptions
    projection: Projection
    hidden: int | None = None
    sample: SampleAnswers | None = field(default=None, repr=False, compare=False)

    @property
    def input_dim(self) -> int:
        return int(self.projection.center.shape[0])

    @property
    def dimension(self) -> int:
        """Numbers per vector the map gives."""
        with torch.no_grad():
            return int(self.projection(torch.zeros(1, self.input_dim)).shape[-1])

    @torch.no_grad()
    def transform(self, generic_vectors: Any) -> np.ndarray:
        """The map applied to generic vectors (n, input_dim): (n, dimension) float32."""
        vectors = torch.as_tensor(np.asarray(generic_vectors, dtype=np.float32))
        if vectors.ndim != 2 or vectors.shape[1] != self.input_dim:
            raise InputError(
                f"this guided map takes vectors of {self.input_dim} numbers from {self.generic!r}; "
                f"got an array of shape {tuple(vectors.shape)}"
            )
        return self.projection(vectors).numpy().astype(np.float32)

    def save(self, folder: str | Path) -> Path:
        """Write the map into ``folder`` (replaced whole, or not at all if the write fails)."""
        from safetensors.torch import save_file

        from inbedder.tables import atomic_folder

        settings = {
            "instruction": self.instruction,
            "generic": self.generic,
            "generic_fingerprint": self.generic_fingerprint,
            "model": self.model,
            "model_fingerprint": self.model_fingerprint,
            "options": asdict(self.options),
            "input_dim": self.input_dim,
            "hidden": self.hidden,
        }
        state = {name: tensor.contiguous() for name, tensor in self.projection.state_dict().items()}

        def write(out: Path) -> None:
            out.mkdir(parents=True)
            (out / SETTINGS_FILE).write_text(json.dumps(settings, indent=1), encoding="utf-8")
            save_file(state, str(out / WEIGHTS_FILE))

        return atomic_folder(folder, write, {"command": "guided map", "instruction": self.instruction})

    @classmethod
    def load(cls, folder: str | Path) -> GuidedMap:
        """A map saved by ``save``; a folder without one, settings of the wrong types, or weights that are not
        all finite numbers are refused by name."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        folder = Path(folder)
        if not (folder / SETTINGS_FILE).is_file() or not (folder / WEIGHTS_FILE).is_file():
            raise InputError(f"{folder} holds no guided map (no {SETTINGS_FILE} and {WEIGHTS_FILE})")
        try:
            settings = json.loads((folder / SETTINGS_FILE).read_text(encoding="utf-8"))
            _check_settings(settings)
            options = GuidedOptions(**settings["options"])
            state = load_file(str(folder / WEIGHTS_FILE))
            broken = [name for name, tensor in state.items() if not torch.isfinite(tensor).all()]
            if broken:
                raise ValueError(f"its weights {', '.join(broken)} hold NaN or infinite numbers")
            dim = state["encoder.weight" if settings["hidden"] is None else "encoder.2.weight"].shape[0]
            projection = Projection(
                settings["input_dim"], dim, settings["hidden"], keep_input=options.method == "concat"
            )
            projection.load_state_dict(state)
        except (KeyError, TypeError, ValueError, RuntimeError, OSError, SafetensorError) as err:
            raise InputError(f"cannot read the guided map in {folder}: {err}") from None
        return cls(
            instruction=settings["instruction"],
            generic=settings["generic"],
            generic_fingerprint=settings["generic_fingerprint"],
            model=settings["model"],
            model_fingerprint=settings["model_fingerprint"],
            options=options,
            projection=projection.eval(),
            hidden=settings["hidden"],
        )


_SETTING_TYPES: dict[str, tuple[type, ...]] = {
    "instruction": (str, type(None)),
    "generic": (str,),
    "generic_fingerprint": (str,),
    "model": (str,),
    "model_fingerprint": (str,),
    "options": (dict,),
    "input_dim": (int,),
    "hidden": (int, type(None)),
}


def _check_settings(settings: Any) -> None:
    """A saved map's settings, each of the type ``save`` writes (a ValueError naming the first that is not)."""
    if not isinstance(settings, dict):
        raise ValueError(f"{SETTINGS_FILE} holds {type(settings).__name__}, not an object")
    for name, types in _SETTING_TYPES.items():
        if name not in settings:
            raise ValueError(f"{SETTINGS_FILE} has no {name!r}")
        value = settings[name]
        if not isinstance(value, types) or isinstance(value, bool):
            expected = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise ValueError(f"{SETTINGS_FILE}: {name} is {value!r}, not {expected}")


class GuidedEmbedder:
    """Instruction-following embeddings at a sentence embedder's speed: a map fitted per instruction.

    ``encode(texts, instruction)`` embeds every text with the generic embedder, has the InBedder
    model embed a seeded sample of them, fits the map and applies it; ``fit`` returns the map (to
    ``save``), and ``transform(texts, guided_map)`` applies a saved one without the language model.

    Args:
        model: an ``InBedder`` or a model name (default: the default model), loaded on first fit
            (with ``model_options``, ``InBedder``'s keywords), after the generic embedder.
        generic: the sentence embedder: a sentence-transformers name or folder (default
            all-MiniLM-L6-v2, offline from its package), or a loaded ``SentenceTransformer``.
        options, overrides: the ``GuidedOptions`` (method, sample, dim, seed, ...).
        cache: where the generic vectors are kept (as ``InBedder``'s ``cache``: False, True or a
            path); the InBedder model's own vectors use the store its encode options name.
        dtype: the generic embedder's weights when it is loaded here by name: None for
            ``$INBEDDER_DTYPE``, else ``"auto"``: bfloat16
            on a CPU with AMX or AVX-512 BF16, 2.6 times float32's speed for MiniLM there, cosine to
            float32 >= 0.996; else float32), or a dtype name. Its fingerprint is taken in float32,
            so a map applies whichever dtype the machine picks.
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
        self._model = model
        self._model_options = dict(model_options or {})
        self._generic = generic if generic is not None else MINILM
        self.generic_name = self._generic if isinstance(self._generic, str) else sentence_embedder_name(self._generic)
        self._fingerprint: str | None = None
        self.dtype = dtype
        self.cache = open_cache(cache)

    def __repr__(self) -> str:
        return (
            f"GuidedEmbedder(model={self.model_name!r}, generic={self.generic_name!r}, method={self.options.method!r})"
        )

    @property
    def model_name(self) -> str:
        from inbedder.models import DEFAULT_MODEL

        return getattr(self._model, "name", None) or self._model or DEFAULT_MODEL

    @property
    def model(self) -> Any:
        """The InBedder model, loaded on first use."""
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
            self._fingerprint = _fingerprint(loaded)
            self._generic = loaded.to(resolve_dtype(self.dtype or default_dtype(), loaded.device))
        return self._generic

    def generic_fingerprint(self) -> str:
        """The generic embedder's class and weights (sampled), which a map records and checks."""
        embedder = self.generic
        if self._fingerprint is None:
            self._fingerprint = _fingerprint(embedder)
        return self._fingerprint

    def generic_vectors(self, texts: Sequence[str], show_progress_bar: bool | None = None) -> np.ndarray:
        """(n, d) unit-length vectors of the generic embedder; with a store, computed once per text."""
        from tqdm.auto import tqdm

        from inbedder.cache import model_label, settings_fingerprint, text_key
        from inbedder.embedder import check_texts

        texts = check_texts(texts)
        keys = [text_key(t) for t in texts]
        model_key = self.generic_fingerprint()
        dtype = str(next(self.generic.parameters()).dtype)
        settings = settings_fingerprint(generic=True, max_seq_length=self.generic.max_seq_length, dtype=dtype)
        found = self.cache.get_many(model_key, settings, keys) if self.cache is not None else {}
        todo = list(dict.fromkeys(k for k in keys if k not in found))
        first = {k: i for i, k in reversed(list(enumerate(keys)))}
        for start in tqdm(
            range(0, len(todo), GENERIC_BATCH), desc="generic", unit="batch", disable=not show_progress_bar
        ):
            chunk = todo[start : start + GENERIC_BATCH]
            vectors = (
                self.generic.encode(
                    [texts[first[k]] for k in chunk],
                    batch_size=64,
                    normalize_embeddings=True,
                    convert_to_tensor=True,
                    show_progress_bar=False,
                )
                .float()
                .cpu()
                .numpy()
            )
            found.update({k: (v, "") for k, v in zip(chunk, vectors)})
            if self.cache is not None:
                self.cache.put_many(
                    model_key, settings, model_label(self.generic_name), [(k, v, "") for k, v in zip(chunk, vectors)]
                )
        if not texts:
            return np.empty((0, 0), dtype=np.float32)
        return np.stack([found[k][0] for k in keys]).astype(np.float32)

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
        from inbedder.cache import model_fingerprint, model_label
        from inbedder.templates import one_per_text

        texts = list(sentences)
        generic = self.generic_vectors(texts) if generic_vectors is None else np.asarray(generic_vectors, np.float32)
        if len(generic) != len(texts):
            raise InputError(f"generic_vectors has {len(generic)} rows for {len(texts)} texts")
        if len(texts) < 3:
            raise InputError(f"a guided map needs at least 3 texts to learn from, got {len(texts)}")
        rows = self.sample_rows(len(texts))
        instructions = one_per_text(instruction, len(texts), "instruction")
        asked = sorted(set(instructions), key=str)
        if len(asked) > 1:
            raise InputError(
                f"a guided map is learned for one question, and these texts are asked {len(asked)} "
                f"({', '.join(map(repr, asked[:3]))}{', ...' if len(asked) > 3 else ''}): fit one map per question"
            )
        encode = EncodeOptions.build(
            options, normalize_embeddings=False, truncate_dim=None, convert_to_numpy=True, return_usage=False
        )
        result = self.model.encode([texts[i] for i in rows], [instructions[i] for i in rows], encode)
        vectors, answers = result if encode.return_generations else (result, None)
        projection, hidden = fit_projection(generic[rows], np.asarray(vectors, dtype=np.float32), self.options)
        model = self.model
        return GuidedMap(
            instruction=asked[0],
            generic=self.generic_name,
            generic_fingerprint=self.generic_fingerprint(),
            model=model_label(model.name),
            model_fingerprint=model_fingerprint(model.backend.model, model.tokenizer, model.family),
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
        """Fit a map for ``instruction`` on a sample of ``sentences`` and embed them all with it.

        ``options`` (``EncodeOptions``) go to the InBedder model's run over the sample; of the
        output options, ``normalize_embeddings``, ``convert_to_tensor`` and
        ``return_generations`` (the sampled texts' answers, None for the others) apply here.
        """
        if instruction is None:
            raise InputError("guided embeddings need an instruction: the map is learned per question")
        single = isinstance(sentences, str)
        texts = [sentences] if single else list(sentences)
        options = EncodeOptions.build(options, **overrides)
        if options.return_usage:
            raise InputError("return_usage does not apply to guided embeddings: most texts reach no language model")
        generic = self.generic_vectors(texts, options.show_progress_bar)
        guided_map = self.fit(texts, instruction, options, generic_vectors=generic)
        vectors = guided_map.transform(generic)
        if options.normalize_embeddings:
            vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        result: Any = torch.from_numpy(vectors) if options.convert_to_tensor else vectors
        result = result[0] if single else result
        if not options.return_generations:
            return result
        said: list[Any] = [None] * len(texts)
        sample = guided_map.sample
        assert sample is not None and sample.answers is not None
        for row, answer in zip(sample.rows, sample.answers):
            said[row] = answer
        return result, (said[0] if single else said)


def _fingerprint(embedder: Any) -> str:
    from inbedder.cache import weights_fingerprint

    return f"{type(embedder).__qualname__}:{weights_fingerprint(embedder)}"


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


def answer_clusters(vectors: np.ndarray, clusters: int | None, seed: int) -> np.ndarray:
    """k-means of the InBedder vectors (centred, unit length): texts whose answers agree share a cluster."""
    from sklearn.cluster import KMeans

    k = clusters or max(2, min(50, round(math.sqrt(len(vectors) / 2))))
    k = min(k, len(np.unique(vectors.round(6), axis=0)))
    if k < 2:
        raise InputError("the InBedder model gave every sampled text the same vector: there is nothing to learn")
    return KMeans(k, n_init=4, random_state=seed).fit_predict(_unit(vectors - vectors.mean(0)))


def fit_projection(generic: np.ndarray, targets: np.ndarray, options: GuidedOptions) -> tuple[Projection, int | None]:
    """The map from ``generic`` (s, d) to the instruction's space learned from the InBedder vectors ``targets``."""
    if options.method in ("ridge", "concat"):
        return _fit_ridge(generic, targets, options), None
    hidden = 2 * max(options.dim, generic.shape[1]) if options.method == "gstransform" else None
    labels = answer_clusters(targets, options.clusters, options.seed)
    return _fit_contrastive(generic, labels, options, hidden), hidden


def _fit_ridge(generic: np.ndarray, targets: np.ndarray, options: GuidedOptions) -> Projection:
    from sklearn.decomposition import PCA
    from sklearn.linear_model import RidgeCV

    components = min(options.dim, len(targets) - 1, targets.shape[1])
    goal = PCA(components, random_state=options.seed).fit_transform(_unit(targets - targets.mean(0)))
    center = generic.mean(0)
    ridge = RidgeCV(alphas=np.logspace(-2, 3, 12)).fit(generic - center, goal)
    projection = Projection(generic.shape[1], components, keep_input=options.method == "concat")
    with torch.no_grad():
        projection.center.copy_(torch.from_numpy(center))
        projection.encoder.weight.copy_(torch.from_numpy(np.asarray(ridge.coef_, dtype=np.float32)))
        projection.encoder.bias.copy_(torch.from_numpy(np.asarray(ridge.intercept_, dtype=np.float32)))
    return projection.eval()


def _fit_contrastive(generic: np.ndarray, labels: np.ndarray, options: GuidedOptions, hidden: int | None) -> Projection:
    """Full-batch training: same-cluster pairs together (InfoNCE, or GSTransform's margin loss), plus
    the generic vector reconstructed from the map's output."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(options.seed)
        x = torch.from_numpy(generic)
        projection = Projection(generic.shape[1], options.dim, hidden)
        projection.center.copy_(x.mean(0))
        decoder = torch.nn.Linear(options.dim, generic.shape[1])
        optimizer = torch.optim.Adam([*projection.parameters(), *decoder.parameters()], lr=options.learning_rate)
        y = torch.from_numpy(labels)
        same = (y[:, None] == y[None, :]).float()
        off_diagonal = 1 - torch.eye(len(y))
        for _ in range(options.steps):
            mapped = projection(x)
            unit = torch.nn.functional.normalize(mapped, dim=-1)
            cosine = unit @ unit.T
            if options.method == "gstransform":
                together = same * off_diagonal * (1 - cosine) ** 2
                apart = (1 - same) * torch.relu(cosine - options.margin) ** 2
                pairs = (together.sum() + apart.sum()) / off_diagonal.sum()
            else:
                logits = (cosine / options.temperature).masked_fill(off_diagonal == 0, -1e9)
                log_p = logits - logits.logsumexp(dim=1, keepdim=True)
                positives = same * off_diagonal
                has = positives.sum(1) > 0
                pairs = -((log_p * positives).sum(1)[has] / positives.sum(1)[has]).mean()
            rebuilt = torch.nn.functional.mse_loss(decoder(mapped), x - projection.center) * generic.shape[1]
            loss = pairs + options.reconstruction * rebuilt
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return projection.eval()


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
