"""LlamaIndex: ``InBedderEmbedding`` is a ``BaseEmbedding`` over any ``Embedder``, with the question it asks.

from llama_index.core import Settings
from inbedder.integrations.llama_index import InBedderEmbedding

Settings.embed_model = InBedderEmbedding(instruction="What does the customer complain about?")
"""

from __future__ import annotations

from typing import Any

from inbedder.extras import require
from inbedder.integrations import embed_lists, embedder_of
from inbedder.options import EncodeOptions

require("llama_index", "llama_index.core")

from llama_index.core.base.embeddings.base import BaseEmbedding  # noqa: E402
from pydantic import PrivateAttr  # noqa: E402


class InBedderEmbedding(BaseEmbedding):
    """Texts embedded under ``instruction``, queries under ``query_instruction`` (default: the same
    question); unit-length vectors. ``model``: an ``Embedder`` or a model name (None: the default model);
    ``options``: how it encodes (``EncodeOptions``)."""

    instruction: str | None = None
    query_instruction: str | None = None
    _embedder: Any = PrivateAttr()
    _options: EncodeOptions | None = PrivateAttr(default=None)

    def __init__(
        self,
        model: Any = None,
        instruction: str | None = None,
        query_instruction: str | None = None,
        options: EncodeOptions | None = None,
        **settings: Any,
    ) -> None:
        embedder = embedder_of(model)
        asked = query_instruction if query_instruction is not None else instruction
        settings.setdefault("model_name", getattr(embedder, "name", "inbedder"))
        super().__init__(instruction=instruction, query_instruction=asked, **settings)
        self._embedder, self._options = embedder, options

    @classmethod
    def class_name(cls) -> str:
        return "InBedderEmbedding"

    def _get_query_embedding(self, query: str) -> list[float]:
        return embed_lists(self._embedder, [query], self.query_instruction, self._options)[0]

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return embed_lists(self._embedder, [text], self.instruction, self._options)[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return embed_lists(self._embedder, texts, self.instruction, self._options)
