"""The writer rule: a command replaces only what it created, never an input, a foreign file or a foreign folder.

Each data-loss case of the reliability probe, and a property test over random combinations of
input, output, side file, --overwrite and --save-map: files the command did not create stay
byte for byte as they were, whatever it answers.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from inbedder import cli
from inbedder.clustering.result import ClusteringResult, ClusterSummary, InstructionClustering
from inbedder.errors import InputError
from inbedder.tables import FOLDER_MARKER, atomic_folder

TEXTS = ["a great phone", "the battery died", "lovely soft dress", "it shrank in the wash", "fast delivery", "late"]


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (hidden ones too) and its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def kept(before: dict[str, bytes], root: Path) -> list[str]:
    """The files of ``before`` that are missing or changed under ``root``."""
    after = snapshot(root)
    return [name for name, data in before.items() if after.get(name) != data]


def invoke(monkeypatch, capsys, *args) -> tuple[int, str]:
    """Run the console script's main(): (exit code, stderr)."""
    monkeypatch.setattr("sys.argv", ["inbedder", *map(str, args)])
    try:
        cli.main()
        code = 0
    except SystemExit as exit_info:
        code = exit_info.code or 0
    return code, capsys.readouterr().err


@pytest.fixture
def user_files(tmp_path):
    """A user's folder: a CSV of reviews, notes beside it, and a file the user keeps."""
    docs = tmp_path / "mydocs"
    docs.mkdir()
    pd.DataFrame({"text": TEXTS}).to_csv(docs / "reviews.csv", index=False)
    (docs / "notes.md").write_text("my notes\n")
    (tmp_path / "keep.txt").write_text("keep me\n")
    return tmp_path


def guided(model: Path, sample: int = 4) -> list[str]:
    return ["-i", "Is the reviewer satisfied?", "--model", str(model), "--max-length", "64", "--guided"] + [
        "--sample",
        str(sample),
        "--no-progress",
    ]


def test_save_map_into_the_inputs_folder_is_refused(user_files, tiny_model_dir, monkeypatch, capsys):
    """Case 1: --save-map naming the folder of the input (and of other files) removes nothing."""
    before = snapshot(user_files)
    docs = user_files / "mydocs"
    code, err = invoke(
        monkeypatch, capsys, "encode", docs / "reviews.csv", *guided(tiny_model_dir), "--save-map", docs,
        "-o", user_files / "g2.npy",
    )  # fmt: skip
    assert code == 2 and f"the output folder {docs} holds the input {docs / 'reviews.csv'}" in err
    assert kept(before, user_files) == []


def test_save_map_onto_an_existing_file_is_refused_even_with_overwrite(user_files, tiny_model_dir, monkeypatch, capsys):
    """Case 2: a map is a folder; it never replaces a file."""
    before = snapshot(user_files)
    code, err = invoke(
        monkeypatch, capsys, "encode", user_files / "mydocs" / "reviews.csv", *guided(tiny_model_dir),
        "--save-map", user_files / "keep.txt", "-o", user_files / "g.npy", "--overwrite",
    )  # fmt: skip
    assert code == 2 and "keep.txt must be a folder, not a file" in err
    assert kept(before, user_files) == []


def test_save_map_naming_the_working_directory_moves_nothing(user_files, tiny_model_dir, monkeypatch, capsys):
    """Case 3: from sb3/work, --save-map ../work (the working directory itself)."""
    work = user_files / "sb3" / "work"
    work.mkdir(parents=True)
    pd.DataFrame({"text": TEXTS}).to_csv(work / "input.csv", index=False)
    (work / "other.txt").write_text("other\n")
    before = snapshot(user_files)
    monkeypatch.chdir(work)
    code, err = invoke(
        monkeypatch, capsys, "encode", "input.csv", *guided(tiny_model_dir, 3), "--save-map", "../work",
        "-o", "out.npy", "--overwrite",
    )  # fmt: skip
    assert code == 2 and "../work holds the input input.csv" in err
    assert kept(before, user_files) == [] and sorted(p.name for p in (user_files / "sb3").iterdir()) == ["work"]


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_an_answers_file_that_is_the_input_is_refused(tmp_path, tiny_model_dir, monkeypatch, capsys, overwrite):
    """Case 4: x.answers.txt as input and -o x.npy with answers: the side file would be the input."""
    source = tmp_path / "x.answers.txt"
    source.write_text("\n".join(TEXTS) + "\n")
    before = snapshot(tmp_path)
    code, err = invoke(
        monkeypatch, capsys, "encode", source, "-i", "Feeling?", "--model", tiny_model_dir, "-o", tmp_path / "x.npy",
        "--readout", "avg_gen", "--return-generations", "--max-new-tokens", "2", *overwrite,
    )  # fmt: skip
    assert code == 2 and f"{source} is the input {source}; inbedder never writes over its input" in err
    assert kept(before, tmp_path) == [] and not (tmp_path / "x.npy").exists()


def test_cluster_output_folder_holding_the_input_is_refused(tmp_path, tiny_model_dir, monkeypatch, capsys):
    """Case 5: cluster cin/assignments.parquet -o cin --overwrite."""
    cin = tmp_path / "cin"
    cin.mkdir()
    pd.DataFrame({"text": TEXTS, "id": range(len(TEXTS))}).to_parquet(cin / "assignments.parquet")
    before = snapshot(tmp_path)
    code, err = invoke(
        monkeypatch, capsys, "cluster", cin / "assignments.parquet", "-i", "Good?", "-k", "2",
        "--model", tiny_model_dir, "-o", cin, "--overwrite",
    )  # fmt: skip
    assert code == 2 and "is the input" in err and "assignments.parquet" in err
    assert kept(before, tmp_path) == []


def test_an_output_that_is_the_input_is_refused_even_with_overwrite(tmp_path, tiny_model_dir, monkeypatch, capsys):
    """Case 6: encode ids.parquet -o ids.parquet --overwrite, and the same through a link."""
    source = tmp_path / "ids.parquet"
    pd.DataFrame({"text": TEXTS, "id": pd.array([1, None, 3, 4, 5, 2**53 + 1], dtype="Int64")}).to_parquet(source)
    (tmp_path / "link.parquet").symlink_to(source)
    before = snapshot(tmp_path)
    for out in (source, tmp_path / "link.parquet"):
        code, err = invoke(
            monkeypatch, capsys, "encode", source, "-i", "Q?", "--model", tiny_model_dir, "-o", out, "--overwrite"
        )
        assert code == 2 and f"{out} is the input {source}" in err
    assert kept(before, tmp_path) == []


def test_atomic_folder_replaces_only_its_own_folder(tmp_path):
    def write(folder: Path) -> None:
        folder.mkdir()
        (folder / "a.txt").write_text("new")

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("mine")
    (tmp_path / "file").write_text("file")
    before = snapshot(tmp_path)
    with pytest.raises(InputError, match=f"{foreign} holds files inbedder did not write"):
        atomic_folder(foreign, write)
    with pytest.raises(InputError, match="is not a folder inbedder wrote"):
        atomic_folder(tmp_path / "file", write)
    assert kept(before, tmp_path) == [] and len(list(tmp_path.iterdir())) == 2
    ours = atomic_folder(tmp_path / "ours", write)
    assert (ours / FOLDER_MARKER).is_file()
    (ours / "a.txt").write_text("old")
    assert (atomic_folder(ours, write) / "a.txt").read_text() == "new"


def test_clustering_result_save_refuses_a_foreign_file_and_makes_a_missing_folder(tmp_path):
    clusters = [ClusterSummary(c, 1, ["word"], None, [text]) for c, text in enumerate(["a", "b"])]
    clustering = InstructionClustering(
        "Q?", np.array([0, 1]), np.zeros(2), np.zeros((2, 2)), ["x", "y"], clusters, "kmeans", 2
    )
    result = ClusteringResult(["a", "b"], ["0", "1"], "m", "pca", [clustering])
    target = tmp_path / "new" / "deeper"
    paths = result.save(target)
    assert sorted(p.name for p in target.iterdir()) == ["assignments.parquet", "clusters.json", "report.html"]
    result.save(target)  # its own files: replaced
    paths["report.html"].write_text("edited by the user")
    with pytest.raises(InputError, match="holds report.html, which inbedder did not write"):
        result.save(target)
    assert paths["report.html"].read_text() == "edited by the user"


# --- the rule as a property --------------------------------------------------------------------------------------

# paths as the user types them from inside docs/
INPUTS = ["in.csv", "in.parquet", "x.answers.txt"]
OUTPUTS = ["in.parquet", "new.npy", "sib.npy", "x.npy", "../out.parquet", "../docs"]
MAPS = [None, ".", "..", "sib.npy", "in.csv", "../newmap", "../docs"]


def user_tree(root: Path) -> None:
    docs = root / "docs"
    docs.mkdir()
    pd.DataFrame({"text": TEXTS}).to_csv(docs / "in.csv", index=False)
    pd.DataFrame({"text": TEXTS}).to_parquet(docs / "in.parquet")
    (docs / "x.answers.txt").write_text("\n".join(TEXTS) + "\n")
    np.save(docs / "sib.npy", np.ones((2, 2), dtype=np.float32))
    (docs / "notes.md").write_text("notes\n")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    source=st.sampled_from(INPUTS),
    out=st.sampled_from(OUTPUTS),
    save_map=st.sampled_from(MAPS),
    overwrite=st.booleans(),
    answers=st.booleans(),
)
def test_no_command_changes_a_file_it_did_not_create(
    tiny_model_dir, monkeypatch, capsys, source, out, save_map, overwrite, answers
):
    with tempfile.TemporaryDirectory() as folder:  # a fresh tree for each example
        root = Path(folder)
        user_tree(root)
        before = snapshot(root)
        args = ["encode", source, "-i", "Is it good?", "--model", tiny_model_dir, "--max-length", "64", "-o", out]
        args += ["--no-progress"] + (["--overwrite"] if overwrite else [])
        args += ["--readout", "avg_gen", "--return-generations", "--max-new-tokens", "2"] if answers else []
        args += ["--guided", "--sample", "3", "--save-map", save_map] if save_map is not None else []
        with monkeypatch.context() as patch:
            patch.chdir(root / "docs")
            code, err = invoke(patch, capsys, *args)
        event(f"exit {code}")
        assert kept(before, root) == [], f"{args} -> {code}: {err}"
        assert code in (0, 2), err
        if code == 0:
            assert (root / "docs" / out).is_file()


def test_parquet_passthrough_keeps_arrow_types_values_and_metadata(tmp_path, tiny_model_dir, monkeypatch, capsys):
    """Case 9: an int64 id with a null stays int64 (2**53 + 1 exactly), int32, decimals and metadata too."""
    import decimal

    import pyarrow as pa
    import pyarrow.parquet as pq

    n = len(TEXTS)
    source = pa.table(
        {
            "id": pa.array([2**53 + 1, None, *range(n - 2)], type=pa.int64()),
            "small": pa.array([None, *range(n - 1)], type=pa.int32()),
            "price": pa.array([decimal.Decimal("1.10"), None, *[decimal.Decimal("2.25")] * (n - 2)]),
            "when": pa.array([0, *range(n - 1)], type=pa.timestamp("ms", tz="UTC")),
            "text": TEXTS,
        }
    ).replace_schema_metadata({b"owner": b"me"})
    pq.write_table(source, tmp_path / "in.parquet")
    out = tmp_path / "out.parquet"
    code, err = invoke(monkeypatch, capsys, "encode", tmp_path / "in.parquet", "-i", "Q?", "--model", tiny_model_dir,
                       "--max-length", "64", "-o", out, "--no-progress")  # fmt: skip
    assert code == 0, err
    written_back = pq.read_table(out)
    assert written_back.schema.metadata[b"owner"] == b"me"
    for name in source.column_names:
        assert written_back.schema.field(name).type == source.schema.field(name).type, name
        assert written_back[name].to_pylist() == source[name].to_pylist(), name
    assert written_back["embedding"].type.list_size == 32 and written_back.num_rows == n


def _write_folder_slowly(path: str, index: int, start: Any) -> str:
    import time

    start.wait(timeout=120)  # every process writes at once

    def write(folder: Path) -> None:
        folder.mkdir()
        for part in range(20):
            (folder / f"part-{part}.txt").write_text(f"run {index}\n")
            time.sleep(0.005)

    try:
        atomic_folder(path, write, {"run": index})
        return "wrote"
    except InputError as err:
        return str(err)


def test_runs_writing_one_folder_at_once_leave_one_whole_output_and_one_line_each(tmp_path):
    """Four processes writing the same output folder: each either wins or is told so in one line."""
    import multiprocessing

    target = tmp_path / "shards"
    # spawned, not forked: a child forked from a process with threads (torch's, pytest's) can start
    # holding a lock one of them held, and wait on it forever
    spawn = multiprocessing.get_context("spawn")
    with spawn.Manager() as manager, spawn.Pool(4) as pool:
        start = manager.Barrier(4)
        outcomes = pool.starmap(_write_folder_slowly, [(str(target), i, start) for i in range(4)])
    assert "wrote" in outcomes
    for outcome in outcomes:
        assert outcome == "wrote" or outcome.startswith(f"another run was writing {target} at the same time")
    runs = {p.read_text() for p in target.glob("part-*.txt")}
    assert len(runs) == 1 and len(list(target.glob("part-*.txt"))) == 20 and (target / FOLDER_MARKER).is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["shards"]
