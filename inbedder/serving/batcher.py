"""Dynamic batching: concurrent requests merged into the model's ``encode`` calls.

Requests wait in a bounded queue. One worker thread takes what has arrived within a short
window (up to ``max_batch_texts``), groups it by readout and layer, and runs each group as one
``encode`` call, whose length-sorted, token-budgeted batches then mix the requests' texts;
requests that ask different questions of the same texts go through one ``encode_multi``. Each
request gets exactly its own vectors, in order. A merged call that fails is retried request by
request, so that only the request at fault gets the error. A request cancelled before the worker
takes it (its client went away) costs nothing.
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
    """One request: its texts, one instruction per text, the readout and layer, and its result."""

    texts: list[str]
    instructions: list[str | None]
    readout: str | None = None
    layer: int | None = None
    future: Future = field(default_factory=Future)
    abandoned: threading.Event = field(default_factory=threading.Event)

    @property
    def group(self) -> tuple[str | None, int | None]:
        return self.readout, self.layer


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
        max_wait: float = 0.005,
        cache: Any = None,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.model, self.max_queue, self.max_batch_texts, self.max_wait = model, max_queue, max_batch_texts, max_wait
        self.cache, self.on_batch = cache, on_batch
        self._jobs: deque[Job] = deque()
        self._taken: list[Job] = []  # the requests of the merged call the worker is running
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
            for job in self._taken:
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
            jobs = self._take()
            if jobs is None:
                return
            with self._lock:
                self._taken = jobs
            for group in _by_group(jobs).values():
                self._encode(group)
            with self._lock:
                self._taken = []

    def _take(self) -> list[Job] | None:
        """The requests of the next merged call (None once closing with nothing left)."""
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
            jobs, texts = [], 0
            while self._jobs and (not jobs or texts + len(self._jobs[0].texts) <= self.max_batch_texts):
                job = self._jobs.popleft()
                self._waiting -= len(job.texts)
                if job.future.set_running_or_notify_cancel():  # False: its client went away
                    jobs.append(job)
                    texts += len(job.texts)
            return jobs

    def _encode(self, jobs: list[Job]) -> None:
        """One group (same readout and layer): shared texts through ``encode_multi``, the rest in one ``encode``."""
        readout, layer = jobs[0].group
        options = {"readout": readout, "layer": layer, "cache": self.cache, "return_usage": True}

        def stop_if_abandoned(_batch: list[int]) -> None:
            if all(job.abandoned.is_set() for job in jobs):
                raise Abandoned

        runner = getattr(self.model, "runner", None)  # an InBedder's; a stand-in model may have none
        watching = runner.watch(stop_if_abandoned) if runner is not None else contextlib.nullcontext()
        try:
            with watching:
                self._encode_watched(jobs, options)
        except Abandoned:
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(Abandoned())
        except Exception as err:
            unfinished = [job for job in jobs if not job.future.done()]
            if len(unfinished) == 1:
                unfinished[0].future.set_exception(err)
                return
            for job in unfinished:  # one request's fault must not fail the others: each is retried alone
                self._encode([job])

    def _encode_watched(self, jobs: list[Job], options: dict[str, Any]) -> None:
        """The merged call itself: ``encode_multi`` for shared texts, one ``encode`` for the rest."""
        multi, single = _split_shared(jobs)
        for texts, asked in multi:
            questions = list(dict.fromkeys(job.instructions[0] for job in asked))
            results = self.model.encode_multi(texts, questions, **options)
            by_question = dict(zip(questions, results))
            self._count(len(texts) * len(questions))
            for job in asked:
                vectors, usage = by_question[job.instructions[0]]
                self._finish(job, vectors, sum(usage))
        if single:
            texts = [t for job in single for t in job.texts]
            instructions = [i for job in single for i in job.instructions]
            vectors, usage = self.model.encode(texts, instructions, **options)
            self._count(len(texts))
            start = 0
            for job in single:
                end = start + len(job.texts)
                self._finish(job, vectors[start:end], sum(usage[start:end]))
                start = end

    def _finish(self, job: Job, vectors: np.ndarray, prompt_tokens: int) -> None:
        job.future.set_result(Result(np.asarray(vectors, dtype=np.float32), prompt_tokens))

    def _count(self, texts: int) -> None:
        if self.on_batch is not None:
            self.on_batch(texts)


def _by_group(jobs: list[Job]) -> dict[tuple[str | None, int | None], list[Job]]:
    groups: dict[tuple[str | None, int | None], list[Job]] = {}
    for job in jobs:
        groups.setdefault(job.group, []).append(job)
    return groups


def _split_shared(jobs: list[Job]) -> tuple[list[tuple[list[str], list[Job]]], list[Job]]:
    """Requests asking one question each of the same texts, when their questions differ (for
    ``encode_multi``), and the others."""
    same_texts: dict[tuple[str, ...], list[Job]] = {}
    single = []
    for job in jobs:
        if len(set(job.instructions)) == 1:
            same_texts.setdefault(tuple(job.texts), []).append(job)
        else:
            single.append(job)
    multi = []
    for texts, asked in same_texts.items():
        if len({job.instructions[0] for job in asked}) > 1:
            multi.append((list(texts), asked))
        else:
            single.extend(asked)
    return multi, single
