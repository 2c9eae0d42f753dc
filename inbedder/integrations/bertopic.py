"""BERTopic: ``InBedderBackend`` is a BERTopic embedding backend over any ``Embedder``, with the question.

    from bertopic import BERTopic
    from inbedder.integrations.bertopic import InBedderBackend

    topics = BERTopic(embedding_model=InBedderBackend(instruction="What does the customer complain about?"))
    topics.fit_transform(reviews)      # topics by the complaint, not by the product
    topics.transform(new_reviews)      # new texts asked the same question

BERTopic recognises only its own backends (anything else falls back to all-MiniLM-L6-v2), so an
InBedder goes in through this one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from inbedder.extras import require
from inbedder.integrations import embedder_of
from inbedder.options import EncodeOptions

require("bertopic", "bertopic")

from bertopic.backend import BaseEmbedder  # noqa: E402


class InBedderBackend(BaseEmbedder):
    """Documents embedded under ``instruction``; words (BERTopic's representation models embed them) under
    ``word_instruction`` (default: the same question). ``model``: an ``Embedder`` or a model name (None:
    the default model); ``options``: how it encodes (``EncodeOptions``)."""

    def __init__(
        self,
        model: Any = None,
        instruction: str | None = None,
        word_instruction: str | None = None,
        options: EncodeOptions | None = None,
    ) -> None:
        super().__init__(embedding_model=embedder_of(model))
        self.instruction = instruction
        self.word_instruction = word_instruction if word_instruction is not None else instruction
        self.options = options

    def embed(self, documents: Sequence[str], verbose: bool = False) -> np.ndarray:
        return self._vectors(documents, self.instruction, verbose)

    def embed_words(self, words: Sequence[str], verbose: bool = False) -> np.ndarray:
        return self._vectors(words, self.word_instruction, verbose)

    def _vectors(self, texts: Sequence[str], instruction: str | None, verbose: bool) -> np.ndarray:
        options = EncodeOptions.build(self.options, show_progress_bar=verbose, return_generations=False)
        return np.asarray(self.embedding_model.encode_multi(list(texts), [instruction], options)[0], dtype=np.float32)
