"""inbedder: instruction-following text embeddings from the language model's answer state.

The names below load on first use, so that ``import inbedder`` and the command line's help do
not pay for torch, transformers and scikit-learn until something needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from inbedder._version import __version__

if TYPE_CHECKING:
    from inbedder.clustering import ClusteringResult, cluster
    from inbedder.embedder import InBedder
    from inbedder.generic import Precomputed, SentenceEmbedder
    from inbedder.guided import GuidedEmbedder, GuidedMap, GuidedOptions
    from inbedder.interface import Embedder
    from inbedder.models import DEFAULT_MODEL, REGISTRY
    from inbedder.options import EncodeOptions
    from inbedder.readout import READOUTS, Readout, register_readout
    from inbedder.templates import QA_PATTERN, PromptTemplate

_LAZY = {
    "ClusteringResult": "inbedder.clustering",
    "cluster": "inbedder.clustering",
    "InBedder": "inbedder.embedder",
    "Embedder": "inbedder.interface",
    "Precomputed": "inbedder.generic",
    "SentenceEmbedder": "inbedder.generic",
    "GuidedEmbedder": "inbedder.guided",
    "GuidedMap": "inbedder.guided",
    "GuidedOptions": "inbedder.guided",
    "DEFAULT_MODEL": "inbedder.models",
    "REGISTRY": "inbedder.models",
    "EncodeOptions": "inbedder.options",
    "READOUTS": "inbedder.readout",
    "Readout": "inbedder.readout",
    "register_readout": "inbedder.readout",
    "QA_PATTERN": "inbedder.templates",
    "PromptTemplate": "inbedder.templates",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'inbedder' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


def load(model_name_or_path: str | None = None, **kwargs: Any) -> InBedder:
    """Load an InBedder by registered name, directory, GGUF file or hub id (see ``InBedder``)."""
    from inbedder.embedder import InBedder

    return InBedder(model_name_or_path, **kwargs)


__all__ = [
    "DEFAULT_MODEL",
    "ClusteringResult",
    "Embedder",
    "EncodeOptions",
    "GuidedEmbedder",
    "GuidedMap",
    "GuidedOptions",
    "InBedder",
    "Precomputed",
    "PromptTemplate",
    "QA_PATTERN",
    "READOUTS",
    "REGISTRY",
    "Readout",
    "SentenceEmbedder",
    "cluster",
    "load",
    "register_readout",
    "__version__",
]
