"""README's Python blocks marked ``<!-- runnable -->`` run as written, in order, in one namespace (as a
reader pastes them into one session), on the default model."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
MARKED = re.compile(r"<!-- runnable -->\n```python\n(.*?)```", re.DOTALL)


def runnable_blocks() -> list[str]:
    return MARKED.findall(README.read_text(encoding="utf-8"))


def test_the_readme_marks_its_runnable_blocks():
    blocks = runnable_blocks()
    assert len(blocks) >= 4 and all("InBedder" in b or "inbedder" in b or "model." in b for b in blocks)


@pytest.mark.slow
def test_the_runnable_readme_blocks_run_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for number, block in enumerate(runnable_blocks(), start=1):
        try:
            exec(compile(block, f"README block {number}", "exec"), namespace)
        except Exception as err:  # name the block that broke
            raise AssertionError(f"README block {number} failed: {err!r}\n{block}") from err
    assert namespace["emb"].shape[0] == len(namespace["texts"])
