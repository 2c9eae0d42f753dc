"""Which hidden states make the embedding: the registry of readouts, and a readout with its layer.

One grammar for every model family. What "the answer" is differs by family: the tokens a
causal LM generates after the prompt, the decoder states of an encoder-decoder, or the mask
slots after a masked LM's prompt (see ``inbedder.backends``); the pooling is the same.

A readout is added in one place, ``register_readout``: its name, a line for the help, and
how it pools a ``AnswerStates`` (or ``reencodes``: the answers go to a sentence embedder, or
``head_of``: another readout's last-layer state goes through the LM head). Not every family
offers every readout: a backend lists those it lacks. Nothing here imports torch, so the
CLI can list the readouts at once; pooling works on tensors through their methods.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import TYPE_CHECKING, Any

from inbedder.errors import InputError

if TYPE_CHECKING:
    import torch

    from inbedder.backends.base import AnswerStates

Pool = Callable[["AnswerStates", "torch.Tensor"], "torch.Tensor"]
"""How a readout pools one run: (generation, kept answer mask) -> (B, H) vectors."""


@dataclass(frozen=True)
class ReadoutKind:
    """What a readout name means; one subclass per way it embeds: ``PooledReadout`` (the model's
    states pooled), ``ReencodedReadout`` (the answers' text re-embedded) and ``HeadReadout`` (a pooled
    last-layer state through the LM head). ``inbedder.pooling.readout_stage`` makes each one's stage."""

    name: str
    description: str
    generating: bool = False
    """It needs the answer's tokens: generated, or (masked LMs) predicted at the mask slots."""

    @property
    def stored(self) -> str:
        """The readout whose vectors a batch's stage computes and the store keeps: this one, for all but heads."""
        return self.name

    @property
    def prefix_dim(self) -> int | None:
        """How many numbers it gives when any prefix of them is a smaller form of the whole (None: no such order)."""
        return None

    @property
    def unprojected(self) -> str | None:
        """For a projected head, the readout whose states the full head reads (what names its clusters)."""
        return None

    @property
    def reencodes(self) -> bool:
        """Whether a sentence embedder embeds its answers' text (the mean over ``num_samples`` answers)."""
        return False

    @property
    def pool(self) -> Pool | None:
        """How it pools a run's states into vectors (None: it does not pool states itself)."""
        return None

    @cached_property  # read on every encode call that uses the store; a kind never changes
    def definition(self) -> str:
        """A digest of what this readout computes: its type and fields, a pooling function by its code (the
        function's own bytecode and constants; the functions it calls are the package's, whose version the
        store keys on). The store keys rows on it, so a name registered again with other code never serves
        the old rows."""
        parts: list[Any] = [type(self).__name__]
        for item in fields(self):
            if item.name == "description":  # words for the help, not what it computes
                continue
            value = getattr(self, item.name)
            if callable(value):
                value = _code_digest(getattr(value, "__code__", None)) or repr(value)
            parts.append((item.name, value))
        return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class PooledReadout(ReadoutKind):
    """The model's hidden states at the readout's layer, pooled by ``pool``."""

    pool: Pool | None = None


@dataclass(frozen=True)
class ReencodedReadout(ReadoutKind):
    """The generated answers' text, embedded by a sentence embedder."""

    generating: bool = True

    @property
    def reencodes(self) -> bool:
        return True


@dataclass(frozen=True)
class HeadReadout(ReadoutKind):
    """The pooled last-layer state of readout ``of`` through the LM head: square-root probabilities or,
    with ``top``, the ``top`` likeliest tokens weighted by their log-probability margins (unit length);
    either under a fixed random projection to ``dim`` numbers."""

    of: str = "fst_gen"
    dim: int | None = None
    top: int | None = None

    @property
    def stored(self) -> str:
        return self.of

    @property
    def prefix_dim(self) -> int | None:
        return self.dim

    @property
    def unprojected(self) -> str | None:
        return self.of if self.dim else None


def _code_digest(code: Any) -> str | None:
    """A function's code as text: bytecode, names and constants, nested code objects included."""
    if code is None:
        return None
    consts = [_code_digest(c) if hasattr(c, "co_code") else repr(c) for c in code.co_consts]
    return hashlib.sha256(repr((code.co_code, code.co_names, consts)).encode()).hexdigest()


KINDS: dict[str, ReadoutKind] = {}
READOUTS: dict[str, str] = {}
"""Every readout's name and description (the public view of ``KINDS``)."""


def register_readout(
    name: str,
    description: str,
    pool: Pool | None = None,
    *,
    generating: bool = False,
    reencodes: bool = False,
    head_of: str | None = None,
    head_dim: int | None = None,
    head_top: int | None = None,
) -> ReadoutKind:
    """Make ``name`` a readout that every family offers (unless its backend lists it among those it lacks)."""
    if name in KINDS:
        raise InputError(f"readout {name!r} is already registered")
    if (pool is not None) + reencodes + (head_of is not None) != 1:
        raise InputError(f"readout {name!r}: give exactly one of pool, reencodes=True or head_of")
    if head_of is not None and not isinstance(KINDS.get(head_of), PooledReadout):
        raise InputError(f"readout {name!r}: head_of must name a pooling readout, got {head_of!r}")
    if head_dim is not None and (head_of is None or head_dim < 8 or head_dim % 8):
        raise InputError(f"readout {name!r}: head_dim applies to head readouts, as a multiple of 8, got {head_dim!r}")
    if head_top is not None and (head_of is None or isinstance(head_top, bool) or not head_top >= 2):
        raise InputError(f"readout {name!r}: head_top applies to head readouts, as 2 or more tokens, got {head_top!r}")
    if reencodes:
        kind: ReadoutKind = ReencodedReadout(name, description)
    elif head_of is not None:
        kind = HeadReadout(name, description, generating, of=head_of, dim=head_dim, top=head_top)
    else:
        kind = PooledReadout(name, description, generating, pool=pool)
    KINDS[name] = kind
    READOUTS[name] = description
    return kind


def unregister_readout(name: str) -> None:
    """Remove a readout added with ``register_readout`` (for tests and plugins)."""
    del KINDS[name], READOUTS[name]


def masked_sum(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum over dim 1 of ``states`` (B, T, H) where ``mask`` (B, T) is true."""
    return (states * mask.to(states.dtype).unsqueeze(-1)).sum(1)


def masked_mean(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over dim 1 of ``states`` (B, T, H) where ``mask`` (B, T) is true."""
    return masked_sum(states, mask) / mask.sum(1, keepdim=True).clamp(min=1).to(states.dtype)


def _last_answer_state(run: AnswerStates, kept: torch.Tensor) -> torch.Tensor:
    last = run.answer_mask.long().cumsum(1).argmax(1)
    return run.answer_states[list(range(len(last))), last]


def _prompt_and_answer_mean(run: AnswerStates, kept: torch.Tensor) -> torch.Tensor:
    """Mean over the prompt states and the answer tokens' states (columns from ``token_column`` on)."""
    answer_states, answer_mask = run.answer_states[:, run.token_column :], run.answer_mask[:, run.token_column :]
    total = masked_sum(run.prompt_states, run.prompt_mask) + masked_sum(answer_states, answer_mask)
    count = run.prompt_mask.sum(1, keepdim=True) + answer_mask.sum(1, keepdim=True)
    return total / count.clamp(min=1).to(total.dtype)


register_readout(
    "fst_gen",
    "state at the last prompt position, which predicts the first answer token",
    lambda run, kept: run.answer_states[:, 0],
)
register_readout(
    "avg_gen",
    "mean of fst_gen and the states of the generated answer tokens",
    lambda run, kept: masked_mean(run.answer_states, kept),
    generating=True,
)
register_readout("last_gen", "state of the last generated answer token", _last_answer_state, generating=True)
register_readout(
    "avg_ppt", "mean over the prompt tokens", lambda run, kept: masked_mean(run.prompt_states, run.prompt_mask)
)
register_readout(
    "avg_all", "mean over the prompt and the generated answer tokens", _prompt_and_answer_mean, generating=True
)
register_readout(
    "re_encode",
    "the generated answer text embedded by a sentence embedder (mean over num_samples answers)",
    reencodes=True,
)
register_readout(
    "fst_head",
    "square roots of the LM head's probabilities for the first answer token, one number per vocabulary token "
    "(the fst_gen state at the last layer, read by the head)",
    head_of="fst_gen",
)
register_readout(
    "fst_head_rp",
    "fst_head under a fixed random +-1 projection to 1,024 numbers (the same cosines, 1/48 of the size; "
    "its first d numbers are the d-number projection)",
    head_of="fst_gen",
    head_dim=1024,
)
register_readout(
    "fst_head_top_rp",
    "the first answer token's 64 likeliest tokens, each weighted by how far its log-probability stands above "
    "the 64th's (unit length), under fst_head_rp's projection to 1,024 numbers: every answer the model "
    "considers counts, the likeliest not overwhelming the rest",
    head_of="fst_gen",
    head_dim=1024,
    head_top=64,
)


def check_readout_name(name: Any) -> str:
    """``name`` when it is a registered readout; else the one error every caller gives."""
    if name not in KINDS:
        raise InputError(f"unknown readout {name!r}; choose one of {', '.join(KINDS)}")
    return name


def offered_readouts(backend: Any) -> frozenset[str]:
    """The registered readouts that ``backend``'s family offers: all but its ``lacks_readouts``."""
    return frozenset(KINDS) - backend.lacks_readouts


@dataclass(frozen=True)
class Readout:
    """A readout name, the layer it reads (0 = embeddings, -1 = last), and words to skip."""

    name: str = "fst_gen"
    layer: int = -1
    filter_words: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        check_readout_name(self.name)
        if isinstance(self.layer, bool) or not isinstance(self.layer, int):
            raise TypeError(f"layer must be an int, got {self.layer!r}")
        words = frozenset(w.strip().lower() for w in self.filter_words)
        object.__setattr__(self, "filter_words", words)

    @classmethod
    def make(cls, name: str, layer: int, filter_words: Iterable[str] | None) -> Readout:
        return cls(name, layer, frozenset(filter_words or ()))

    @property
    def kind(self) -> ReadoutKind:
        return KINDS[self.name]

    @property
    def needs_generation(self) -> bool:
        return self.kind.generating

    @property
    def reads_head(self) -> bool:
        return isinstance(self.kind, HeadReadout)

    def layer_index(self, num_layers: int) -> int:
        """The index into the model's ``num_layers + 1`` hidden states, checked."""
        if not -(num_layers + 1) <= self.layer <= num_layers:
            raise InputError(
                f"layer {self.layer} does not exist: the model has {num_layers} layers, so layer "
                f"must be in [{-(num_layers + 1)}, {num_layers}] (0 = embeddings, -1 = last)"
            )
        index = self.layer % (num_layers + 1)
        if self.reads_head and index != num_layers:
            raise InputError(
                f"readout {self.name!r} reads the LM head, which takes the last layer's states: "
                f"layer must be -1 (or {num_layers}), got {self.layer}"
            )
        return index
