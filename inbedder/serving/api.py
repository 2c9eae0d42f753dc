"""The HTTP API: OpenAI's embeddings routes, plus an instruction per request.

``POST /v1/embeddings``: OpenAI's request (unit-length vectors, ``dimensions`` where a readout's
first numbers stand for the whole) with ``instruction``, ``readout``, ``layer`` and ``normalize``;
``GET /v1/models`` and ``/v1/models/{id}``, ``/health``, ``/metrics``. Errors come in OpenAI's
shape, ``{"error": {"message", "type", "param", "code"}}``, naming the field at fault."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from inbedder import models
from inbedder.errors import InputError
from inbedder.interface import unit_rows
from inbedder.server_settings import ServerSettings
from inbedder.serving.batcher import Batcher, Closed, QueueFull
from inbedder.serving.metrics import Metrics

logger = logging.getLogger(__name__)

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}

DISCONNECT_POLL = 0.05  # seconds between checks that a waiting request's client is still there


class EmbeddingRequest(BaseModel):
    """OpenAI's embeddings request, with inbedder's ``instruction``, ``readout``, ``layer`` and ``normalize``."""

    model_config = ConfigDict(extra="forbid")

    input: str | list[str]
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None
    instruction: str | list[str | None] | None = None
    readout: str | None = None
    layer: int | None = None
    normalize: bool = True
    """Unit-length vectors (OpenAI's convention, after ``dimensions`` too); False: the readout's raw vectors."""


class APIError(Exception):
    """An error answered in OpenAI's shape."""

    def __init__(
        self, status: int, message: str, param: str | None = None, code: str | None = None, retry_after: int = 0
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.retry_after = status, message, param, code, retry_after

    def response(self) -> JSONResponse:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        body = {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}
        headers = {"Retry-After": str(self.retry_after)} if self.retry_after else None
        return JSONResponse(body, status_code=self.status, headers=headers)


class Service:
    """The loaded model, its batcher and metrics; the model loads in the background so that
    ``/health`` can say "loading" meanwhile."""

    def __init__(self, settings: ServerSettings, load: Callable[[], Any]) -> None:
        self.settings, self._load = settings, load
        self.model: Any = None
        self.batcher: Batcher | None = None
        self.error: str | None = None
        self.metrics = Metrics(lambda: self.batcher.queue_depth if self.batcher else 0)
        self._thread = threading.Thread(target=self._start, name="inbedder-load", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _start(self) -> None:
        try:
            model = self._load()
        except Exception as err:  # /health says "failed"; the log and the requests' 503 say why
            self.error = f"{type(err).__name__}: {err}"
            logger.error("the model failed to load: %s", self.error)
            return
        self.batcher = Batcher(
            model,
            max_queue=self.settings.max_queue,
            max_batch_texts=self.settings.max_batch_texts,
            slice_texts=self.settings.slice_texts,
            slice_chars=self.settings.slice_chars,
            max_wait=self.settings.max_wait,
            cache=self.settings.cache,
            on_batch=self.metrics.batch_texts.observe,
        )
        self.model = model

    def close(self) -> None:
        self._thread.join()
        if self.batcher is not None:
            self.batcher.close()

    def names(self) -> set[str]:
        """Names a request may give as ``model``: the served name, its registered name and aliases."""
        names = {self.settings.model, self.model.name}
        registered = models.registered(self.model.name)
        if registered is not None:
            names |= {registered.name, *registered.aliases}
        return names

    def ready(self) -> Any:
        if self.model is None:
            message = f"the model failed to load: {self.error}" if self.error else "the model is still loading"
            raise APIError(503, message, code="model_not_ready", retry_after=0 if self.error else 5)
        return self.model


def create_app(settings: ServerSettings, load: Callable[[], Any] | None = None) -> FastAPI:
    """The server's app; ``load`` makes the model (default: ``InBedder(settings.model, ...)``)."""

    def default_load() -> Any:
        from inbedder.embedder import InBedder

        limits = {"max_batch_tokens": settings.max_batch_tokens, "pad_multiple": settings.pad_multiple}
        return InBedder(settings.model, **limits, device=settings.device, dtype=settings.dtype)

    service = Service(settings, load or default_load)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        service.start()
        yield
        await asyncio.to_thread(service.close)  # requests in flight have finished; the queue is empty

    app = FastAPI(title="inbedder", lifespan=lifespan)
    app.state.service = service
    _answer_errors(app)
    app.add_middleware(Guard, service=service, routes=lambda: app.routes)
    _route(app, service)
    return app


def _answer_errors(app: FastAPI) -> None:
    """Every error in OpenAI's shape: the API's own, unknown routes, invalid bodies, and the server's faults."""

    @app.exception_handler(APIError)
    async def api_error(_request: Request, err: APIError) -> JSONResponse:
        return err.response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, err: StarletteHTTPException) -> JSONResponse:
        # unknown routes and methods answer in OpenAI's shape too, not FastAPI's {"detail": ...}
        response = APIError(err.status_code, str(err.detail), code=_HTTP_CODES.get(err.status_code)).response()
        response.headers.update(err.headers or {})
        return response

    @app.exception_handler(Exception)
    async def bug(_request: Request, err: Exception) -> JSONResponse:
        # the server's fault, logged with its traceback here; the client learns only that
        logger.error("a request failed inside the server", exc_info=err)
        return APIError(500, "the server failed to answer this request", code="internal_error").response()

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, err: RequestValidationError) -> JSONResponse:
        # of a union's failed branches, the one that got furthest says most (input: [1, 2] -> input[0])
        first = max(err.errors(), key=lambda e: len(e.get("loc", ())))
        param = _param(first.get("loc", ()))
        message = first.get("msg", "invalid request")
        if first.get("type") == "extra_forbidden":
            message = "unknown field"
        elif param.startswith("input[") and first.get("type") == "string_type":
            message += " (token ids are not supported: send text)"
        return APIError(400, f"{param}: {message}", param=param).response()


def _route(app: FastAPI, service: Service) -> None:
    """The routes: health, metrics, the model list and the embeddings."""

    @app.get("/health")
    async def health() -> JSONResponse:
        if service.model is not None:
            return JSONResponse({"status": "ok", "model": service.model.name})
        if service.error is not None:  # the reason (paths and all) is in the server's log, not told to anyone
            return JSONResponse({"status": "failed"}, status_code=500)
        return JSONResponse({"status": "loading"}, status_code=503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(service.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [_card(service.ready())]}

    @app.get("/v1/models/{model_id:path}")
    async def retrieve_model(model_id: str) -> dict[str, Any]:
        model = service.ready()
        if model_id not in service.names():
            message = f"model {model_id!r} is not served here; this server has {model.name!r}"
            raise APIError(404, message, "model", "model_not_found")
        return _card(model)

    @app.post("/v1/embeddings")
    async def embeddings(body: EmbeddingRequest, request: Request) -> Response:
        return await _embed(service, body, request)


def _card(model: Any) -> dict[str, Any]:
    """The served model as OpenAI describes a model."""
    return {"id": model.name, "object": "model", "created": 0, "owned_by": "inbedder"}


async def _embed(service: Service, body: EmbeddingRequest, request: Request) -> Response:
    """``POST /v1/embeddings``: checked, counted, queued (dropped if the client goes), answered in OpenAI's shape."""
    start = time.perf_counter()
    model = service.ready()
    texts, instructions = _checked(body, model, service)
    tokens = sum(await asyncio.to_thread(model.prompt_tokens, texts, instructions))  # off the event loop
    if tokens > service.settings.max_request_tokens:
        limit = service.settings.max_request_tokens
        raise APIError(400, f"input takes {tokens} prompt tokens; the limit is {limit} a request: split it", "input")
    try:
        future = service.batcher.submit(texts, instructions, body.readout, body.layer)
    except QueueFull as err:
        raise APIError(503, f"the server is busy ({err}); retry shortly", code="queue_full", retry_after=1) from err
    except Closed as err:
        raise APIError(503, str(err), code="shutting_down", retry_after=1) from err
    waiting = asyncio.wrap_future(future)
    while not waiting.done():
        await asyncio.wait({waiting}, timeout=DISCONNECT_POLL)
        if not waiting.done() and await request.is_disconnected():
            service.batcher.abandon(future)  # dropped from the queue, or its call stops at the next batch
            return Response(status_code=499)
    try:
        result = waiting.result()
    except InputError as err:  # what encode refuses, in its own words; anything else is the server's fault
        raise APIError(400, str(err)) from err
    service.metrics.texts.inc(len(texts))
    service.metrics.latency.observe(time.perf_counter() - start)
    vectors = result.vectors[:, : body.dimensions]  # checked: a prefix stands for the whole
    vectors = unit_rows(vectors) if body.normalize else vectors  # OpenAI's vectors are unit length, cut or not
    data = [
        {"object": "embedding", "index": i, "embedding": _encoded(vector, body.encoding_format)}
        for i, vector in enumerate(vectors)
    ]
    usage = {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens}
    return JSONResponse({"object": "list", "data": data, "model": model.name, "usage": usage})


class Guard:
    """ASGI middleware: the bearer token on ``/v1`` routes (if one is set), and requests counted by status.

    Plain ASGI rather than an ``http`` middleware, which would hide a client's disconnect from the route.
    """

    def __init__(self, app: Any, service: Service, routes: Callable[[], list[Any]]) -> None:
        self.app, self.service, self.routes = app, service, routes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        settings = self.service.settings
        body = _BoundedBody(receive, settings.max_body_bytes)

        async def sending(message: dict) -> None:
            nonlocal status
            if body.overflowed:  # the app answers a body cut short; the client is told why instead, once
                if message["type"] == "http.response.start":
                    status = 413
                    await _too_large(settings.max_body_bytes).response()(scope, receive, send)
                return
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        key, route = settings.api_key, route_label(scope, self.routes())
        declared = int(Request(scope).headers.get("content-length") or 0)
        try:
            if key is not None and route.startswith("/v1/") and not _authorized(Request(scope), key):
                response = APIError(401, "missing or wrong API key", code="invalid_api_key").response()
                await response(scope, receive, sending)
            elif declared > settings.max_body_bytes:
                await _too_large(settings.max_body_bytes).response()(scope, receive, sending)
            else:
                await self.app(scope, body.receive, sending)
        finally:
            self.service.metrics.requests.labels(route=route, status=str(status)).inc()


def _too_large(limit: int) -> APIError:
    return APIError(413, f"the request body is over this server's {limit / 2**20:.0f} MiB limit", code="too_large")


class _BoundedBody:
    """The request's ``receive``, cut off once a body sent without a length passes ``limit`` bytes: the app
    then sees the body end there, and ``Guard`` answers 413 in place of whatever the app says."""

    def __init__(self, receive: Callable, limit: int) -> None:
        self._receive, self.limit, self.received, self.overflowed = receive, limit, 0, False

    async def receive(self) -> dict:
        if self.overflowed:
            return {"type": "http.request", "body": b"", "more_body": False}
        message = await self._receive()
        self.received += len(message.get("body", b""))
        if self.received > self.limit:
            self.overflowed = True
            return {"type": "http.request", "body": b"", "more_body": False}
        return message


def route_label(scope: dict, routes: list[Any]) -> str:
    """The route's template (``/v1/embeddings``) for metrics; every path no route serves is one label,
    so that no client can grow the metrics, or read another's paths there."""
    from starlette.routing import Match

    for route in routes:
        if route.matches(scope)[0] is Match.FULL:
            return getattr(route, "path", "other")
    return "unmatched"


def _checked(body: EmbeddingRequest, model: Any, service: Service) -> tuple[list[str], list[str | None]]:
    """The request's texts and one instruction per text, or an ``APIError`` naming the field at fault."""
    settings = service.settings
    if body.model is not None and body.model not in service.names():
        raise APIError(
            404, f"model {body.model!r} is not served here; this server has {model.name!r}", "model", "model_not_found"
        )
    texts = [body.input] if isinstance(body.input, str) else body.input
    if not texts:
        raise APIError(400, "input must hold at least one text", "input")
    if len(texts) > settings.max_inputs:
        raise APIError(400, f"input has {len(texts)} texts; the limit is {settings.max_inputs}", "input")
    for i, text in enumerate(texts):
        param = "input" if isinstance(body.input, str) else f"input[{i}]"
        if not text.strip():
            raise APIError(400, f"{param} is empty; every text must have some content", param)
        if len(text) > settings.max_chars:
            raise APIError(400, f"{param} has {len(text)} characters; the limit is {settings.max_chars}", param)
        _check_encodable(text, param)
    if isinstance(body.instruction, list):
        if len(body.instruction) != len(texts):
            raise APIError(
                400, f"instruction has {len(body.instruction)} entries for {len(texts)} inputs", "instruction"
            )
        instructions = list(body.instruction)
    else:
        instructions = [body.instruction] * len(texts)
    first = {instruction: i for i, instruction in reversed(list(enumerate(instructions)))}
    for instruction, i in first.items():  # each distinct one, checked alone before it can join anyone's batch
        if instruction is not None:
            param = f"instruction[{i}]" if isinstance(body.instruction, list) else "instruction"
            _check_instruction(model, instruction, param, settings)
    _check_readout(model, body.readout, body.layer)
    if body.dimensions is not None:
        try:
            model.check(readout=body.readout, layer=body.layer, truncate_dim=body.dimensions)
        except InputError as err:
            raise APIError(400, f"dimensions: {err}", "dimensions") from err
    _check_response_size(model, body, len(texts), settings)
    return texts, instructions


def _check_encodable(text: str, param: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:  # a lone surrogate ("\ud800"), which no tokenizer takes
        raise APIError(
            400, f"{param} is not valid Unicode text at character {err.start}: {err.reason}", param
        ) from None


def _check_instruction(model: Any, instruction: str, param: str, settings: ServerSettings) -> None:
    if len(instruction) > settings.max_instruction_chars:
        raise APIError(
            400, f"{param} has {len(instruction)} characters; the limit is {settings.max_instruction_chars}", param
        )
    _check_encodable(instruction, param)
    try:
        model.prompt_tokens(["text"], instruction)
    except InputError as err:  # too long for max_length, a field the template lacks, ...
        raise APIError(400, f"{param}: {err}", param) from err


BYTES_PER_NUMBER = {"float": 20, "base64": 4 * 4 / 3}
"""What one embedding number costs in the response body, at most (JSON float text) or exactly (base64)."""


def _check_response_size(model: Any, body: EmbeddingRequest, count: int, settings: ServerSettings) -> None:
    size = count * (body.dimensions or model.dimension(body.readout)) * BYTES_PER_NUMBER[body.encoding_format]
    if size > settings.max_response_bytes:
        hint = "send fewer inputs" + (
            ", or encoding_format base64 (a third the size)" if body.encoding_format == "float" else ""
        )
        raise APIError(
            400,
            f"the response would be about {size / 2**20:.0f} MiB ({count} vectors of "
            f"{body.dimensions or model.dimension(body.readout)} "
            f"numbers), over this server's {settings.max_response_bytes / 2**20:.0f} MiB limit; {hint}",
            "input",
        )


def _check_readout(model: Any, readout: str | None, layer: int | None) -> None:
    """``model.check`` of the readout (at the model's layer), then of the layer: the error names its field."""
    for param, asked in (("readout", {"readout": readout}), ("layer", {"readout": readout, "layer": layer})):
        try:
            model.check(**asked)
        except InputError as err:
            raise APIError(400, str(err), param) from err


def _encoded(vector: np.ndarray, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":  # as OpenAI sends it: little-endian float32 bytes
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return vector.tolist()


def _authorized(request: Request, key: str) -> bool:
    given = request.headers.get("authorization", "")
    scheme, _, token = given.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.encode(), key.encode())


def _param(location: tuple | list) -> str:
    """``("body", "input", 0)`` -> ``input[0]``."""
    parts = [p for p in location if p != "body"]
    param = ""
    for part in parts:
        if isinstance(part, int):
            param += f"[{part}]"
        elif part not in ("str", "list[str]", "list[union[str,none]]") and not str(part).startswith(
            ("literal", "list[")
        ):
            param += f".{part}" if param else str(part)
    return param or "body"
