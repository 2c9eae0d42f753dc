"""README's Python blocks marked ``<!-- runnable -->`` run as written, in order, in one namespace (as a
reader pastes them into one session), on the default model; those marked ``<!-- runnable: integrations -->``
need the libraries ``make test-integrations`` installs, and run there."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
LIBRARIES = ("bertopic", "llama_index", "chromadb", "mteb")
"""The libraries of the blocks marked ``<!-- runnable: integrations -->``."""
MARKED = re.compile(r"<!-- runnable(?:: (\w+))? -->\n```python\n(.*?)```", re.DOTALL)


def runnable_blocks(needs: str = "") -> list[str]:
    """The blocks marked ``<!-- runnable -->`` (``needs=""``) or ``<!-- runnable: needs -->``."""
    return [block for marked, block in MARKED.findall(README.read_text(encoding="utf-8")) if marked == needs]


def run_blocks(blocks: list[str], namespace: dict) -> None:
    for number, block in enumerate(blocks, start=1):
        try:
            exec(compile(block, f"README block {number}", "exec"), namespace)
        except Exception as err:  # name the block that broke
            raise AssertionError(f"README block {number} failed: {err!r}\n{block}") from err


def test_the_readme_marks_its_runnable_blocks():
    blocks = runnable_blocks()
    assert len(blocks) >= 4 and all("InBedder" in b or "inbedder" in b or "model." in b for b in blocks)
    integrations = runnable_blocks("integrations")  # tests/test_integrations.py runs these
    assert all(any(f"import {lib}" in b or f"from {lib}" in b for b in integrations) for lib in LIBRARIES)


@pytest.mark.slow
def test_the_runnable_readme_blocks_run_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    run_blocks(runnable_blocks(), namespace)
    assert namespace["emb"].shape[0] == len(namespace["texts"])
