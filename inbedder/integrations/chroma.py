"""Chroma: ``InBedderEmbeddingFunction`` embeds a collection's documents and queries with the question asked.

    import chromadb
    from inbedder.integrations.chroma import InBedderEmbeddingFunction

    embed = InBedderEmbeddingFunction(instruction="What does the customer complain about?")
    tickets = chromadb.EphemeralClient().get_or_create_collection("tickets", embedding_function=embed)

Its configuration (the model's name and the questions) is what Chroma saves with a collection, so a
client that opens the collection again rebuilds it.
"""

from __future__ import annotations

from typing import Any

from inbedder.extras import require
from inbedder.integrations import embed_lists, embedder_of
from inbedder.options import EncodeOptions

require("chroma", "chromadb")

from chromadb.api.types import Documents, EmbeddingFunction, Embeddings, Space  # noqa: E402
from chromadb.utils.embedding_functions import register_embedding_function  # noqa: E402


@register_embedding_function
class InBedderEmbeddingFunction(EmbeddingFunction[Documents]):
    """Documents embedded under ``instruction``, queries under ``query_instruction`` (default: the same);
    unit-length vectors, compared by cosine. ``model``: an ``Embedder`` or a model name (None: the default)."""

    def __init__(
        self,
        model: Any = None,
        instruction: str | None = None,
        query_instruction: str | None = None,
        options: EncodeOptions | None = None,
    ) -> None:
        self.embedder = embedder_of(model)
        self.model_name = model if isinstance(model, str) else getattr(self.embedder, "name", None)
        self.instruction = instruction
        self.query_instruction = query_instruction if query_instruction is not None else instruction
        self.options = options

    def __call__(self, input: Documents) -> Embeddings:
        return embed_lists(self.embedder, list(input), self.instruction, self.options)

    def embed_query(self, input: Documents) -> Embeddings:
        return embed_lists(self.embedder, list(input), self.query_instruction, self.options)

    @staticmethod
    def name() -> str:
        return "inbedder"

    def default_space(self) -> Space:
        return "cosine"

    def supported_spaces(self) -> list[Space]:
        return ["cosine", "ip", "l2"]

    def get_config(self) -> dict[str, Any]:
        return {"model": self.model_name, "instruction": self.instruction, "query_instruction": self.query_instruction}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> InBedderEmbeddingFunction:
        return InBedderEmbeddingFunction(
            config.get("model"), config.get("instruction"), config.get("query_instruction")
        )
