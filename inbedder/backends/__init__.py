"""One module per model family; each turns padded prompt ids into hidden states."""

from inbedder.backends.base import Generation, GenerationSettings
from inbedder.backends.causal import CausalBackend

__all__ = ["CausalBackend", "Generation", "GenerationSettings"]
