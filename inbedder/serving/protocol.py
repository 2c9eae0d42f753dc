"""uvicorn's HTTP/1.1 protocol with a deadline for each request's headers and body.

uvicorn closes a keep-alive connection that stays idle after a response, but waits forever for a
request whose headers or body arrive a byte at a time (slowloris), and for a new connection that
sends nothing: thousands of those hold memory and file descriptors. Here every request must have
arrived whole within ``request_timeout`` seconds of its first byte (of the connection, for the
first); a client still sending then is disconnected. The work a request has started is not cut:
the deadline ends once the request is in.
"""

from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

REQUEST_TIMEOUT = 30.0
"""Seconds a client has to send a request's headers and body (``inbedder serve --request-timeout``)."""


class TimedH11Protocol(H11Protocol):
    """``H11Protocol`` that disconnects a client which has not sent its whole request within ``request_timeout``."""

    request_timeout = REQUEST_TIMEOUT

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._deadline: asyncio.TimerHandle | None = None
        self._start_deadline()

    def data_received(self, data: bytes) -> None:
        if self._deadline is None and self.conn.their_state is h11.IDLE:
            self._start_deadline()  # the first byte of the next request on a kept-alive connection
        super().data_received(data)
        if self.conn.their_state is h11.DONE:  # the whole request is in: the app's work is not timed here
            self._stop_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_deadline()
        super().connection_lost(exc)

    def _start_deadline(self) -> None:
        self._stop_deadline()
        self._deadline = self.loop.call_later(self.request_timeout, self._expired)

    def _stop_deadline(self) -> None:
        if getattr(self, "_deadline", None) is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self.conn.their_state is not h11.DONE and not self.transport.is_closing():
            self.transport.close()


def timed_protocol(request_timeout: float) -> type[TimedH11Protocol]:
    """The protocol class with its deadline set (uvicorn takes a class, not an instance)."""
    return type("TimedH11Protocol", (TimedH11Protocol,), {"request_timeout": request_timeout})
