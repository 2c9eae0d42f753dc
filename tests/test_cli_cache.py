"""``inbedder cache info`` and ``inbedder cache clear [--model ...]`` over a populated store; ``encode --cache``."""

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

    from inbedder.embedder import InBedder

    def no_model_work(*_args, **_kwargs):
        raise AssertionError("every text should come from the cache")

    monkeypatch.setattr(InBedder, "_encode_batch", no_model_work)
    run(*args, "-o", tmp_path / "b.npy", "--cache")
    np.testing.assert_allclose(np.load(tmp_path / "b.npy"), np.load(tmp_path / "a.npy"), atol=1e-6)
