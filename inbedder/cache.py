"""A persistent store of embeddings and answers, so that no text is embedded twice the same way.

One SQLite file (``$INBEDDER_CACHE/embeddings.sqlite`` unless another path is given), nothing to
start. A row is one prompt's result under one model and one set of settings, keyed by three
fingerprints:

- ``model``: what the model computes (``model_fingerprint``): a sample of the loaded weights
  (every tensor's name, shape and dtype and 4096 of its values spread over it), the config,
  the generation config (its end-of-answer ids) and the vocabulary. Read from the model in
  memory, not from its files, so the same weights loaded from another path (or a GGUF
  converted twice) share entries, and weights changed in memory or on disk (a new training run,
  a merged adapter: updates that touch nearly every value) never reuse stale ones. A change
  that misses every sampled value would go unnoticed; no training step does that.
- ``settings`` (``settings_fingerprint``): the readout, its resolved layer and filter words,
  whether answers are generated and with which settings (max_new_tokens, temperature, top_p,
  num_samples, and the seed when sampling), the re-encoder's fingerprint for ``re_encode``, the
  package version and this store's format.
- ``prompt``: a hash of the prompt's token ids. They are a function of the text, the
  instruction, the template, per-text fields, ``max_length`` (truncation) and a masked LM's
  mask slots, so all of those are in the key without being listed.

Rows hold the RAW vector (float32, before corpus post-processing and normalization, which run
over each call's texts after the cache) and the answer (JSON: a string, or the list of sampled
answers with ``num_samples`` > 1). Post-processing and normalization are therefore not in the
key: the same rows serve every ``postprocess`` and ``normalize_embeddings``.

Not in the key: the device and the versions of torch and transformers (results agree to float
noise); a release of inbedder or a new ``FORMAT`` starts afresh. Rows are filed under the name of
the model that first wrote them (for ``clear(model=...)``); a model with the same weights under
another name or path reads them too.

Not cached: sampling (temperature > 0) without a seed, whose results are meant to differ run
by run, and ``re_encode`` with a re-encoder that is not a torch module (nothing to fingerprint).
With a seed, a sampled row is the draw of the call that computed it: seeded sampling depends on
the batches of the call, so a later call that grew the corpus keeps the earlier draws.

Writes are one transaction per batch, committed at once (an interrupted run keeps every
finished batch); WAL mode and a busy timeout let several processes read and write one file.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from inbedder import models
from inbedder.errors import InputError, either
from inbedder.fingerprints import model_label

FILE_NAME = "embeddings.sqlite"
APPLICATION_ID = 0x494E4244  # "INBD" in the SQLite header: this file is an inbedder store
BUSY_TIMEOUT_S = 120.0
_MAX_VARIABLES = 500  # keys per SELECT, well under SQLite's limit on bound parameters
_INHERITED: list[sqlite3.Connection] = []  # connections a forked child must not close
_OPEN: weakref.WeakValueDictionary[Path, EmbeddingCache] = weakref.WeakValueDictionary()
_OPEN_LOCK = threading.Lock()

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS embeddings (
        model TEXT NOT NULL,
        settings TEXT NOT NULL,
        prompt TEXT NOT NULL,
        model_name TEXT NOT NULL,
        dim INTEGER NOT NULL,
        vector BLOB NOT NULL,
        answer TEXT NOT NULL,
        created REAL NOT NULL,
        PRIMARY KEY (model, settings, prompt)
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS embeddings_model_name ON embeddings (model_name)",
)


class CacheError(InputError):
    """A store that cannot be used: not an inbedder store, unreadable, or in a place that cannot be written."""


_COLUMNS = ["model", "settings", "prompt", "model_name", "dim", "vector", "answer", "created"]
_SQLITE_MAGIC = b"SQLite format 3\x00"


def _header_says_ours(path: Path) -> bool:
    """The file's SQLite header carries inbedder's application id (readable even if the rest is damaged)."""
    try:
        with open(path, "rb") as handle:
            header = handle.read(100)
    except OSError:
        return False
    return header.startswith(_SQLITE_MAGIC) and int.from_bytes(header[68:72], "big") == APPLICATION_ID


def check_store(path: Path) -> None:
    """Refuse, touching nothing, a file that is not an inbedder store or cannot be read.

    A missing or empty file, or a SQLite file with no tables yet, is fine (it becomes a store). A
    store written before stores carried their id is recognised by its one table's columns.
    """
    if not path.exists() or (path.is_file() and path.stat().st_size == 0):
        return
    if not path.is_file():
        raise CacheError(f"the cache {path} is not a file; give a SQLite file or a directory to hold one")
    if _header_says_ours(path):
        try:
            with contextlib.closing(
                sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)
            ) as connection:
                connection.execute("SELECT COUNT(*) FROM embeddings").fetchone()
        except sqlite3.DatabaseError as err:
            raise CacheError(
                f"the cache {path} is damaged ({err}); "
                + either(f"EmbeddingCache({str(path)!r}).clear()", f"`inbedder cache clear --path {path}`")
                + " removes it"
            ) from None
        return
    try:
        with contextlib.closing(
            sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)
        ) as connection:
            tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            columns = [row[1] for row in connection.execute("PRAGMA table_info(embeddings)")]
    except sqlite3.DatabaseError as err:
        raise CacheError(f"{path} is not an inbedder cache: it cannot be read as SQLite ({err})") from None
    if tables and (tables != ["embeddings"] or columns != _COLUMNS):  # no tables: a store another opener is creating
        raise CacheError(
            f"{path} is not an inbedder cache (its tables are {tables}); give a path of its own for the cache"
        )


@dataclass(frozen=True)
class CacheInfo:
    """What a store holds: rows, bytes on disk (with its WAL), rows per model name."""

    path: Path
    exists: bool
    entries: int = 0
    size_bytes: int = 0
    per_model: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        """One line for the CLI."""
        if not self.exists:
            return f"{self.path}: no cache yet"
        models_part = ", ".join(f"{name} ({count})" for name, count in sorted(self.per_model.items())) or "none"
        size = self.size_bytes / 2**20
        return f"{self.path}: {self.entries} entries, {size:.1f} MiB; models: {models_part}"


def _enable_wal(connection: sqlite3.Connection) -> None:
    """Switch the file to write-ahead logging (persistent: set once per file).

    Switching needs the file to itself, and SQLite answers "database is locked" at once, without
    waiting, while another process opens or switches the same new file; so retry until it is WAL.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            if connection.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal":
                return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error):
                raise
        if time.monotonic() > deadline:
            raise sqlite3.OperationalError(f"could not switch {connection} to WAL: the file stayed locked")
        time.sleep(0.05)


class EmbeddingCache:
    """Embeddings and answers in one SQLite file, safe to share between processes.

    Each thread of each process gets its own connection, opened on first use and kept (closing
    the last connection checkpoints the file, which would cost a sync per batch); a forked child
    opens its own. Pickles as its path.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser()
        self._ready = self._checked = False
        self._local = threading.local()
        self._identity: tuple[int, int] | None = None  # the file checked and opened (device, inode)
        self._generation = 0  # bumped when the file was replaced: every thread then reconnects

    def __repr__(self) -> str:
        return f"EmbeddingCache({str(self.path)!r})"

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"])  # type: ignore[misc]

    def close(self) -> None:
        """Close this thread's connection (others close when their thread or this object goes)."""
        connection = getattr(self._local, "connection", None)
        if connection is not None and self._local.pid == os.getpid():
            connection.close()
        self._local.connection = None

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection, in autocommit mode (transactions are explicit), with the schema in place."""
        connection = getattr(self._local, "connection", None)
        if connection is None or self._local.pid != os.getpid() or self._local.generation != self._generation:
            if connection is not None and self._local.pid != os.getpid():  # opened before a fork: not ours to close
                _INHERITED.append(connection)
            elif connection is not None:  # the file it was opened on was replaced
                connection.close()
            connection = self._open()
            self._local.connection, self._local.pid, self._local.generation = connection, os.getpid(), self._generation
        yield connection

    @property
    def damaged(self) -> bool:
        """An inbedder store (by its header) that SQLite can no longer read; ``clear()`` removes it."""
        return self.path.is_file() and _header_says_ours(self.path) and _unreadable(self.path)

    def check(self) -> EmbeddingCache:
        """Refuse now, naming the file, a store that cannot be used (see ``check_store``); return self.

        Checked once while the file stays the same one: a store kept open across calls costs
        nothing more per call; a file removed or replaced since is checked again and reopened.
        """
        identity = _identity(self.path)
        if self._checked and identity == self._identity and (identity is not None or not self._ready):
            return self
        check_store(self.path)
        if self._ready and identity != self._identity:
            self._ready, self._generation = False, self._generation + 1
        self._identity, self._checked = identity, True
        return self

    def _open(self) -> sqlite3.Connection:
        if not self._ready:
            if not self._checked:  # open_cache usually checked it a moment ago
                self.check()
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise CacheError(f"cannot create the cache's folder {self.path.parent}: {err.strerror}") from None
        try:
            connection = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            connection.execute("PRAGMA synchronous=NORMAL")  # with WAL: safe against crashes of the process
            if not self._ready:
                _enable_wal(connection)
                connection.execute("BEGIN IMMEDIATE")
                for statement in _SCHEMA:
                    connection.execute(statement)
                connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                connection.execute("COMMIT")
                self._ready, self._identity = True, _identity(self.path)
        except sqlite3.OperationalError as err:
            if "unable to open" in str(err) or "readonly" in str(err):
                raise CacheError(f"cannot open the cache {self.path}: {err}; give a writable path") from None
            raise
        return connection

    def get_many(self, model: str, settings: str, prompts: Iterable[str]) -> dict[str, tuple[np.ndarray, str]]:
        """The stored (raw vector, answer JSON) of each prompt key found, under one model and settings."""
        wanted = list(dict.fromkeys(prompts))
        found: dict[str, tuple[np.ndarray, str]] = {}
        if not wanted:
            return found
        with self._connect() as connection:
            for start in range(0, len(wanted), _MAX_VARIABLES):
                chunk = wanted[start : start + _MAX_VARIABLES]
                rows = connection.execute(
                    "SELECT prompt, dim, vector, answer FROM embeddings WHERE model = ? AND settings = ? "
                    f"AND prompt IN ({', '.join('?' * len(chunk))})",
                    [model, settings, *chunk],
                )
                for prompt, dim, blob, answer in rows:
                    vector = np.frombuffer(blob, dtype="<f4")
                    if vector.shape == (dim,):
                        found[prompt] = (vector, answer)
        return found

    def put_many(self, model: str, settings: str, model_name: str, rows: Iterable[tuple[str, Any, Any]]) -> int:
        """Store (prompt key, raw vector, answer) rows in one committed transaction; existing keys are kept.

        Returns how many rows were new.
        """
        now = time.time()
        records = []
        for prompt, vector, answer in rows:
            array = np.ascontiguousarray(np.asarray(vector, dtype="<f4").reshape(-1))
            records.append((model, settings, prompt, model_name, array.size, array.tobytes(), json.dumps(answer), now))
        if not records:
            return 0
        with self._connect() as connection:
            connection.execute("BEGIN IMMEDIATE")
            try:
                before = connection.total_changes
                connection.executemany("INSERT OR IGNORE INTO embeddings VALUES (?, ?, ?, ?, ?, ?, ?, ?)", records)
                added = connection.total_changes - before
                connection.execute("COMMIT")
            except BaseException as err:
                if connection.in_transaction:  # SQLite has already rolled back after some errors (a full disk)
                    connection.execute("ROLLBACK")
                if isinstance(err, sqlite3.OperationalError) and "full" in str(err):
                    raise CacheError(
                        f"cannot write to the cache {self.path}: {err}; free some space, or give a store on "
                        "another disk ($INBEDDER_CACHE or " + either("cache=PATH", "--cache") + ")"
                    ) from None
                raise
        return added

    def info(self) -> CacheInfo:
        """Rows, size on disk and rows per model name; a missing file is reported, not created."""
        if not self.path.is_file():
            return CacheInfo(self.path, exists=False)
        check_store(self.path)  # again: damage since this process checked it is named, not met as a SQLite error
        with self._connect() as connection:
            per_model = dict(
                connection.execute("SELECT model_name, COUNT(*) FROM embeddings GROUP BY model_name").fetchall()
            )
        size = sum(p.stat().st_size for p in _files(self.path) if p.is_file())
        return CacheInfo(self.path, True, sum(per_model.values()), size, per_model)

    def clear(self, model: str | None = None) -> int:
        """Delete every row, or those filed under one model (a registered name, alias, path or hub id); how many went.

        A damaged store (``damaged``) is removed whole when every row is cleared.

        Rows are filed under the name of the model that wrote them first (see ``model_label``).
        """
        if not self.path.is_file():
            return 0
        if model is None and self.damaged:
            self.close()
            for part in _files(self.path):
                part.unlink(missing_ok=True)
            return 0  # a damaged store's rows cannot be counted: the file is gone
        with self._connect() as connection:
            if model is None:
                removed = connection.execute("DELETE FROM embeddings").rowcount
            else:
                names = sorted({model, model_label(model)})
                removed = connection.execute(
                    f"DELETE FROM embeddings WHERE model_name IN ({', '.join('?' * len(names))})", names
                ).rowcount
            if removed:
                connection.execute("VACUUM")  # give the space back to the file system
                connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return removed


def _identity(path: Path) -> tuple[int, int] | None:
    """Which file ``path`` is now (device, inode), or None when there is none."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_dev, stat.st_ino)


def _unreadable(path: Path) -> bool:
    try:
        check_store(path)
    except CacheError:
        return True
    return False


def default_path() -> Path:
    """The store ``cache=True`` means: ``$INBEDDER_CACHE/embeddings.sqlite`` (see ``models.home_dir``)."""
    return models.home_dir() / FILE_NAME


def check_writable(path: Path) -> None:
    """Refuse a store that could be read but not written: a read-only file or folder (SQLite's journal
    lives beside the file), or, for a store yet to be made, its nearest existing folder."""
    folder = path.parent if path.parent.exists() else next(p for p in path.absolute().parents if p.exists())
    for target in (path, folder) if path.exists() else (folder,):
        if not os.access(target, os.W_OK):
            raise CacheError(f"the cache {path} cannot be written ({target} is read-only); give a writable path")


def open_cache(spec: Any, check: bool = True) -> EmbeddingCache | None:
    """The store a ``cache=`` argument names: None for False/None, the default for True, else at the path.

    A path to a directory (existing, or without a suffix) means ``FILE_NAME`` inside it. With
    ``check``, a file that is not a usable inbedder store is refused now (``CacheError``).
    """
    if spec is None or spec is False:
        return None
    if isinstance(spec, EmbeddingCache):
        return spec.check() if check else spec
    if spec is True:
        path = default_path()
    elif isinstance(spec, (str, os.PathLike)) and str(spec).strip():
        path = Path(spec).expanduser()
        path = path / FILE_NAME if path.is_dir() or not path.suffix else path
    else:
        raise InputError(f"cache must be True, False, None, a path or an EmbeddingCache, got {spec!r}")
    with _OPEN_LOCK:  # one store per file in a process: it stays open across calls
        store = _OPEN.get(path.absolute())
        if store is None:
            store = _OPEN[path.absolute()] = EmbeddingCache(path)
    return store.check() if check else store


def _files(path: Path) -> list[Path]:
    return [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
