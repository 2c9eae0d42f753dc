"""``inbedder serve``: the OpenAI-compatible embeddings server."""

from __future__ import annotations

import ctypes
import ipaddress
import os
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from inbedder import models
from inbedder.cli.common import DeviceOption, DtypeOption, ModelOption, check_dtype, checked_store
from inbedder.errors import InputError

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


def serve(
    model: ModelOption = models.DEFAULT_MODEL,
    host: Annotated[
        str, typer.Option(help="Address to bind; other than localhost only when you mean it.")
    ] = "127.0.0.1",
    port: int = 8080,
    cache: Annotated[
        Path | None, typer.Option(help="A persistent store (SQLite file or folder) that serves repeated texts.")
    ] = None,
    max_batch_tokens: Annotated[
        int | None, typer.Option(help="Padded tokens per forward pass (default: 1024 on CPU, no limit on CUDA).")
    ] = None,
    max_inputs: Annotated[int, typer.Option(help="Most texts in one request.")] = 2048,
    max_chars: Annotated[int, typer.Option(help="Longest text, in characters.")] = 32_000,
    max_instruction_chars: Annotated[int, typer.Option(help="Longest instruction, in characters.")] = 2_000,
    max_request_tokens: Annotated[
        int,
        typer.Option(help="Most prompt tokens in a request (a text counts up to the model's longest prompt)."),
    ] = 262_144,
    max_body_mb: Annotated[int, typer.Option(help="Largest request body, in MiB.")] = 16,
    max_response_mb: Annotated[
        int, typer.Option(help="Largest response body, in MiB; bigger requests are refused before any work.")
    ] = 64,
    max_queue: Annotated[
        int, typer.Option(help="Most texts waiting; beyond it requests get 503 + Retry-After.")
    ] = 4096,
    request_timeout: Annotated[
        float, typer.Option(help="Seconds a client has to send a request's headers and body; then it is disconnected.")
    ] = 30.0,
    limit_concurrency: Annotated[
        int, typer.Option(help="Most connections and requests at once; beyond it new ones get 503.")
    ] = 512,
    device: DeviceOption = "auto",
    dtype: DtypeOption = None,
    api_key_env: Annotated[
        str | None, typer.Option(help="Environment variable holding a bearer token that /v1 requests must send.")
    ] = None,
) -> None:
    """Serve embeddings over HTTP: OpenAI's POST /v1/embeddings (plus an instruction), /v1/models, /health, /metrics."""
    limits = {
        "--max-inputs": max_inputs,
        "--max-chars": max_chars,
        "--max-instruction-chars": max_instruction_chars,
        "--max-request-tokens": max_request_tokens,
        "--max-body-mb": max_body_mb,
        "--limit-concurrency": limit_concurrency,
        "--max-response-mb": max_response_mb,
        "--max-queue": max_queue,
    }
    for name, value in limits.items():
        if value < 1:
            raise InputError(f"{name} must be at least 1, got {value}")
    if not request_timeout > 0:
        raise InputError(f"--request-timeout must be a positive number of seconds, got {request_timeout}")
    if max_batch_tokens is not None and max_batch_tokens < 1:
        raise InputError(f"--max-batch-tokens must be at least 1, got {max_batch_tokens}")
    api_key = None
    if api_key_env is not None:
        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise InputError(f"--api-key-env {api_key_env}: that environment variable is not set or empty")
    elif not _is_loopback(host):
        typer.echo(f"warning: serving on {host} without --api-key-env: anyone who can reach it can use it", err=True)
    check_dtype(dtype)
    # oneDNN keeps compiled kernels for every shape of batch it meets; a server meets many, so its memory
    # would grow for hours. A bounded cache keeps the most used (set before torch runs anything).
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(ONEDNN_CACHE_CAPACITY))
    fix_mmap_threshold()
    store = str(checked_store(cache).path) if cache is not None else None
    from inbedder.loading import read_config

    try:  # a model that cannot be found is refused now, not by every request after the server has started
        read_config(models.resolve(model))
    except (OSError, ValueError) as err:
        raise InputError(f"cannot serve {model!r}: {err}") from err

    import uvicorn

    from inbedder.serving import ServerSettings, create_app
    from inbedder.serving.protocol import timed_protocol

    settings = ServerSettings(
        model=model,
        cache=store,
        max_batch_tokens=max_batch_tokens,
        max_inputs=max_inputs,
        max_chars=max_chars,
        max_instruction_chars=max_instruction_chars,
        max_request_tokens=max_request_tokens,
        max_body_bytes=max_body_mb * 2**20,
        max_response_bytes=max_response_mb * 2**20,
        max_queue=max_queue,
        api_key=api_key,
        device=device,
        dtype=dtype,
    )
    # uvicorn shuts down gracefully on SIGTERM and Ctrl-C (stop accepting, finish what is in flight), then
    # raises the signal again for the handler it found; a no-op one lets the command end with exit code 0
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


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
