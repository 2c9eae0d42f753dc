"""inbedder: instruction-following text embeddings from the language model's answer state."""

from inbedder.clustering import ClusteringResult, cluster
from inbedder.embedder import InBedder
from inbedder.models import DEFAULT_MODEL, REGISTRY
from inbedder.readout import READOUTS, Readout
from inbedder.templates import QA_PATTERN, PromptTemplate

__version__ = "0.1.0"


def load(model_name_or_path: str | None = None, **kwargs) -> InBedder:
    """Load an InBedder by registered name, directory, GGUF file or hub id (see ``InBedder``)."""
    return InBedder(model_name_or_path, **kwargs)


__all__ = [
    "DEFAULT_MODEL",
    "ClusteringResult",
    "InBedder",
    "PromptTemplate",
    "QA_PATTERN",
    "READOUTS",
    "REGISTRY",
    "Readout",
    "cluster",
    "load",
    "__version__",
]
