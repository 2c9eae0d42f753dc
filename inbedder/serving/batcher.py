"""Dynamic batching: concurrent requests merged into the model's ``encode`` calls.

Requests wait in a bounded queue. One worker thread takes what has arrived within a short
window (up to ``max_batch_texts``), groups it by readout and layer, and runs each group as one
``encode`` call, whose length-sorted, token-budgeted batches then mix the requests' texts;
requests that ask different questions of the same texts go through one ``encode_multi``. Each
request gets exactly its own vectors, in order. A merged call that fails is retried request by
request, so that only the request at fault gets the error. A request cancelled before the worker
takes it (its client went away) costs nothing.

A large request does not hold the worker: it is taken a slice at a time (``slice_texts`` texts,
``slice_chars`` characters), and a request with slices left goes to the back of the queue, so a
small request that arrives meanwhile joins the next merged call (round robin, as
text-embeddings-inference and infinity schedule). A request whose client has gone sends no more slices.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np


class QueueFull(RuntimeError):
    """The queue holds ``max_queue`` texts already: the caller should retry later."""


class Closed(RuntimeError):
    """The batcher is shutting down and takes no new requests."""


class Abandoned(Exception):
    """Every request of a merged call was given up by its client: the call stops at the next batch."""


@dataclass
class Job:
    """One request: its texts, one instruction per text, the readout and layer, and its result.

    ``sent`` texts have gone to the model so far; ``parts`` hold the vectors and prompt tokens of
    each finished slice, in order.
    """

    texts: list[str]
    instructions: list[str | None]
    readout: str | None = None
    layer: int | None = None
    future: Future = field(default_factory=Future)
    abandoned: threading.Event = field(default_factory=threading.Event)
    sent: int = 0
    parts: list[tuple[np.ndarray, int]] = field(default_factory=list)

    @property
    def group(self) -> tuple[str | None, int | None]:
        return self.readout, self.layer

    @property
    def left(self) -> int:
        return len(self.texts) - self.sent


@dataclass(frozen=True)
class Piece:
    """A slice of one request that goes into a merged call: texts ``start`` to ``end`` of ``job``."""

    job: Job
    start: int
    end: int

    @property
    def texts(self) -> list[str]:
        return self.job.texts[self.start : self.end]

    @property
    def instructions(self) -> list[str | None]:
        return self.job.instructions[self.start : self.end]

    @property
    def group(self) -> tuple[str | None, int | None]:
        return self.job.group


@dataclass(frozen=True)
class Result:
    """A request's vectors (n, dim) and how many prompt tokens they took."""

    vectors: np.ndarray
    prompt_tokens: int


class Batcher:
    """Merges concurrent requests into ``model.encode`` calls on one worker thread.

    Args:
        model: an ``InBedder`` (or anything with its ``encode``, ``encode_multi`` and ``prompts``).
        max_queue: the most texts waiting at once; ``submit`` raises ``QueueFull`` beyond it.
        max_batch_texts: the most texts one merged call takes.
        slice_texts, slice_chars: the most texts, and characters, one request sends to one merged call.
        max_wait: seconds the worker waits, once a request arrives, for others to join it.
        cache: the persistent store ``encode`` reads and fills (None: the model's default).
        on_batch: called with the number of texts of each merged call (for metrics).
    """

    def __init__(
        self,
        model: Any,
        *,
        max_queue: int = 4096,
        max_batch_texts: int = 256,
        slice_texts: int = 32,
        slice_chars: int = 4_000,
        max_wait: float = 0.005,
        cache: Any = None,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.model, self.max_queue, self.max_batch_texts, self.max_wait = model, max_queue, max_batch_texts, max_wait
        self.slice_texts, self.slice_chars = slice_texts, slice_chars
        self.cache, self.on_batch = cache, on_batch
        self._jobs: deque[Job] = deque()
        self._taken: list[Piece] = []  # the slices of the merged call the worker is running
        self._waiting = 0  # texts in the queue
        self._lock = threading.Condition()
        self._closing = False
        self._worker = threading.Thread(target=self._run, name="inbedder-batcher", daemon=True)
        self._worker.start()

    @property
    def queue_depth(self) -> int:
        """Texts waiting for the model."""
        return self._waiting

    def submit(
        self, texts: list[str], instructions: list[str | None], readout: str | None = None, layer: int | None = None
    ) -> Future:
        """Queue one request; its future gets a ``Result``, or the error ``encode`` raised."""
        job = Job(list(texts), list(instructions), readout, layer)
        with self._lock:
            if self._closing:
                raise Closed("the server is shutting down")
            if self._waiting + len(texts) > self.max_queue:
                raise QueueFull(f"the queue holds {self._waiting} texts; {len(texts)} more would pass {self.max_queue}")
            self._jobs.append(job)
            self._waiting += len(texts)
            self._lock.notify()
        return job.future

    def abandon(self, future: Future) -> None:
        """The client of ``future``'s request went away: drop it from the queue, or, once taken, let
        the merged call stop at its next batch if no other request still waits for it."""
        if future.cancel():
            return
        with self._lock:
            for job in (*(piece.job for piece in self._taken), *self._jobs):  # queued slices are not sent either
                if job.future is future:
                    job.abandoned.set()

    def close(self) -> None:
        """Take no new requests, finish the queued ones, and stop the worker."""
        with self._lock:
            self._closing = True
            self._lock.notify()
        self._worker.join()

    def _run(self) -> None:
        while True:
            pieces = self._take()
            if pieces is None:
                return
            with self._lock:
                self._taken = pieces
            for group in _by_group(pieces).values():
                self._encode(group)
            for piece in pieces:
                self._complete(piece.job)
            with self._lock:
                self._taken = []

    def _take(self) -> list[Piece] | None:
        """The slices of the next merged call (None once closing with nothing left): one slice of each
        waiting request in turn; a request with texts left goes to the back of the queue."""
        with self._lock:
            while not self._jobs and not self._closing:
                self._lock.wait()
            if not self._jobs:
                return None
            deadline = time.monotonic() + self.max_wait
            while self._waiting < self.max_batch_texts and not self._closing:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._lock.wait(left)
            pieces: list[Piece] = []
            texts, again = 0, []
            while self._jobs and texts < self.max_batch_texts:
                job = self._jobs.popleft()
                if job.sent == 0 and not job.future.set_running_or_notify_cancel():  # its client went away
                    self._waiting -= job.left
                    continue
                if job.abandoned.is_set() or job.future.done():  # gone mid-way, or failed on an earlier slice
                    self._waiting -= job.left
                    if not job.future.done():
                        job.future.set_exception(Abandoned())
                    continue
                end = self._slice_end(job, self.max_batch_texts - texts)
                pieces.append(Piece(job, job.sent, end))
                self._waiting -= end - job.sent
                texts += end - job.sent
                job.sent = end
                if job.left:
                    again.append(job)
            self._jobs.extend(again)
            return pieces

    def _slice_end(self, job: Job, room: int) -> int:
        """Where ``job``'s next slice ends: within ``slice_texts``, ``room`` and ``slice_chars`` (a text at least)."""
        end, chars = job.sent, 0
        limit = min(len(job.texts), job.sent + min(self.slice_texts, room))
        while end < limit and (end == job.sent or chars + len(job.texts[end]) <= self.slice_chars):
            chars += len(job.texts[end])
            end += 1
        return end

    def _complete(self, job: Job) -> None:
        """Give ``job`` its vectors once its last slice is in."""
        if job.future.done() or job.left or sum(len(v) for v, _ in job.parts) < len(job.texts):
            return
        vectors = np.concatenate([v for v, _ in job.parts]) if len(job.parts) > 1 else job.parts[0][0]
        job.future.set_result(Result(vectors, sum(tokens for _, tokens in job.parts)))

    def _encode(self, pieces: list[Piece]) -> None:
        """One group (same readout and layer): shared texts through ``encode_multi``, the rest in one ``encode``."""
        readout, layer = pieces[0].group
        options = {"readout": readout, "layer": layer, "cache": self.cache, "return_usage": True}

        def stop_if_abandoned(_batch: list[int]) -> None:
            if all(piece.job.abandoned.is_set() for piece in pieces):
                raise Abandoned

        watch = getattr(self.model, "watch", None)  # an InBedder's; a stand-in model may have none
        watching = watch(stop_if_abandoned) if watch is not None else contextlib.nullcontext()
        done: set[int] = set()
        try:
            with watching:
                self._encode_watched(pieces, options, done)
        except Abandoned:
            for piece in pieces:
                if not piece.job.future.done():
                    piece.job.future.set_exception(Abandoned())
        except Exception as err:
            unfinished = [p for p in pieces if id(p) not in done and not p.job.future.done()]
            if len(unfinished) == 1:
                unfinished[0].job.future.set_exception(err)
                return
            for piece in unfinished:  # one request's fault must not fail the others: each is retried alone
                self._encode([piece])

    def _encode_watched(self, pieces: list[Piece], options: dict[str, Any], done: set[int]) -> None:
        """The merged call itself: ``encode_multi`` for shared texts, one ``encode`` for the rest."""
        multi, single = _split_shared(pieces)
        for texts, asked in multi:
            questions = list(dict.fromkeys(piece.instructions[0] for piece in asked))
            results = self.model.encode_multi(texts, questions, **options)
            by_question = dict(zip(questions, results))
            self._count(len(texts) * len(questions))
            for piece in asked:
                vectors, usage = by_question[piece.instructions[0]]
                self._finish(piece, vectors, sum(usage), done)
        if single:
            texts = [t for piece in single for t in piece.texts]
            instructions = [i for piece in single for i in piece.instructions]
            vectors, usage = self.model.encode(texts, instructions, **options)
            self._count(len(texts))
            start = 0
            for piece in single:
                end = start + len(piece.texts)
                self._finish(piece, vectors[start:end], sum(usage[start:end]), done)
                start = end

    def _finish(self, piece: Piece, vectors: np.ndarray, prompt_tokens: int, done: set[int]) -> None:
        piece.job.parts.append((np.asarray(vectors, dtype=np.float32), prompt_tokens))
        done.add(id(piece))

    def _count(self, texts: int) -> None:
        if self.on_batch is not None:
            self.on_batch(texts)


def _by_group(pieces: list[Piece]) -> dict[tuple[str | None, int | None], list[Piece]]:
    groups: dict[tuple[str | None, int | None], list[Piece]] = {}
    for piece in pieces:
        groups.setdefault(piece.group, []).append(piece)
    return groups


def _split_shared(pieces: list[Piece]) -> tuple[list[tuple[list[str], list[Piece]]], list[Piece]]:
    """Slices asking one question each of the same texts, when their questions differ (for
    ``encode_multi``), and the others."""
    same_texts: dict[tuple[str, ...], list[Piece]] = {}
    single = []
    for piece in pieces:
        if len(set(piece.instructions)) == 1:
            same_texts.setdefault(tuple(piece.texts), []).append(piece)
        else:
            single.append(piece)
    multi = []
    for texts, asked in same_texts.items():
        if len({piece.instructions[0] for piece in asked}) > 1:
            multi.append((list(texts), asked))
        else:
            single.extend(asked)
    return multi, single
