"""A ledger of the files inbedder wrote, so that ``overwrite`` replaces only those.

A folder inbedder writes whole carries its own marker (``tables.FOLDER_MARKER``); a single file
(an ``.npy``, a Parquet table, an answers file, a clustering's results) cannot, so each one is
recorded here when it is written: its path, inode, size and modification time. A file that is
not in the ledger, or has changed since, is someone else's and is never replaced.

The ledger is ``written.jsonl`` in inbedder's folder (``models.home_dir``); one line a file,
appended, so concurrent writers do not lose each other's lines.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

LEDGER = "written.jsonl"


def _ledger() -> Path:
    from inbedder.models import home_dir

    return home_dir() / LEDGER


def _identity(path: Path) -> dict[str, int | str]:
    stat = path.stat()
    return {"path": str(path.resolve()), "inode": stat.st_ino, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def record(path: str | os.PathLike) -> None:
    """Note that inbedder has just written ``path``. A ledger that cannot be written costs only the
    later ``overwrite`` of this file, so it is logged, not raised."""
    line = json.dumps(_identity(Path(path))) + "\n"
    ledger = _ledger()
    try:
        ledger.parent.mkdir(parents=True, exist_ok=True)
        with open(ledger, "a", encoding="utf-8") as handle:
            handle.write(line)
    except OSError as err:
        logger.warning("cannot note %s in %s (%s); a later run will not replace it", path, ledger, err.strerror)


def wrote(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a file inbedder wrote and nobody has changed since."""
    path = Path(path)
    if not path.is_file():
        return False
    current = _identity(path)
    try:
        with open(_ledger(), encoding="utf-8") as lines:
            return any(_matches(line, current) for line in lines)
    except OSError:
        return False


def _matches(line: str, current: dict[str, int | str]) -> bool:
    try:
        return json.loads(line) == current
    except ValueError:  # a line cut short by a crash
        return False
