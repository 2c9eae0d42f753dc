"""A guided map (``inbedder.guided``): its options, the module, how each method fits it, saving and loading.

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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inbedder.errors import InputError, check_positive_int
from inbedder.interface import unit_rows

METHODS = ("ridge", "contrastive", "gstransform", "concat")
SETTINGS_FILE = "guided.json"
WEIGHTS_FILE = "map.safetensors"


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


def answer_clusters(vectors: np.ndarray, clusters: int | None, seed: int) -> np.ndarray:
    """k-means of the InBedder vectors (centred, unit length): texts whose answers agree share a cluster."""
    from sklearn.cluster import KMeans

    k = clusters or max(2, min(50, round(math.sqrt(len(vectors) / 2))))
    k = min(k, len(np.unique(vectors.round(6), axis=0)))
    if k < 2:
        raise InputError("the InBedder model gave every sampled text the same vector: there is nothing to learn")
    return KMeans(k, n_init=4, random_state=seed).fit_predict(unit_rows(vectors - vectors.mean(0)))


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
    goal = PCA(components, random_state=options.seed).fit_transform(unit_rows(targets - targets.mean(0)))
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
