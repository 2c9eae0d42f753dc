"""Reading text tables (CSV, TSV, JSONL, Parquet, plain text) and writing embeddings."""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from inbedder import written
from inbedder.errors import InputError, option

TABLE_SUFFIXES = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".txt": "txt",
}
OUTPUT_SUFFIXES = (".npy", ".parquet")
STDIO = "-"
"""The input (output) that means standard input (output): a table piped in, JSON lines out."""
TEXT_COLUMN = "text"
ARROW_SCHEMA = "arrow_schema"
"""``DataFrame.attrs`` key of a Parquet input's own schema, so its columns are written back exactly as they were."""


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """A table of texts; a ``.txt`` file gives one text per non-blank line in column ``text``; ``-`` reads
    standard input (``read_piped``)."""
    if str(path) == STDIO:
        return read_piped(sys.stdin)
    path = Path(path)
    kind = TABLE_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise InputError(f"cannot read {path}: use one of {', '.join(TABLE_SUFFIXES)}")
    if not path.is_file():
        raise InputError(f"input file not found: {path}")
    try:
        if kind == "txt":
            # lines end at "\n" (or "\r\n") only: str.splitlines would also split a text at a form feed,
            # a vertical tab or a Unicode line separator inside it
            lines = [line.removesuffix("\r") for line in path.read_text(encoding="utf-8").split("\n")]
            return pd.DataFrame({TEXT_COLUMN: [line for line in lines if line.strip()]})
        if kind == "parquet":
            return _read_parquet(path)
        if kind == "jsonl":
            return _read_jsonl(path)
        # a blank row stays a row (and is refused as empty): dropping it would shift every later vector
        sep = "\t" if kind == "tsv" else ","
        return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, skip_blank_lines=False)
    except InputError:
        raise  # already says which file and where
    except (OSError, ValueError, UnicodeDecodeError, pa.ArrowException) as err:
        raise InputError(f"cannot read {path}: {err}") from err


def _read_parquet(path: Path) -> pd.DataFrame:
    """Columns of Arrow types (an int64 with nulls stays int64, a decimal stays a decimal), the file's own
    columns as they are stored, and its schema kept for ``write_embeddings``."""
    source = pq.read_table(path)
    table = source.to_pandas(types_mapper=pd.ArrowDtype, ignore_metadata=True)
    table.attrs[ARROW_SCHEMA] = source.schema
    return table


def _read_jsonl(path: Path) -> pd.DataFrame:
    """One record a line (blank lines skipped); errors name the line."""
    with open(path, encoding="utf-8") as handle:
        return _jsonl_records(handle, str(path))


def _jsonl_records(lines: Iterable[str], name: str) -> pd.DataFrame:
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            message = f"line {number} is not valid JSON ({err.msg}, column {err.colno})"
            raise InputError(f"cannot read {name}: {message}") from None
        if not isinstance(row, dict):
            raise InputError(f"cannot read {name}: line {number} is {type(row).__name__}, not a JSON object")
        rows.append(row)
    if not rows:
        raise InputError(f"{name} is empty: it holds no records")
    return pd.DataFrame.from_records(rows)


def read_piped(stream: TextIO) -> pd.DataFrame:
    """A table piped in: JSONL when it starts with ``{``, else CSV with a header row."""
    text = stream.read()
    if not text.strip():
        raise InputError("standard input is empty: pipe a CSV table (with a header row) or JSONL records")
    if text.lstrip().startswith("{"):
        return _jsonl_records(text.split("\n"), "standard input")
    try:
        return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, skip_blank_lines=False)
    except (ValueError, pd.errors.ParserError) as err:
        raise InputError(f"cannot read standard input as CSV: {err}") from err


def write_records(stream: TextIO, ids: Sequence[Any], embeddings: Any, answers: Sequence[Any] | None) -> None:
    """One JSON line per text on ``stream``: ``{"id", "embedding"}``, and ``"answer"`` when there are answers."""
    for row, (id_, vector) in enumerate(zip(ids, embeddings)):
        record = {"id": id_, "embedding": [float(x) for x in vector]}
        if answers is not None:
            record["answer"] = answers[row]
        stream.write(json.dumps(record, ensure_ascii=False) + "\n")
    stream.flush()


def pick_column(table: pd.DataFrame, column: str | None, path: str | os.PathLike, role: str = "text") -> str:
    """The named column, or ``text``, or the only column; else a one-line error listing them."""
    columns = [str(c) for c in table.columns]
    if column is None:
        if TEXT_COLUMN in columns:
            return TEXT_COLUMN
        if len(columns) == 1:
            return columns[0]
        raise InputError(f"{path} has columns {columns}; choose the {role} column with --{role}-column")
    if column not in columns:
        raise InputError(f"{path} has no column {column!r}; its columns are {columns}")
    return column


def column_texts(table: pd.DataFrame, column: str, path: str | os.PathLike) -> list[str]:
    """The column's texts, naming the first row (counted from 1) that is missing, empty or not a text."""
    values = table[column].tolist()
    if not values:
        raise InputError(f"{path} holds no rows: there is nothing to embed")
    for row, value in enumerate(values, start=1):
        if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
            raise InputError(f"{path}: row {row} of column {column!r} is empty")
        if not isinstance(value, str):  # 5, true, ["a"], {"k": "v"}: not texts, and not to embed as Python prints them
            shown = repr(value)
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            raise InputError(f"{path}: row {row} of column {column!r} is {shown} ({type(value).__name__}), not a text")
        if not value.strip():
            raise InputError(f"{path}: row {row} of column {column!r} is empty")
    return values


def check_output(path: str | os.PathLike, overwrite: bool, inputs: Sequence[str | os.PathLike] = ()) -> Path:
    """Fail early, before any model work, on an output that cannot or should not be written.

    An input is never an output, whatever ``overwrite`` says (``refuse_inputs``).
    """
    path = Path(path)
    if path.suffix.lower() not in OUTPUT_SUFFIXES:
        raise InputError(f"output {path} must end in {' or '.join(OUTPUT_SUFFIXES)}")
    check_side_file(path, overwrite, inputs)
    if not path.parent.exists():
        raise InputError(f"output directory {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK):
        raise InputError(f"output directory {path.parent} is not writable")
    return path


def check_side_file(path: str | os.PathLike, overwrite: bool, inputs: Sequence[str | os.PathLike] = ()) -> Path:
    """A file a command writes (an output, or one beside it such as ``.answers.txt``): never an input, never a
    folder, and an existing file only with ``overwrite`` and only if inbedder wrote it (``written``)."""
    path = Path(path)
    refuse_inputs(path, inputs)
    if path.is_dir():
        raise InputError(f"{path} is a folder; the output is a file: choose another name")
    if path.exists() and not overwrite:
        raise InputError(f"{path} exists; pass {option('overwrite')} to replace it")
    if path.exists() and not written.wrote(path):
        raise InputError(
            f"{path} was not written by inbedder (or was changed since), so {option('overwrite')} does not replace "
            "it: choose another name, or move it away yourself"
        )
    return path


def same_path(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name the same file or folder (through links too, when both exist)."""
    a, b = Path(a), Path(b)
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def refuse_inputs(path: str | os.PathLike, inputs: Sequence[str | os.PathLike], folder: bool = False) -> None:
    """Refuse an output that is one of ``inputs``; a ``folder`` output also when it holds an input or the
    working directory (replacing it would remove them). ``overwrite`` does not change this."""
    path = Path(path)
    for source in inputs:
        if same_path(path, source):
            raise InputError(
                f"{path} is the input {source}; inbedder never writes over its input: choose another output"
            )
        if folder and any(same_path(path, parent) for parent in Path(source).absolute().parents if parent.exists()):
            raise InputError(f"the output folder {path} holds the input {source}; choose another output folder")
    if folder and path.exists():
        cwd = Path.cwd()
        if any(same_path(path, place) for place in (cwd, *cwd.parents)):
            raise InputError(
                f"the output folder {path} is or holds the working directory; choose another output folder"
            )


def check_directory(path: str | os.PathLike, create: bool = True) -> Path:
    """An output directory that can be written: created if missing (with ``create=False``, only
    checked to be creatable, so that a command refused later leaves nothing behind)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"output {path} exists and is not a directory")
    if not create and not path.exists():
        ancestor = next(p for p in path.absolute().parents if p.exists())
        if not ancestor.is_dir() or not os.access(ancestor, os.W_OK):
            raise InputError(f"cannot create output directory {path}: {ancestor} is not a writable directory")
        return path
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"cannot create output directory {path}: {err.strerror}") from err
    if not os.access(path, os.W_OK):
        raise InputError(f"output directory {path} is not writable")
    return path


def write_embeddings(
    path: Path,
    embeddings: np.ndarray,
    table: pd.DataFrame | None = None,
    answers: Sequence[str] | None = None,
) -> None:
    """``.npy``: the array alone. ``.parquet``: the table's columns plus ``embedding`` (and ``answer``); a
    Parquet input's columns keep their Arrow types and the file's schema metadata.

    Written beside the target and renamed into place, so an interrupted write leaves no partial file.
    """
    embeddings = np.asarray(embeddings, dtype=np.float32)

    def write(tmp: Path) -> None:
        if path.suffix.lower() == ".npy":
            with open(tmp, "wb") as handle:
                np.save(handle, embeddings)
            return
        frame = table.copy(deep=False) if table is not None else pd.DataFrame(index=range(len(embeddings)))
        schema = frame.attrs.pop(ARROW_SCHEMA, None)  # not for pandas to serialize: it becomes the file's own
        columns = pa.Table.from_pandas(
            frame, schema=schema.remove_metadata() if schema is not None else None, preserve_index=False
        )
        flat = pa.array(embeddings.reshape(-1), type=pa.float32())
        columns = columns.append_column("embedding", pa.FixedSizeListArray.from_arrays(flat, embeddings.shape[1]))
        if answers is not None:
            columns = columns.append_column("answer", pa.array(list(answers), type=pa.string()))
        if schema is not None:
            columns = columns.replace_schema_metadata(schema.metadata)
        pq.write_table(columns, tmp)

    atomic_write(path, write)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call ``write`` on a temporary file beside ``path``, then rename it into place.

    An interrupted write leaves the old file (or none), never a partial one. The file is noted in
    inbedder's ledger (``written``), so that a later ``overwrite`` may replace it and nothing else.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; the result gets the mode any new file gets
        os.replace(tmp, path)
        written.record(path)
    except OSError as err:  # numpy on a full disk says only "48000 requested and 37856 written"
        reason = err.strerror or f"{err} (is the disk full?)"
        raise InputError(f"cannot write {path}: {reason}") from err
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _umask() -> int:
    """The process's umask (reading it means setting it; it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


FOLDER_MARKER = "_inbedder.json"
"""Written last into every folder of shards inbedder makes; readers of Parquet folders skip ``_`` files."""


def check_output_folder(path: str | os.PathLike, overwrite: bool, inputs: Sequence[str | os.PathLike] = ()) -> Path:
    """A folder inbedder writes whole (Parquet shards, a guided map), checked before any work.

    Refused: a file name or an existing file; a folder that holds one of ``inputs`` or the working
    directory; a folder with files in it, unless ``overwrite`` and inbedder wrote it (its
    ``FOLDER_MARKER``). Never deleted here.
    """
    path = Path(path)
    if path.suffix.lower() in OUTPUT_SUFFIXES or (path.exists() and not path.is_dir()):
        raise InputError(f"{path} must be a folder, not a file (name); inbedder replaces no file with a folder")
    refuse_inputs(path, inputs, folder=True)
    if path.is_dir() and any(path.iterdir()):
        if not overwrite:
            raise InputError(
                f"{path} is not empty; pass {option('overwrite')} to replace what an earlier run wrote there"
            )
        check_own_folder(path)
    check_directory(path.parent if str(path.parent) else Path("."), create=False)
    return path


def check_own_folder(path: Path) -> None:
    """Refuse to replace ``path`` unless it is missing, empty, or a folder inbedder wrote (its ``FOLDER_MARKER``)."""
    if not path.exists() and not path.is_symlink():
        return
    if path.is_symlink() or not path.is_dir():
        raise InputError(f"{path} is not a folder inbedder wrote; inbedder replaces no file with a folder")
    if any(path.iterdir()) and not (path / FOLDER_MARKER).is_file():
        raise InputError(
            f"{path} holds files inbedder did not write (it has no {FOLDER_MARKER}); "
            f"choose another output folder: {option('overwrite')} only replaces an earlier run's output"
        )


def atomic_folder(path: str | os.PathLike, write: Callable[[Path], object], about: dict | None = None) -> Path:
    """Call ``write`` on a new folder beside ``path`` (in ``.NAME.incomplete-*``), mark it, then swap it in.

    A failing write leaves the earlier folder as it was and removes its own work; a killed one
    leaves its work only in the hidden ``.incomplete`` folder, which no one takes for a result.
    Only a folder inbedder wrote is replaced (``check_own_folder``): never a file, a link, or a
    folder of someone else's files; nothing outside ``path`` is moved.
    """
    path = Path(path).absolute()  # a relative path must not change meaning if the working directory moves
    check_own_folder(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{path.name}.incomplete-", dir=path.parent))
    new, replaced = work / "out", work / "replaced"
    try:
        write(new)
        new.mkdir(exist_ok=True)  # a write of no rows may make no folder
        (new / FOLDER_MARKER).write_text(json.dumps(about or {}, indent=1))
        if path.exists():
            path.rename(replaced)
        new.rename(path)
    except BaseException as err:
        if replaced.exists() and not path.exists():
            replaced.rename(path)  # the swap failed half-way: the earlier output goes back
        if isinstance(err, OSError) and err.errno in (errno.ENOENT, errno.ENOTEMPTY, errno.EEXIST):
            raise InputError(
                f"another run was writing {path} at the same time and swapped its output in first; "
                "this run's output was not kept"
            ) from err
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return path
