"""The options of one ``encode`` call, declared once.

``InBedder.encode`` and ``encode_multi`` take them as keywords or as an ``EncodeOptions``
object (keywords win over the object's values); the CLI, the evaluation harness and
clustering build the same object. Whatever a model's defaults say (readout, layer,
template, postprocess: None here) is filled in by the model.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, TypeVar

from inbedder.errors import InputError, check_positive_int
from inbedder.postprocess import POSTPROCESSING
from inbedder.readout import READOUTS

Fields = Mapping[str, Sequence[str]] | Sequence[Mapping[str, str]]
UNSET: Any = object()


def cli(help: str, flag: str | None = None, *, type: Any = None, default: Any = UNSET) -> dict[str, Any]:
    """A field's metadata that puts it on the command line (``inbedder.cli.declared``): its help, its flag
    (default: ``--`` and its name with dashes), the type the command line reads (default: the field's) and
    the command line's default (default: the field's). A field without it is for the Python API only."""
    return {"cli": {"help": help, "flag": flag, "type": type, "default": default}}


@dataclass(frozen=True)
class EncodeOptions:
    """How ``encode`` embeds one corpus.

    Attributes:
        batch_size, show_progress_bar, normalize_embeddings, convert_to_numpy,
            convert_to_tensor: as in sentence-transformers. Texts are batched by length
            and results come back in input order.
        readout, layer, template, postprocess: override the model's defaults for this call
            (None: the model's). Post-processing uses statistics over the call's texts, so
            encode a corpus in one call.
        fields: per-text values for extra ``{name}`` placeholders in the template or
            instruction: a mapping of name to one value per text, or one mapping per text.
        max_new_tokens, temperature, top_p, seed: decoding for the readouts that generate
            (greedy at temperature 0). A masked LM's answer is one token per mask slot
            (argmax, or sampled above temperature 0); max_new_tokens does not apply.
        num_samples: for ``readout="re_encode"``: embed this many sampled answers per text
            and average them (above 1, needs ``temperature > 0``).
        filter_words: words whose answer tokens ``avg_gen`` skips.
        truncate_dim: keep only the first ``truncate_dim`` numbers of each vector (the
            sentence-transformers name), for readouts whose prefix stands for the whole (a
            projected head, ``fst_head_rp``: its first d numbers are the d-number projection);
            refused for the others. Normalization applies after it.
        return_generations: also return the answers (generating them for single-pass
            readouts too); with ``num_samples > 1``, a list of the ``num_samples`` answers per text.
        return_usage: also return each text's prompt length in tokens (what the model read,
            instruction and template included), last in the returned tuple: ``(vectors, usage)``,
            or ``(vectors, answers, usage)`` with ``return_generations``.
        cache: the persistent cache: None for the model's default (its ``cache``), False for
            none, True for the store under ``$INBEDDER_CACHE``, or a path. Raw vectors and
            answers are stored, so post-processing and normalization still apply to the
            call's texts. Sampling without a ``seed`` is never cached.
    """

    batch_size: int = field(default=16, metadata=cli("Texts per forward pass."))
    show_progress_bar: bool | None = field(
        default=None,
        metadata=cli("Progress bars (default: only when stderr is a terminal).", flag="--progress/--no-progress"),
    )
    normalize_embeddings: bool = field(
        default=False, metadata=cli("Scale each embedding to unit length.", "--normalize")
    )
    convert_to_numpy: bool = True
    convert_to_tensor: bool = False
    readout: str | None = field(default=None, metadata=cli(f"One of {', '.join(READOUTS)} (default: the model's)."))
    layer: int | None = field(default=None, metadata=cli("Layer to read: 0 = embeddings, -1 = last (default)."))
    template: Any = field(
        default=None,
        metadata=cli("'qa' (default), 'chat', or a pattern with {input} and {instruction}.", type=str | None),
    )
    postprocess: str | None = field(
        default=None, metadata=cli(f"Over the whole corpus: {', '.join(POSTPROCESSING)} (default: none).")
    )
    fields: Fields | None = None
    max_new_tokens: int = field(default=8, metadata=cli("Answer length for generating readouts."))
    temperature: float = field(default=0.0, metadata=cli("0 decodes greedily; above 0 samples."))
    top_p: float = field(default=1.0, metadata=cli("Sample from the smallest set of tokens this likely (nucleus)."))
    seed: int | None = field(default=None, metadata=cli("Seed of the sampling (temperature above 0)."))
    num_samples: int = field(
        default=1, metadata=cli("For --readout re_encode: average this many sampled answers (needs --temperature).")
    )
    filter_words: Iterable[str] | None = field(
        default=None,
        metadata=cli("A word whose answer tokens avg_gen skips. Repeatable.", "--filter-word", type=list[str] | None),
    )
    truncate_dim: int | None = field(
        default=None,
        metadata=cli("Keep the first N numbers (readouts whose prefix stands for the whole: fst_head_rp)."),
    )
    return_generations: bool = field(
        default=False, metadata=cli("Also write the generated answers (parquet: 'answer' column).")
    )
    return_usage: bool = False
    cache: Any = field(  # bool, a path, or an EmbeddingCache
        default=None,
        metadata=cli(
            "Reuse embeddings stored by earlier runs ($INBEDDER_CACHE) and store new ones.", type=bool, default=False
        ),
    )

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_new_tokens", "num_samples"):
            check_positive_int(name, getattr(self, name))
        check_positive_int("truncate_dim", self.truncate_dim, optional=True)
        if self.layer is not None and (isinstance(self.layer, bool) or not isinstance(self.layer, int)):
            raise InputError(f"layer must be an int (negative counts from the last), got {self.layer!r}")
        if not (isinstance(self.temperature, (int, float)) and self.temperature >= 0):
            raise InputError(f"temperature must be >= 0, got {self.temperature!r}")
        if not (isinstance(self.top_p, (int, float)) and 0 < self.top_p <= 1):
            raise InputError(f"top_p must be in (0, 1], got {self.top_p!r}")

    @classmethod
    def build(cls, options: EncodeOptions | None = None, **overrides: Any) -> EncodeOptions:
        """``options`` (or the defaults) with ``overrides``; an unknown keyword is refused by name."""
        if options is not None and not isinstance(options, cls):
            raise TypeError(f"options must be an EncodeOptions, got {type(options).__name__}")
        unknown = sorted(set(overrides) - set(OPTION_NAMES))
        if unknown:
            raise TypeError(f"unknown encode option(s) {unknown}; the options are {list(OPTION_NAMES)}")
        return replace(options or cls(), **overrides)


OPTION_NAMES = tuple(f.name for f in fields(EncodeOptions))

F = TypeVar("F", bound=Callable[..., Any])


def takes_encode_options(function: F) -> F:
    """Show ``function(..., options=None, **overrides)`` with every option as a keyword, for ``help()`` and IDEs."""
    signature = inspect.signature(function)
    kept = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    defaults = EncodeOptions()
    keywords = [
        inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=getattr(defaults, f.name), annotation=f.type)
        for f in fields(EncodeOptions)
    ]
    function.__signature__ = signature.replace(parameters=[*kept, *keywords])  # type: ignore[attr-defined]
    return function
