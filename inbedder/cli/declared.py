"""Command-line options built from the library's dataclasses, so no command declares them again.

A dataclass field whose metadata has ``cli`` (``inbedder.options.cli``: help, flag, type, default)
becomes an option of every command that ``takes_fields`` of its class; the command receives the
values the user gave, by field name, in one parameter. A new ``EncodeOptions`` field with ``cli``
metadata is then on ``encode`` and ``cluster`` (and reaches Ray and the library through the
options object) with no command edited.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable, Collection
from typing import Annotated, Any

import typer

from inbedder.errors import InputError
from inbedder.options import UNSET


def cli_fields(
    cls: type, exclude: Collection[str] = (), only: Collection[str] | None = None
) -> list[dataclasses.Field]:
    """The fields of ``cls`` that are on the command line (``cli`` metadata), less ``exclude`` (or ``only`` those)."""
    chosen = [f for f in dataclasses.fields(cls) if "cli" in f.metadata and f.name not in exclude]
    return [f for f in chosen if only is None or f.name in only]


def parameter_name(item: dataclasses.Field) -> str:
    """The command's parameter for a field: its flag's name (``--normalize`` -> ``normalize``)."""
    flag = item.metadata["cli"]["flag"]
    return flag.split("/")[0].removeprefix("--").replace("-", "_") if flag else item.name


def _parameter(item: dataclasses.Field, hints: dict[str, Any], panel: str) -> inspect.Parameter:
    spec = item.metadata["cli"]
    kind = spec["type"] if spec["type"] is not None else hints[item.name]
    default = item.default if spec["default"] is UNSET else spec["default"]
    declared = (spec["flag"],) if spec["flag"] else ()
    option = typer.Option(*declared, help=spec["help"], rich_help_panel=panel)
    return inspect.Parameter(
        parameter_name(item), inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[kind, option]
    )


def takes_fields(
    cls: type,
    into: str,
    *,
    exclude: Collection[str] = (),
    only: Collection[str] | None = None,
    panel: str | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a command one option per command-line field of ``cls`` (less ``exclude``, or ``only`` those); the
    command gets their values as ``{field name: value}`` in its parameter ``into``."""
    chosen = cli_fields(cls, exclude, only)
    hints = typing.get_type_hints(cls)
    heading = panel or f"{cls.__name__} options"

    def wrap(command: Callable[..., Any]) -> Callable[..., Any]:
        own = [p for name, p in inspect.signature(command, eval_str=True).parameters.items() if name != into]
        added = [_parameter(item, hints, heading) for item in chosen]
        clashes = {p.name for p in own} & {p.name for p in added}
        if clashes:
            raise TypeError(f"{command.__name__} declares {sorted(clashes)} itself and takes them from {cls.__name__}")

        @functools.wraps(command)
        def run(**given: Any) -> Any:
            values = {item.name: given.pop(parameter_name(item)) for item in chosen}
            return command(**given, **{into: values})

        keyword = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own]
        run.__signature__ = inspect.Signature([*keyword, *added])  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in [*keyword, *added]}  # evaluated: typer reads them
        del run.__wrapped__  # typer reads the signature above, not the command's
        return run

    return wrap


def build(cls: type, values: dict[str, Any], **more: Any) -> Any:
    """``cls(**values, **more)``; a refusal that starts with a field's name names its flag instead
    (``batch_size must be ...`` -> ``--batch-size must be ...``), so the message says what to change."""
    try:
        return cls(**values, **more)
    except InputError as err:
        message = str(err)
        for item in cli_fields(cls):
            if message.startswith(item.name + " ") or message.startswith(item.name + "="):
                flag = "--" + parameter_name(item).replace("_", "-")
                raise InputError(flag + message[len(item.name) :]) from None
        raise
