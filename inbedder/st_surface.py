"""What code written for sentence-transformers 5/6 calls, on an ``InBedder``: named prompts, ``encode_query``
and ``encode_document``, ``similarity``, and quantised ``precision``.

A sentence-transformers prompt is text put before each input; an InBedder's instruction is the
question it asks of each text, so ``prompt=`` is taken as the instruction and ``prompt_name=``
names one of the model's ``prompts`` (``InBedder(prompts={"query": ...})``, or the ``prompts`` of
its ``inbedder.json``), as sentence-transformers stores prompts with a model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from inbedder.errors import InputError

PRECISIONS = ("float32", "binary", "ubinary")
"""What ``precision=`` takes (sentence-transformers' ``quantize_embeddings``); int8 and uint8 need a calibration set."""


def check_prompts(prompts: Any) -> dict[str, str]:
    """``prompts`` as a dict of name -> instruction, each a non-empty string (None: none)."""
    if prompts is None:
        return {}
    if not isinstance(prompts, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in prompts.items()
    ):
        raise InputError(f"prompts must map names to instructions (strings), got {prompts!r}")
    return dict(prompts)


class SentenceTransformerSurface:
    """The sentence-transformers names an ``InBedder`` answers to (mixed into it)."""

    prompts: dict[str, str]
    similarity_fn_name = "cosine"

    def asked(self, instruction: Any, prompt: str | None, prompt_name: str | None) -> Any:
        """The instruction a call asks: ``instruction``, or ``prompt``, or the prompt ``prompt_name`` names."""
        given = [name for name, value in (("instruction", instruction), ("prompt", prompt)) if value is not None]
        if prompt_name is not None:
            if prompt_name not in self.prompts:
                known = f"; it has {sorted(self.prompts)}" if self.prompts else ": it has none (InBedder(prompts=...))"
                raise InputError(f"prompt_name {prompt_name!r} is not one of this model's prompts{known}")
            given.append("prompt_name")
        if len(given) > 1:
            raise InputError(f"give one of instruction, prompt and prompt_name (the question asked), not {given}")
        return self.prompts[prompt_name] if prompt_name is not None else instruction if prompt is None else prompt

    def encode_query(self, sentences: Any, instruction: Any = None, **options: Any) -> Any:
        """``encode`` for queries: asks ``instruction``, else the model's ``query`` prompt."""
        return self.encode(sentences, **self._role("query", instruction, options), **options)  # type: ignore[attr-defined]

    def encode_document(self, sentences: Any, instruction: Any = None, **options: Any) -> Any:
        """``encode`` for documents: asks ``instruction``, else the model's ``document`` prompt."""
        return self.encode(sentences, **self._role("document", instruction, options), **options)  # type: ignore[attr-defined]

    def _role(self, role: str, instruction: Any, options: dict[str, Any]) -> dict[str, Any]:
        if instruction is not None or "prompt" in options or "prompt_name" in options or role not in self.prompts:
            return {"instruction": instruction}
        return {"prompt_name": role}

    @staticmethod
    def similarity(embeddings1: Any, embeddings2: Any) -> torch.Tensor:
        """Cosine similarity of every row of ``embeddings1`` with every row of ``embeddings2``: (n, m)."""
        a = torch.nn.functional.normalize(
            torch.as_tensor(np.atleast_2d(np.asarray(embeddings1)), dtype=torch.float32), dim=-1
        )
        b = torch.nn.functional.normalize(
            torch.as_tensor(np.atleast_2d(np.asarray(embeddings2)), dtype=torch.float32), dim=-1
        )
        return a @ b.T


def quantized(result: Any, precision: str) -> Any:
    """``result``'s vectors at ``precision`` (sentence-transformers' scheme); its answers and usage kept."""
    if precision in ("int8", "uint8"):
        raise InputError(
            f"precision {precision!r} needs ranges from a calibration set: encode in float32 and call "
            f"sentence_transformers.quantize_embeddings(vectors, {precision!r}, calibration_embeddings=...)"
        )
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "float32":
        return result
    from inbedder.extras import require

    require("reencode", "sentence_transformers")
    from sentence_transformers import quantize_embeddings

    vectors, *rest = result if isinstance(result, tuple) else (result,)
    array = np.asarray(vectors, dtype=np.float32)
    packed = quantize_embeddings(array.reshape(1, -1) if array.ndim == 1 else array, precision=precision)
    packed = packed[0] if array.ndim == 1 else packed
    return (packed, *rest) if rest else packed
