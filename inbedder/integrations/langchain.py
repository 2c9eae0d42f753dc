"""LangChain: ``InBedderEmbeddings`` is an ``Embeddings`` over any ``Embedder``, with the question it asks.

from inbedder.integrations.langchain import InBedderEmbeddings

embeddings = InBedderEmbeddings("smollm2-135m-inbedder-v2", instruction="What does the customer complain about?")
store = InMemoryVectorStore.from_texts(tickets, embeddings)
"""

from __future__ import annotations

from typing import Any

from inbedder.extras import require
from inbedder.integrations import embed_lists, embedder_of
from inbedder.options import EncodeOptions

require("integrations", "langchain_core")

from langchain_core.embeddings import Embeddings  # noqa: E402


class InBedderEmbeddings(Embeddings):
    """Documents embedded under ``instruction``, queries under ``query_instruction`` (default: the same
    question, so a query lands among the documents that answer alike); unit-length vectors.

    Args:
        model: an ``Embedder`` (``InBedder``, ``GuidedEmbedder``, ...) or a model name (None: the default).
        instruction: the question asked of every document (None: the raw text, no question).
        query_instruction: the question asked of a query; None asks the documents' question.
        options: how the model encodes (``EncodeOptions``: ``batch_size``, ``readout``, ``cache``, ...).
    """

    def __init__(
        self,
        model: Any = None,
        instruction: str | None = None,
        query_instruction: str | None = None,
        options: EncodeOptions | None = None,
    ) -> None:
        self.embedder = embedder_of(model)
        self.instruction = instruction
        self.query_instruction = query_instruction if query_instruction is not None else instruction
        self.options = options

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return embed_lists(self.embedder, texts, self.instruction, self.options)

    def embed_query(self, text: str) -> list[float]:
        return embed_lists(self.embedder, [text], self.query_instruction, self.options)[0]
