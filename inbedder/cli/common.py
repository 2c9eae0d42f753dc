"""What the commands share: option types, early checks, and turning Ctrl-C into a message."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Annotated, Any

import typer

from inbedder.errors import InputError, Interrupted
from inbedder.model_settings import DTYPES
from inbedder.postprocess import POSTPROCESSING
from inbedder.readout import READOUTS, check_readout_name

ModelOption = Annotated[str, typer.Option("--model", "-m", help="Registered name, directory, .gguf file or hub id.")]
ReadoutOption = Annotated[str | None, typer.Option(help=f"One of {', '.join(READOUTS)} (default: the model's).")]
LayerOption = Annotated[int | None, typer.Option(help="Layer to read: 0 = embeddings, -1 = last (default).")]
TemplateOption = Annotated[
    str | None, typer.Option(help="'qa' (default), 'chat', or a pattern with {input} and {instruction}.")
]
DeviceOption = Annotated[str, typer.Option(help="auto (CUDA when available), cpu or cuda.")]
DtypeOption = Annotated[
    str | None,
    typer.Option(
        help="Weights' dtype: auto (bfloat16 on a CPU with AMX or AVX-512 BF16 and on CUDA, else float32), "
        "float32, bfloat16 or float16 (default: the model's setting, else auto)."
    ),
]
PostprocessOption = Annotated[
    str | None,
    typer.Option(help=f"Over the whole corpus: {', '.join(POSTPROCESSING)} (default: none)."),
]


def check_dtype(dtype: str | None) -> None:
    if dtype is not None and dtype not in DTYPES:
        raise InputError(f"unknown --dtype {dtype!r}; choose one of {', '.join(DTYPES)}")


def check_readout(readout: str | None) -> None:
    if readout is not None:
        check_readout_name(readout)


ProgressOption = Annotated[
    bool | None,
    typer.Option("--progress/--no-progress", help="Progress bars (default: only when stderr is a terminal)."),
]


def on_terminal(progress: bool | None) -> bool:
    """Whether to draw progress bars: as asked, else only on a terminal (a log file gets none)."""
    return sys.stderr.isatty() if progress is None else progress


def checked_store(spec: object) -> Any:
    """The persistent cache ``spec`` names, refused now (one line) if it cannot be used or written."""
    from inbedder.cache import check_writable, open_cache

    store = open_cache(spec)
    if store is not None:
        check_writable(store.path)
    return store


@contextlib.contextmanager
def interruptible(kept: str) -> Iterator[None]:
    """Turn Ctrl-C inside the block into ``Interrupted``, whose message says ``kept``."""
    try:
        yield
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted: {kept}") from None


def given(**options: object) -> dict[str, object]:
    """The options the user set: the model's own defaults stand for the rest."""
    return {name: value for name, value in options.items() if value is not None}


def int_option(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise InputError(f"--{name} must be an integer or 'auto', got {value!r}") from None
