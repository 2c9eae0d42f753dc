"""``inbedder cache info`` and ``inbedder cache clear [--model ...]`` over a populated store; ``encode --cache``."""

import contextlib
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from inbedder import cli
from inbedder.cache import FILE_NAME, EmbeddingCache

runner = CliRunner()
TEXTS = ["I love my cat", "The quick brown fox jumps over the lazy dog.", "dog"]


def run(*args):
    result = runner.invoke(cli.app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output.strip()


@pytest.fixture
def populated(tiny, tiny_model_dir, bert_dir, tmp_path) -> Path:
    """A store holding 3 rows of the tiny Llama and 2 of the tiny BERT."""
    from inbedder import InBedder

    store = tmp_path / "store.sqlite"
    tiny.encode(TEXTS, "What animal?", cache=store)
    InBedder(str(bert_dir), max_length=64).encode(TEXTS[:2], "What animal?", cache=store)
    return store


def test_info_counts_entries_per_model(populated, tiny_model_dir, bert_dir):
    line = run("cache", "info", "--path", populated)
    assert len(line.splitlines()) == 1
    assert "5 entries" in line and f"{Path(tiny_model_dir).resolve()} (3)" in line
    assert f"{Path(bert_dir).resolve()} (2)" in line


def test_clear_one_model_then_all(populated, tiny_model_dir, bert_dir):
    spelled_otherwise = f"{tiny_model_dir}/."  # the same directory, another spelling
    line = run("cache", "clear", "--model", spelled_otherwise, "--path", populated)
    assert line.startswith("removed 3 entries")
    assert EmbeddingCache(populated).info().per_model == {str(Path(bert_dir).resolve()): 2}
    assert run("cache", "clear", "--path", populated).startswith("removed 2 entries")
    assert "0 entries" in run("cache", "info", "--path", populated)


def test_default_store_is_under_inbedder_cache(isolated_cache):
    assert "no cache yet" in run("cache", "info")
    assert run("cache", "clear").startswith("removed 0 entries")
    assert not (isolated_cache / FILE_NAME).exists()


def test_encode_with_cache_stores_and_reuses(tiny, tiny_model_dir, tmp_path, isolated_cache, monkeypatch):
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS) + "\n")
    args = ["encode", texts, "-m", tiny_model_dir, "-i", "What animal?", "--max-length", 64, "--no-progress"]
    run(*args, "-o", tmp_path / "a.npy", "--cache")
    assert EmbeddingCache(isolated_cache / FILE_NAME).info().entries == 3

    from inbedder.runner import Runner

    def no_model_work(*_args, **_kwargs):
        raise AssertionError("every text should come from the cache")

    monkeypatch.setattr(Runner, "run", no_model_work)
    run(*args, "-o", tmp_path / "b.npy", "--cache")
    np.testing.assert_allclose(np.load(tmp_path / "b.npy"), np.load(tmp_path / "a.npy"), atol=1e-6)


def one_line_error(monkeypatch, capsys, *args) -> tuple[int, str]:
    monkeypatch.setattr("sys.argv", ["inbedder", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return exit_info.value.code, err


def foreign_database(path: Path) -> Path:
    """Somebody else's SQLite file, with a table that happens to be called ``embeddings``."""
    import sqlite3

    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE embeddings (word TEXT, vector BLOB)")
        connection.executemany("INSERT INTO embeddings VALUES (?, ?)", [(f"w{i}", b"x") for i in range(7)])
    connection.close()
    return path


def test_a_file_that_is_not_a_store_is_refused_untouched(tmp_path, monkeypatch, capsys):
    theirs = foreign_database(tmp_path / "words.db")
    before = theirs.read_bytes()
    for command in (["cache", "info"], ["cache", "clear"]):
        code, err = one_line_error(monkeypatch, capsys, *command, "--path", theirs)
        assert code == 2 and f"{theirs} is not an inbedder cache (its tables are ['embeddings'])" in err
    assert theirs.read_bytes() == before and not Path(f"{theirs}-wal").exists()
    from inbedder import InBedder

    with pytest.raises(ValueError, match="is not an inbedder cache"):
        InBedder("no-such-model-is-loaded", cache=theirs)  # refused before any loading


def test_a_store_carries_its_id_and_an_old_store_is_still_read(tiny, tmp_path):
    import sqlite3

    from inbedder.cache import APPLICATION_ID

    store = tmp_path / "new.sqlite"
    tiny.encode(TEXTS, "What animal?", cache=store)
    with sqlite3.connect(store) as connection:
        assert connection.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        connection.execute("PRAGMA application_id = 0")  # as stores were written before they carried it
    connection.close()
    assert EmbeddingCache(store).check().info().entries == 3


def test_a_damaged_store_is_named_and_clear_removes_it(tiny, tmp_path, monkeypatch, capsys):
    store = tmp_path / "damaged.sqlite"
    tiny.encode(TEXTS, "What animal?", cache=store)
    import sqlite3

    with contextlib.closing(sqlite3.connect(store)) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything into the main file
    data = bytearray(store.read_bytes())
    data[100:] = b"\xff" * (len(data) - 100)  # keep the header (and its id), ruin every page
    store.write_bytes(bytes(data))
    Path(f"{store}-wal").unlink(missing_ok=True)
    code, err = one_line_error(monkeypatch, capsys, "cache", "info", "--path", store)
    assert code == 2 and f"the cache {store} is damaged" in err and "cache clear --path" in err
    assert run("cache", "clear", "--path", store) == f"removed the damaged cache {store}"
    assert not store.exists()
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"not a database at all" * 10)
    code, err = one_line_error(monkeypatch, capsys, "cache", "clear", "--path", garbage)
    assert code == 2 and "is not an inbedder cache: it cannot be read as SQLite" in err and garbage.exists()


def test_a_cache_that_cannot_be_created_names_the_path(tiny, tmp_path):
    import os

    blocker = tmp_path / "a-file"
    blocker.write_text("in the way")
    with pytest.raises(ValueError, match=f"cannot create the cache's folder {blocker}"):
        tiny.encode(TEXTS, "What animal?", cache=blocker / "store.sqlite")
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        with pytest.raises(ValueError, match=f"cannot .*{locked}"):
            tiny.encode(TEXTS, "What animal?", cache=locked / "store.sqlite")


def test_ctrl_c_during_encode_says_what_was_kept(tiny_model_dir, tmp_path, isolated_cache, monkeypatch, capsys):
    from inbedder.embedder import InBedder

    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS) + "\n")

    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(InBedder, "encode_multi", interrupted)
    args = ["encode", texts, "-m", tiny_model_dir, "-i", "What animal?", "--no-progress", "-o", tmp_path / "a.npy"]
    for extra, said in (
        [["--cache"], f"every finished batch is kept in the cache {isolated_cache / FILE_NAME}"],
        [[], "nothing was written"],
    ):
        monkeypatch.setattr("sys.argv", ["inbedder", *map(str, args + extra)])
        with pytest.raises(SystemExit) as exit_info:
            cli.main()
        last = capsys.readouterr().err.strip().splitlines()[-1]  # after the model's own loading bar
        assert exit_info.value.code == 130 and last.startswith("interrupted: ") and said in last
    assert not (tmp_path / "a.npy").exists()
