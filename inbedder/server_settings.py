"""What ``inbedder serve`` takes, declared once: ``create_app(ServerSettings(...))`` and the command's flags
(``inbedder.cli.declared``) come from the same fields. Nothing heavy is imported here."""

from __future__ import annotations

from dataclasses import dataclass, field

from inbedder import models
from inbedder.errors import InputError
from inbedder.model_settings import DTYPES
from inbedder.options import cli

LIMITS = ("max_inputs", "max_chars", "max_instruction_chars", "max_request_tokens", "max_body_bytes")
LIMITS += ("max_response_bytes", "max_queue", "max_batch_texts", "slice_texts", "slice_chars", "pad_multiple")


@dataclass(frozen=True)
class ServerSettings:
    """The model, the store, and the limits of a server; each checked when the settings are made.

    The work one request may cost is bounded by its prompt tokens (``max_request_tokens``, each text
    counted up to the model's longest prompt) and its body (``max_body_bytes``), not only by its
    texts and characters; a large request goes to the model a slice at a time (``slice_texts``,
    ``slice_chars``), interleaved with the others (``Batcher``).
    """

    model: str = models.DEFAULT_MODEL
    cache: str | None = field(
        default=None, metadata=cli("A persistent store (SQLite file or folder) that serves repeated texts.")
    )
    max_batch_tokens: int | None = field(
        default=None, metadata=cli("Padded tokens per forward pass (default: 1024 on CPU, no limit on CUDA).")
    )
    pad_multiple: int = field(
        default=32,
        metadata=cli("Pad each batch to a multiple of N tokens: few shapes, so the compiled CPU kernels stay few."),
    )
    max_inputs: int = field(default=2048, metadata=cli("Most texts in one request."))
    max_chars: int = field(default=32_000, metadata=cli("Longest text, in characters."))
    max_instruction_chars: int = field(default=2_000, metadata=cli("Longest instruction, in characters."))
    max_request_tokens: int = field(
        default=262_144,
        metadata=cli("Most prompt tokens in a request (a text counts up to the model's longest prompt)."),
    )
    max_body_bytes: int = 16 * 2**20
    max_response_bytes: int = 64 * 2**20
    max_queue: int = field(default=4096, metadata=cli("Most texts waiting; beyond it requests get 503 + Retry-After."))
    max_batch_texts: int = 256
    slice_texts: int = 32
    slice_chars: int = 4_000
    max_wait: float = 0.005
    api_key: str | None = None
    device: str = field(default="auto", metadata=cli("auto (CUDA when available), cpu or cuda."))
    dtype: str | None = field(
        default=None,
        metadata=cli(
            "Weights' dtype: auto (bfloat16 on a CPU with AMX or AVX-512 BF16 and on CUDA, else float32), "
            "float32, bfloat16 or float16 (default: the model's setting, else auto)."
        ),
    )

    def __post_init__(self) -> None:
        for name in LIMITS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{name} must be at least 1, got {value!r}")
        if self.max_batch_tokens is not None and self.max_batch_tokens < 1:
            raise InputError(f"max_batch_tokens must be at least 1, got {self.max_batch_tokens}")
        if not self.max_wait >= 0:
            raise InputError(f"max_wait must be a number of seconds, got {self.max_wait!r}")
        if self.dtype is not None and self.dtype not in DTYPES:
            raise InputError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
