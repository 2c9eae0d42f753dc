"""Embedding on a local Ray cluster (started here, 2 CPUs) with the tiny model, against one-process encode."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ray = pytest.importorskip("ray")

from inbedder import distributed  # noqa: E402

pytestmark = pytest.mark.ray

TEXTS = [
    f"{animal} number {i} sat on the mat." for i, animal in enumerate(["A cat", "The dog", "A parrot", "Fish"] * 10)
]
QUESTIONS = ["What animal is mentioned?", "Which number is it?"]


@pytest.fixture(scope="module", autouse=True)
def local_cluster():
    distributed.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def reference(tiny_model_dir):
    """The model as the actors load it (its default max_length: prompts are cut as theirs are)."""
    from inbedder import InBedder

    return InBedder(str(tiny_model_dir))


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return pd.DataFrame({"id": [f"row-{i}" for i in range(len(TEXTS))], "text": TEXTS, "stars": range(len(TEXTS))})


def by_id(frame: pd.DataFrame) -> pd.DataFrame:
    order = np.argsort([int(str(i).split("-")[1]) for i in frame["id"]], kind="stable")
    return frame.iloc[order].reset_index(drop=True)


def test_vectors_equal_one_process_encode_with_every_column_kept(reference, tiny_model_dir, table):
    dataset = ray.data.from_pandas(table).repartition(4)
    embedded = distributed.embed_dataset(
        dataset,
        QUESTIONS,
        model=str(tiny_model_dir),
        concurrency=2,
        num_cpus=0.5,
        rows_per_batch=8,
        return_generations=True,
    )
    got = by_id(embedded.to_pandas())
    assert list(got.columns) == [
        "id",
        "text",
        "stars",
        "embedding_0",
        "embedding_0_answer",
        "embedding_1",
        "embedding_1_answer",
    ]
    assert got["id"].tolist() == table["id"].tolist() and got["stars"].tolist() == table["stars"].tolist()
    for k, question in enumerate(QUESTIONS):
        expected, answers = reference.encode(TEXTS, question, return_generations=True)
        np.testing.assert_allclose(np.stack(got[f"embedding_{k}"]), expected, atol=1e-5)
        assert got[f"embedding_{k}_answer"].tolist() == answers


def test_parquet_in_and_out(reference, tiny_model_dir, table, tmp_path):
    source = tmp_path / "in.parquet"
    table.to_parquet(source)
    out = tmp_path / "out"
    distributed.embed_dataset(source, {"animal": QUESTIONS[0]}, model=str(tiny_model_dir)).write_parquet(str(out))
    written = by_id(pd.concat(pd.read_parquet(p) for p in sorted(out.glob("*.parquet"))))
    assert written["id"].tolist() == table["id"].tolist()
    np.testing.assert_allclose(np.stack(written["animal"]), reference.encode(TEXTS, QUESTIONS[0]), atol=1e-5)


def test_a_killed_actor_loses_and_duplicates_no_row(reference, tiny_model_dir, table, tmp_path):
    flag = tmp_path / "crashed-once"

    def crashing_model():
        from inbedder import InBedder

        model = InBedder(str(tiny_model_dir))
        original = model.encode_multi

        def encode_multi(texts, *args, **kwargs):
            if not flag.exists():  # the first batch any actor takes kills it, once
                flag.touch()
                os._exit(1)
            return original(texts, *args, **kwargs)

        model.encode_multi = encode_multi
        return model

    dataset = ray.data.from_pandas(table).repartition(5)
    embedded = distributed.embed_dataset(
        dataset, QUESTIONS[0], model=crashing_model, concurrency=2, num_cpus=0.5, rows_per_batch=8
    )
    got = by_id(embedded.to_pandas())
    assert flag.exists()
    assert got["id"].tolist() == table["id"].tolist()  # every row once
    np.testing.assert_allclose(np.stack(got["embedding"]), reference.encode(TEXTS, QUESTIONS[0]), atol=1e-5)


def test_a_bad_row_fails_with_its_id(tiny_model_dir):
    bad = pd.DataFrame({"id": ["a", "b", "c"], "text": ["fine", "  ", "also fine"]})
    embedded = distributed.embed_dataset(
        ray.data.from_pandas(bad), QUESTIONS[0], model=str(tiny_model_dir), id_column="id"
    )
    with pytest.raises(Exception, match="row 'b': its text is empty"):
        embedded.materialize()


def test_inputs_are_checked_before_any_work(tiny_model_dir, table, tmp_path):
    dataset = ray.data.from_pandas(table)
    with pytest.raises(ValueError, match="the text column 'body' is not in the data"):
        distributed.embed_dataset(dataset, "Why?", text_column="body")
    with pytest.raises(ValueError, match=r"already has column\(s\) \['stars'\]"):
        distributed.embed_dataset(dataset, {"stars": "How many?"})
    with pytest.raises(ValueError, match="instructions must be one or more non-empty questions"):
        distributed.embed_dataset(dataset, [])
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        distributed.embed_dataset(tmp_path / "missing.parquet", "Why?")
    (tmp_path / "t.txt").write_text("x\n")
    with pytest.raises(ValueError, match="Ray reads Parquet, CSV or JSONL here"):
        distributed.embed_dataset(tmp_path / "t.txt", "Why?")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"sample_size": 0}, "sample_size must be a number of rows of at least 3, got 0"),
        ({"k": 1}, "k must be an int of at least 2 or 'auto', got 1"),
        ({"k": 50, "sample_size": 10}, r"k=50 is larger than the sample k-means is fit on \(sample_size=10\)"),
        ({"label_columns": ["nope"]}, "the label column 'nope' is not in the data; its columns are"),
    ],
)
def test_clustering_settings_are_refused_before_any_row_is_embedded(
    tiny_model_dir, table, tmp_path, monkeypatch, options, message
):
    calls = []
    monkeypatch.setattr(distributed, "embed_dataset", lambda *a, **k: calls.append(1))
    with pytest.raises(ValueError, match=message):
        distributed.cluster_dataset(
            ray.data.from_pandas(table), "Why?", tmp_path / "out", model=str(tiny_model_dir), **options
        )
    assert calls == [] and not (tmp_path / "out").exists()


def test_the_command_writes_parquet_shards(reference, tiny_model_dir, table, tmp_path):
    from typer.testing import CliRunner

    from inbedder import cli

    source = tmp_path / "in.csv"
    table.to_csv(source, index=False)
    out = tmp_path / "shards"
    args = [
        "encode",
        source,
        "-i",
        QUESTIONS[0],
        "-m",
        tiny_model_dir,
        "--engine",
        "ray",
        "--concurrency",
        1,
        "-o",
        out,
    ]
    result = CliRunner().invoke(cli.app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    written = by_id(pd.concat(pd.read_parquet(p) for p in sorted(Path(out).glob("*.parquet"))))
    np.testing.assert_allclose(np.stack(written["embedding"]), reference.encode(TEXTS, QUESTIONS[0]), atol=1e-5)
    assert len(pd.read_parquet(out)) == len(TEXTS)  # the folder reads as one table: the marker is skipped
    first = sorted(p.name for p in out.iterdir())

    # a rerun that fails leaves the earlier output as it was, and no work folder beside it
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"id": ["a", "b"], "text": ["fine", " "]}).to_csv(bad, index=False)
    rerun = [str(bad) if a == source else str(a) for a in args] + ["--overwrite"]
    failed = CliRunner().invoke(cli.app, rerun)
    assert failed.exit_code != 0
    assert sorted(p.name for p in out.iterdir()) == first
    assert [p.name for p in tmp_path.iterdir() if ".incomplete" in p.name] == []


def test_the_command_never_deletes_what_it_did_not_write(tiny_model_dir, table, tmp_path):
    from typer.testing import CliRunner

    from inbedder import cli

    folder = tmp_path / "data"
    folder.mkdir()
    source = folder / "in.csv"
    table.to_csv(source, index=False)
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "notes.txt").write_text("precious")

    def run(out: Path) -> str:
        args = ["encode", source, "-i", QUESTIONS[0], "-m", tiny_model_dir, "--engine", "ray", "-o", out, "--overwrite"]
        result = CliRunner().invoke(cli.app, [str(a) for a in args])
        assert result.exit_code != 0
        return str(result.exception)

    assert "holds the input" in run(folder)  # --out the input's own folder
    assert source.read_text().startswith("id,text")
    assert "holds files inbedder did not write" in run(keep)
    assert (keep / "notes.txt").read_text() == "precious"
    assert "must be a folder, not a file" in run(tmp_path / "x.parquet")


def test_clustering_at_scale_writes_what_cluster_writes(reference, tiny_model_dir, table, tmp_path):
    import json

    from inbedder.clustering import cluster

    frame = table.assign(animal=[t.split()[1] for t in TEXTS])
    dataset = ray.data.from_pandas(frame).repartition(4)
    options = dict(model=str(tiny_model_dir), k=3, label_columns=["animal"], num_cpus=0.5)
    paths = distributed.cluster_dataset(dataset, QUESTIONS[0], tmp_path / "all", **options)
    got = pd.read_parquet(paths["assignments.parquet"]).set_index("id")
    # every row in the sample: the one-machine clustering of the same rows (in id order)
    ordered = frame.sort_values("id", kind="stable")
    expected = cluster(ordered["text"].tolist(), QUESTIONS[0], reference, k=3, ids=ordered["id"].tolist())
    want = expected.assignments().set_index("id").loc[got.index]
    assert (got["cluster"] == want["cluster"]).all() and got["answer"].tolist() == want["answer"].tolist()
    np.testing.assert_allclose(got["distance"], want["distance"], atol=1e-4)
    summary = json.loads(paths["clusters.json"].read_text())
    assert summary["texts"] == summary["sample"] == len(TEXTS)
    assert sum(c["size"] for c in summary["instructions"][0]["clusters"]) == len(TEXTS)
    assert "<html" in paths["report.html"].read_text().lower()

    sampled = distributed.cluster_dataset(dataset, QUESTIONS[0], tmp_path / "sampled", sample_size=20, **options)
    rows = pd.read_parquet(sampled["assignments.parquet"])
    assert sorted(rows["id"]) == sorted(table["id"])  # every row assigned once, not only the sample
    summary = json.loads(sampled["clusters.json"].read_text())
    assert summary["texts"] == len(TEXTS) and summary["sample"] < len(TEXTS)
    assert sum(c["size"] for c in summary["instructions"][0]["clusters"]) == len(TEXTS)


def test_the_cluster_command_on_ray(tiny_model_dir, table, tmp_path):
    from typer.testing import CliRunner

    from inbedder import cli

    source = tmp_path / "in.parquet"
    table.to_parquet(source)
    out = tmp_path / "clusters"
    args = ["cluster", source, "-i", QUESTIONS[0], "-m", tiny_model_dir, "--engine", "ray", "-k", 2, "-o", out]
    refused = CliRunner().invoke(cli.app, [str(a) for a in args])
    assert refused.exit_code != 0 and "--engine ray needs --id-column" in str(refused.exception)
    for _ in range(2):  # the second run replaces the first's files (--overwrite), leaving no duplicate rows
        result = CliRunner().invoke(cli.app, [str(a) for a in [*args, "--id-column", "id", "--overwrite"]])
        assert result.exit_code == 0, result.output
    rows = pd.read_parquet(out / "assignments.parquet")
    assert sorted(rows["id"]) == sorted(table["id"]) and set(rows["cluster"]) == {0, 1}


def test_every_encode_option_applies_on_the_actors(tiny_model_dir, table):
    """Real actors, several batches, and a template field filled from a column row by row."""
    from inbedder import InBedder

    kinds = ["pet" if i % 3 else "animal" for i in range(len(TEXTS))]
    template = "Text: {input} ({kind})\nQ: {instruction}\nA:"
    chosen = dict(normalize_embeddings=True, template=template, readout="avg_ppt", layer=1)
    model = InBedder(str(tiny_model_dir), max_length=40)
    local = model.encode(TEXTS, QUESTIONS[0], fields={"kind": kinds}, **chosen)
    embedded = distributed.embed_dataset(
        ray.data.from_pandas(table.assign(kind=kinds)),
        QUESTIONS[0],
        model=str(tiny_model_dir),
        model_options={"max_length": 40},
        field_columns=["kind"],
        rows_per_batch=16,
        **chosen,
    )
    got = np.stack(by_id(embedded.to_pandas())["embedding"])
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(got, local, atol=1e-5)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"postprocess": "center"}, "every batch is a call of its own"),
        ({"model_options": {"postprocess": "standardize"}}, "every batch is a call of its own"),
        ({"convert_to_tensor": True}, "convert_to_tensor does not apply on Ray"),
        ({"readout": "nope"}, "unknown readout 'nope'"),
        ({"layer": 999}, "layer 999 does not exist"),
        ({"batch_size": 0}, "batch_size must be a positive int"),
        ({"bogus": 1}, r"unknown encode option\(s\) \['bogus'\]"),
    ],
)
def test_options_the_actors_cannot_honour_are_refused_before_any_work(tiny_model_dir, table, options, message):
    with pytest.raises((ValueError, TypeError), match=message):
        distributed.embed_dataset(ray.data.from_pandas(table), QUESTIONS[0], model=str(tiny_model_dir), **options)


def test_the_commands_apply_or_refuse_every_option_on_ray(tiny_model_dir, table, tmp_path):
    from typer.testing import CliRunner

    from inbedder import cli

    source = tmp_path / "in.parquet"
    table.to_parquet(source)
    base = ["-i", QUESTIONS[0], "-m", tiny_model_dir, "--engine", "ray"]
    run = [
        "encode",
        source,
        *base,
        "--normalize",
        "--template",
        "T: {input} Q: {instruction} A:",
        "--max-length",
        40,
        "-o",
        tmp_path / "shards",
    ]
    result = CliRunner().invoke(cli.app, [str(a) for a in run])
    assert result.exit_code == 0, result.output
    got = np.stack(by_id(pd.read_parquet(tmp_path / "shards"))["embedding"])
    from inbedder import InBedder

    local = InBedder(str(tiny_model_dir), max_length=40, template="T: {input} Q: {instruction} A:")
    np.testing.assert_allclose(got, local.encode(TEXTS, QUESTIONS[0], normalize_embeddings=True), atol=1e-5)

    refusals = [
        (
            ["encode", source, *base, "--postprocess", "center", "-o", tmp_path / "a"],
            "every batch is a call of its own",
        ),
        (["encode", source, *base, "--layer", 999, "-o", tmp_path / "b"], "layer 999 does not exist"),
        (["cluster", source, *base, "--id-column", "id", "--readout", "nope", "-o", tmp_path / "c"], "'nope'"),
        (["cluster", source, *base, "--id-column", "id", "--layer", 999, "-o", tmp_path / "d"], "layer 999"),
        (["cluster", source, *base, "--id-column", "id", "--map", "umap", "-o", tmp_path / "e"], "umap"),
        (["cluster", source, *base, "--id-column", "id", "--map", "tsne", "-o", tmp_path / "f"], "unknown map 'tsne'"),
    ]
    for args, message in refusals:
        refused = CliRunner().invoke(cli.app, [str(a) for a in args])
        assert refused.exit_code != 0 and message in str(refused.exception), (args, refused.exception)
        assert not any(p.name.startswith((".a", ".b", "a", "b", "c", "d", "e", "f")) for p in tmp_path.iterdir())


def test_a_bad_row_is_named_by_its_id_in_one_line_by_the_command(tiny_model_dir, tmp_path):
    from typer.testing import CliRunner

    from inbedder import cli

    source = tmp_path / "in.parquet"
    pd.DataFrame({"id": ["a", "b", "c"], "text": ["fine", "  ", "fine too"]}).to_parquet(source)
    args = ["encode", source, "-i", QUESTIONS[0], "-m", tiny_model_dir, "--engine", "ray", "--id-column", "id"]
    result = CliRunner().invoke(cli.app, [str(a) for a in [*args, "-o", tmp_path / "out"]])
    assert result.exit_code != 0
    message = str(result.exception)
    assert message == f"{source}: row 'b': its text is empty; every text must have some content", message
    assert not (tmp_path / "out").exists()


def test_guided_maps_are_fitted_on_a_sample_and_applied_on_the_actors(tiny_model_dir, table, tmp_path):
    from typer.testing import CliRunner

    from inbedder import cli
    from inbedder.guided import GuidedEmbedder, GuidedOptions

    options = GuidedOptions(method="ridge", sample=len(TEXTS))
    dataset = ray.data.from_pandas(table).repartition(4)
    embedded = distributed.guided_dataset(  # float32: bfloat16 vectors depend on how rows are batched
        dataset,
        QUESTIONS[0],
        options,
        model=str(tiny_model_dir),
        model_options={"dtype": "float32"},
        concurrency=2,
        num_cpus=0.5,
        rows_per_batch=8,
    )
    got = by_id(embedded.to_pandas())
    assert list(got.columns) == ["id", "text", "stars", "embedding"]
    from inbedder import InBedder

    local = GuidedEmbedder(InBedder(str(tiny_model_dir), dtype="float32"), None, options, dtype="float32")
    expected = local.transform(TEXTS, local.fit(sorted(TEXTS), QUESTIONS[0]))
    np.testing.assert_allclose(np.stack(got["embedding"]), expected, atol=1e-4)

    source = tmp_path / "in.csv"
    table.to_csv(source, index=False)
    args = ["encode", source, "-i", QUESTIONS[0], "-m", tiny_model_dir, "--engine", "ray", "-o", tmp_path / "out"]
    args += ["--dtype", "float32"]
    result = CliRunner().invoke(cli.app, [str(a) for a in args + ["--guided", "--guided-method", "ridge"]])
    assert result.exit_code == 0, result.output
    written = by_id(pd.read_parquet(tmp_path / "out"))
    np.testing.assert_allclose(np.stack(written["embedding"]), expected, atol=1e-4)


def embed_as_the_actors_do(monkeypatch, table: pd.DataFrame, **chosen) -> pd.DataFrame:
    """``embed_dataset`` with Ray's execution left out: the actor's arguments go through cloudpickle, as Ray
    ships them, and each batch through the actor's ``__call__``; every other step is the real one."""
    import cloudpickle
    import pyarrow as pa

    def map_batches(dataset, fn, fn_constructor_kwargs, batch_format, batch_size, **resources):
        assert batch_format == "pyarrow"
        actor = fn(**cloudpickle.loads(cloudpickle.dumps(fn_constructor_kwargs)))
        rows = pa.Table.from_pandas(table, preserve_index=False)
        return pa.concat_tables(actor(rows.slice(start, batch_size)) for start in range(0, len(table), batch_size))

    monkeypatch.setattr(ray.data.Dataset, "map_batches", map_batches)
    return distributed.embed_dataset(ray.data.from_pandas(table), QUESTIONS[0], **chosen).to_pandas()


@pytest.mark.parametrize("option", sorted(__import__("conftest").ENCODE_OPTION_CASES))
def test_every_encode_option_is_honoured_by_the_actors_or_refused_by_name(
    tiny_model_dir, table, option, tmp_path, monkeypatch
):
    """Each option through the actors' own code (test_every_encode_option_applies_on_the_actors runs real ones)."""
    from conftest import ENCODE_OPTION_CASES

    from inbedder import InBedder

    chosen = {k: str(tmp_path / "store.sqlite") if v == "STORE" else v for k, v in ENCODE_OPTION_CASES[option].items()}
    try:
        got = embed_as_the_actors_do(monkeypatch, table, model=str(tiny_model_dir), **chosen)
    except Exception as err:
        refused = distributed.user_error(err)
        assert refused is not None and option in str(refused), (option, err)
        return
    local = InBedder(str(tiny_model_dir)).encode(TEXTS, QUESTIONS[0], **chosen)
    vectors, answers = (local[0], local[1]) if chosen.get("return_generations") else (local, None)
    np.testing.assert_allclose(np.stack(got["embedding"]), np.stack([np.asarray(v) for v in vectors]), atol=1e-5)
    if answers is not None:
        assert got["answer"].tolist() == list(answers)


def test_fields_come_from_columns_and_a_missing_one_is_named(tiny_model_dir, table, monkeypatch):
    from inbedder.errors import InputError

    template = "T: {input} ({kind})\nQ: {instruction}\nA:"
    with pytest.raises(InputError, match="put the values in columns of the data and name them with field_columns"):
        distributed.embed_dataset(table, QUESTIONS[0], model=str(tiny_model_dir), fields={"kind": ["pet"] * 40})
    with pytest.raises(InputError, match="the field column 'kind' is not in the data"):
        distributed.embed_dataset(ray.data.from_pandas(table), QUESTIONS[0], field_columns=["kind"])
    kinds = ["pet"] * (len(TEXTS) - 1) + [None]
    with pytest.raises(InputError, match="row 'row-39': its field column 'kind' is empty"):
        embed_as_the_actors_do(
            monkeypatch,
            table.assign(kind=kinds),
            model=str(tiny_model_dir),
            template=template,
            field_columns=["kind"],
            id_column="id",
            rows_per_batch=16,
        )
