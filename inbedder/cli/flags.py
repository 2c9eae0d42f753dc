"""Groups of flags several commands share, declared once as dataclasses (``inbedder.cli.declared``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from inbedder.errors import InputError
from inbedder.options import cli

ENGINES = ("local", "ray")


@dataclass(frozen=True)
class Placement:
    """Where a command's model work runs: this process, or a pool of Ray actors."""

    engine: str = field(
        default="local", metadata=cli("'local' (this process) or 'ray' (a pool of Ray actors, one model each).")
    )
    address: str | None = field(
        default=None, metadata=cli("With --engine ray: the cluster ('auto': this node's; default: start one).")
    )
    concurrency: int = field(default=1, metadata=cli("With --engine ray: actors, each holding one model."))

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise InputError(f"engine must be 'local' or 'ray', got {self.engine!r}")
        if self.concurrency < 1:
            raise InputError(f"concurrency must be at least 1, got {self.concurrency}")


@dataclass(frozen=True)
class Guiding:
    """Guided embeddings: a sentence embedder embeds every text, the model a sample (``inbedder.guided``)."""

    guided: bool = field(
        default=False,
        metadata=cli(
            "Guided embeddings: a sentence embedder embeds every text, the model a seeded sample, and a map "
            "learned from the sample places every text (fast at scale; see README)."
        ),
    )
    sample: int | None = field(
        default=None, metadata=cli("With --guided: texts the model embeds (a seeded sample; default 2000).")
    )
    generic: str | None = field(
        default=None, metadata=cli("With --guided: the sentence embedder (default all-MiniLM-L6-v2).")
    )
    guided_method: str | None = field(
        default=None, metadata=cli("With --guided: the map: ridge (default), contrastive, gstransform or concat.")
    )

    def options(self) -> Any:
        """The ``GuidedOptions`` of ``--guided`` (None without it); its flags without it are refused by name."""
        stray = [
            flag
            for flag, value in (
                ("--sample", self.sample),
                ("--generic", self.generic),
                ("--guided-method", self.guided_method),
            )
            if value
        ]
        if not self.guided:
            if stray:
                raise InputError(f"{', '.join(stray)} applies with --guided only")
            return None
        from inbedder.guided import GuidedOptions

        chosen = {"sample": self.sample, "method": self.guided_method}
        try:
            return GuidedOptions(**{name: value for name, value in chosen.items() if value is not None})
        except ValueError as err:
            raise InputError(f"--guided: {err}") from None
