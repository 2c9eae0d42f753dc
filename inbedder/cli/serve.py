"""``inbedder serve``: the OpenAI-compatible embeddings server."""

from __future__ import annotations

import ctypes
import ipaddress
import os
import signal
import sys
from typing import Annotated, Any

import typer

from inbedder import models
from inbedder.cli.common import ModelOption, checked_store
from inbedder.cli.declared import build, takes_fields
from inbedder.errors import InputError
from inbedder.server_settings import ServerSettings

ONEDNN_CACHE_CAPACITY = 256
"""Compiled oneDNN kernels the server keeps (oneDNN's default: 1,024), unless $ONEDNN_PRIMITIVE_CACHE_CAPACITY says."""
KEEP_ALIVE = 5
"""Seconds an idle kept-alive connection stays open."""


MMAP_THRESHOLD = 128 * 1024
"""Bytes from which glibc serves a block by mmap, returned to the system when freed (its own default)."""


def fix_mmap_threshold() -> None:
    """Keep glibc's mmap threshold at its default instead of letting it rise (glibc only; once, at start).

    glibc raises the threshold each time a large mmapped block is freed, so later large blocks (a
    request's tensors) come from the heap, where they fragment and are not returned: a long-running
    server's memory then creeps up. Setting the threshold fixes it. ``$MALLOC_MMAP_THRESHOLD_`` wins.
    """
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (musl has no such threshold)
        return
    libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)


M_MMAP_THRESHOLD = -3
"""glibc's ``mallopt`` parameter number for the mmap threshold."""


@takes_fields(ServerSettings, "limits", panel="Server")
def serve(
    model: ModelOption = models.DEFAULT_MODEL,
    host: Annotated[
        str, typer.Option(help="Address to bind; other than localhost only when you mean it.")
    ] = "127.0.0.1",
    port: int = 8080,
    max_body_mb: Annotated[int, typer.Option(help="Largest request body, in MiB.")] = 16,
    max_response_mb: Annotated[
        int, typer.Option(help="Largest response body, in MiB; bigger requests are refused before any work.")
    ] = 64,
    request_timeout: Annotated[
        float, typer.Option(help="Seconds a client has to send a request's headers and body; then it is disconnected.")
    ] = 30.0,
    limit_concurrency: Annotated[
        int, typer.Option(help="Most connections and requests at once; beyond it new ones get 503.")
    ] = 512,
    api_key_env: Annotated[
        str | None, typer.Option(help="Environment variable holding a bearer token that /v1 requests must send.")
    ] = None,
    limits: dict[str, Any] | None = None,
) -> None:
    """Serve embeddings over HTTP: OpenAI's POST /v1/embeddings (plus an instruction), /v1/models, /health, /metrics."""
    for name, value in (("--max-body-mb", max_body_mb), ("--max-response-mb", max_response_mb)):
        if value < 1:
            raise InputError(f"{name} must be at least 1, got {value}")
    limits = dict(limits or {})
    if limits["cache"] is not None:
        limits["cache"] = str(checked_store(limits["cache"]).path)
    mib = {"max_body_bytes": max_body_mb * 2**20, "max_response_bytes": max_response_mb * 2**20}
    settings = build(ServerSettings, limits, model=model, api_key=_api_key(api_key_env, host), **mib)
    if limit_concurrency < 1:
        raise InputError(f"--limit-concurrency must be at least 1, got {limit_concurrency}")
    if not request_timeout > 0:
        raise InputError(f"--request-timeout must be a positive number of seconds, got {request_timeout}")
    # oneDNN keeps compiled kernels for every shape of batch it meets; a server meets many, so its memory
    # would grow for hours. A bounded cache keeps the most used (set before torch runs anything).
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(ONEDNN_CACHE_CAPACITY))
    fix_mmap_threshold()
    from inbedder.loading import read_config

    try:  # a model that cannot be found is refused now, not by every request after the server has started
        read_config(models.resolve(model))
    except (OSError, ValueError) as err:
        raise InputError(f"cannot serve {model!r}: {err}") from err

    _run(settings, host, port, request_timeout, limit_concurrency)


def _run(settings: ServerSettings, host: str, port: int, request_timeout: float, limit_concurrency: int) -> None:
    """The app on uvicorn until SIGTERM or Ctrl-C, which it answers gracefully (stop accepting, finish what is
    in flight), then raises again for the handler it found: a no-op one lets the command end with exit code 0."""
    import uvicorn

    from inbedder.serving import create_app
    from inbedder.serving.protocol import timed_protocol

    for received in (signal.SIGTERM, signal.SIGINT):
        signal.signal(received, lambda *_: None)
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_level="info",
        http=timed_protocol(request_timeout),
        limit_concurrency=limit_concurrency,
        timeout_keep_alive=KEEP_ALIVE,
    )


def _api_key(variable: str | None, host: str) -> str | None:
    """The bearer token in ``$variable``; without one, a warning when the server is reachable from elsewhere."""
    if variable is None:
        if not _is_loopback(host):
            typer.echo(
                f"warning: serving on {host} without --api-key-env: anyone who can reach it can use it", err=True
            )
        return None
    key = os.environ.get(variable)
    if not key:
        raise InputError(f"--api-key-env {variable}: that environment variable is not set or empty")
    return key


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
