"""Property tests of the readers and writers: any Unicode text and id round-trips, or is refused in one line.

Texts are drawn from all of Unicode (NUL and control characters included), with empty,
whitespace-only and very long fields; each format is written the way other tools write it
(pandas, json) and read back through ``tables``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inbedder.tables import InputError, column_texts, pick_column, read_table, write_embeddings

LONG = st.builds(lambda ch, n: ch * n, st.characters(exclude_categories=("Cs",)), st.integers(2_000, 60_000))
TEXT = st.one_of(st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=40), LONG)
CONTENT = TEXT.filter(lambda t: t.strip())  # what a text must have to be accepted
# INBEDDER_EXAMPLES=2000 pytest tests/test_tables_properties.py tries more (BENCHMARKS.md, "Reliability")
SETTINGS = settings(
    max_examples=int(os.environ.get("INBEDDER_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def write(path: Path, ids: list[str], texts: list[str]) -> Path:
    kind = path.suffix
    if kind == ".txt":
        path.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
        return path
    table = pd.DataFrame({"id": ids, "text": texts})
    if kind == ".parquet":
        table.to_parquet(path, index=False)
    elif kind == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in table.to_dict("records")), encoding="utf-8")
    elif kind in (".csv", ".tsv"):
        # as the csv module writes it: a field with any line-break character is quoted
        table.to_csv(path, index=False, sep="\t" if kind == ".tsv" else ",", lineterminator="\r\n")
    return path


def read_back(path: Path) -> tuple[list[str] | None, list[str]]:
    table = read_table(path)
    texts = column_texts(table, pick_column(table, None, path), path)
    ids = column_texts(table, "id", path) if "id" in table.columns else None
    return ids, texts


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
@SETTINGS
@given(rows=st.lists(st.tuples(CONTENT, CONTENT), min_size=1, max_size=8))
def test_ids_and_texts_round_trip(tmp_path, suffix, rows):
    ids, texts = [r[0] for r in rows], [r[1] for r in rows]
    path = write(tmp_path / f"t{suffix}", ids, texts)
    assert read_back(path) == (ids, texts)


@SETTINGS
@given(texts=st.lists(CONTENT.filter(lambda t: "\n" not in t and "\r" not in t), min_size=1, max_size=8))
def test_plain_text_is_one_text_per_line(tmp_path, texts):
    path = write(tmp_path / "t.txt", [], texts)
    assert read_back(path) == (None, texts)


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
@SETTINGS
@given(
    before=st.lists(CONTENT, max_size=4),
    blank=st.text(alphabet=" \t\n\r\x0b\x0c\u00a0\u2003", max_size=3),
    after=st.lists(CONTENT, max_size=3),
)
def test_an_empty_text_is_refused_naming_its_row(tmp_path, suffix, before, blank, after):
    texts = [*before, blank, *after]
    path = write(tmp_path / f"t{suffix}", [str(i) for i in range(len(texts))], texts)
    with pytest.raises(InputError) as refused:
        read_back(path)
    message = str(refused.value)
    assert "\n" not in message and f"row {len(before) + 1} of column 'text' is empty" in message


@SETTINGS
@given(rows=st.lists(st.tuples(CONTENT, CONTENT), min_size=1, max_size=6))
def test_parquet_output_keeps_ids_and_texts_beside_the_embeddings(tmp_path, rows):
    ids, texts = [r[0] for r in rows], [r[1] for r in rows]
    table = read_table(write(tmp_path / "in.jsonl", ids, texts))
    vectors = np.arange(len(rows) * 3, dtype=np.float32).reshape(len(rows), 3)
    write_embeddings(tmp_path / "out.parquet", vectors, table, answers=texts)
    written = pd.read_parquet(tmp_path / "out.parquet")
    assert written["id"].tolist() == ids and written["text"].tolist() == texts == written["answer"].tolist()
    np.testing.assert_array_equal(np.stack(written["embedding"].tolist()), vectors)
