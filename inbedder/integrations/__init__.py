"""inbedder inside the libraries its users already work in: each module adapts any ``Embedder``.

- ``inbedder.integrations.langchain.InBedderEmbeddings``: LangChain ``Embeddings``;
- ``inbedder.integrations.bertopic.InBedderBackend``: a BERTopic embedding backend (``inbedder[bertopic]``);
- ``inbedder.integrations.llama_index.InBedderEmbedding``: LlamaIndex ``BaseEmbedding`` (``inbedder[llama_index]``);
- ``inbedder.integrations.chroma.InBedderEmbeddingFunction``: a Chroma ``EmbeddingFunction`` (``inbedder[chroma]``);
- ``inbedder.integrations.mteb.InBedderEncoder``: an mteb encoder, and ``clustering_task`` for your own
  labelled texts (``inbedder[mteb]``).

Each takes an embedder (an ``InBedder``, a ``GuidedEmbedder`` with its maps, any ``Embedder``) or a
model name, and the question it asks of documents; queries may be asked another one (a retrieval
pair), or the same. Each imports its library when it is imported, and names the extra that
installs it when the library is missing (``pip install 'inbedder[integrations]'``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from inbedder.interface import Embedder
from inbedder.options import EncodeOptions


def embedder_of(model: Any) -> Embedder:
    """``model`` as an ``Embedder``: one given, or an ``InBedder`` loaded by name (None: the default model)."""
    if model is None or isinstance(model, str):
        from inbedder.embedder import InBedder

        return InBedder(model)
    if not isinstance(model, Embedder):
        raise TypeError(f"model must be an Embedder (with encode_multi) or a model name, got {type(model).__name__}")
    return model


def embed_lists(
    embedder: Embedder, texts: Sequence[str], instruction: str | None, options: EncodeOptions | None
) -> list[list[float]]:
    """Unit-length vectors of ``texts`` under ``instruction``, as lists of floats (what these libraries store)."""
    if not texts:
        return []
    options = EncodeOptions.build(options, normalize_embeddings=True, return_generations=False)
    return [[float(x) for x in row] for row in embedder.encode_multi(list(texts), [instruction], options)[0]]
