"""Stopping a training run between steps: Ctrl-C or SIGTERM (a scheduler's stop) lets the step in
hand finish, so that its work is saved as a checkpoint instead of lost since the last one."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Iterator

logger = logging.getLogger(__name__)

SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def stop_between_steps() -> Iterator[Callable[[], bool]]:
    """Within the block, SIGINT and SIGTERM only mark a stop as requested; a second one stops at once,
    as Ctrl-C would. Yields a function that says whether a stop was requested. Outside the main
    thread (where Python cannot catch signals) nothing changes and no stop is ever requested."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    requested: list[int] = []

    def request(signum: int, _frame: object) -> None:
        if requested:
            raise KeyboardInterrupt
        requested.append(signum)
        logger.info("stopping after this step, which is saved as a checkpoint (again to stop at once)")

    previous = {number: signal.signal(number, request) for number in SIGNALS}
    try:
        yield lambda: bool(requested)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
