import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from inbedder import cli
from inbedder.errors import InputError

runner = CliRunner()
TEXTS = ["I love my cat", "The quick brown fox jumps over the lazy dog.", "dog"]


@pytest.fixture
def reviews(tmp_path):
    path = tmp_path / "reviews.csv"
    pd.DataFrame({"review": TEXTS, "stars": ["5", "3", "1"], "question": ["What animal?"] * 3}).to_csv(
        path, index=False
    )
    return path


def run(*args):
    """Run the CLI the way the console script does (main() turns errors into one line)."""
    return runner.invoke(cli.app, [str(a) for a in args])


def main_exit(monkeypatch, capsys, *args):
    monkeypatch.setattr("sys.argv", ["inbedder", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    return exit_info.value.code, capsys.readouterr().err


def test_encode_to_parquet_keeps_columns_and_adds_embeddings(tiny, tiny_model_dir, reviews, tmp_path):
    out = tmp_path / "emb.parquet"
    result = run(
        "encode",
        reviews,
        "--text-column",
        "review",
        "-i",
        "What animal?",
        "--model",
        tiny_model_dir,
        "--out",
        out,
        "--max-length",
        64,
        "--return-generations",
        "--max-new-tokens",
        3,
    )
    assert result.exit_code == 0, result.output
    table = pd.read_parquet(out)
    assert list(table.columns) == ["review", "stars", "question", "embedding", "answer"]
    expected, answers = tiny.encode(TEXTS, "What animal?", max_new_tokens=3, return_generations=True)
    np.testing.assert_allclose(np.stack(table["embedding"]), expected, atol=1e-5)
    assert table["answer"].tolist() == answers


def test_encode_settings_reach_the_model(tiny, tiny_model_dir, reviews, tmp_path):
    out = tmp_path / "emb.npy"
    options = ["--readout", "avg_ppt", "--layer", 1, "--postprocess", "standardize", "--max-length", 64]
    result = run(
        "encode", reviews, "--text-column", "review", "-i", "Why?", "--model", tiny_model_dir, *options, "--out", out
    )
    assert result.exit_code == 0, result.output
    expected = tiny.encode(TEXTS, "Why?", readout="avg_ppt", layer=1, postprocess="standardize")
    np.testing.assert_allclose(np.load(out), expected, atol=1e-5)


@pytest.mark.parametrize(
    "suffix, reader",
    [
        (".jsonl", lambda df, p: df.to_json(p, orient="records", lines=True)),
        (".tsv", lambda df, p: df.to_csv(p, sep="\t", index=False)),
        (".parquet", lambda df, p: df.to_parquet(p)),
    ],
)
def test_encode_reads_each_table_format(tiny, tiny_model_dir, tmp_path, suffix, reader):
    path = tmp_path / f"in{suffix}"
    reader(pd.DataFrame({"text": TEXTS, "q": ["What animal?", "Who?", "Why?"]}), path)
    out = tmp_path / "emb.npy"
    result = run(
        "encode", path, "--instruction-column", "q", "--model", tiny_model_dir, "--out", out, "--max-length", 64
    )
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(np.load(out), tiny.encode(TEXTS, ["What animal?", "Who?", "Why?"]), atol=1e-5)


def test_encode_plain_text_one_per_line(tiny, tiny_model_dir, tmp_path):
    path = tmp_path / "texts.txt"
    path.write_text("\n".join(TEXTS) + "\n\n")
    out = tmp_path / "emb.npy"
    result = run(
        "encode",
        path,
        "--model",
        tiny_model_dir,
        "--out",
        out,
        "--max-length",
        64,
        "--readout",
        "avg_ppt",
        "--layer",
        1,
        "--normalize",
    )
    assert result.exit_code == 0, result.output
    expected = tiny.encode(TEXTS, None, readout="avg_ppt", layer=1, normalize_embeddings=True)
    np.testing.assert_allclose(np.load(out), expected, atol=1e-5)


def test_refuses_to_overwrite_unless_asked_and_only_its_own_output(
    tiny_model_dir, reviews, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "emb.npy"
    out.write_bytes(b"precious")
    code, err = main_exit(monkeypatch, capsys, "encode", reviews, "--text-column", "review", "--out", out)
    assert code == 2 and err.strip() == f"error: {out} exists; pass --overwrite to replace it"
    args = ["encode", reviews, "--text-column", "review", "--model", tiny_model_dir, "--max-length", 64]
    code, err = main_exit(monkeypatch, capsys, *args, "--out", out, "--overwrite")
    assert code == 2 and f"{out} was not written by inbedder (or was changed since), so --overwrite" in err
    assert out.read_bytes() == b"precious"
    mine = tmp_path / "mine.npy"
    assert run(*args, "--out", mine).exit_code == 0
    first = mine.read_bytes()
    result = run(*args, "--out", mine, "--overwrite", "--normalize")
    assert result.exit_code == 0 and np.load(mine).shape == (3, 32) and mine.read_bytes() != first


@pytest.mark.parametrize(
    "args, message",
    [
        (["missing.csv", "--out", "{tmp}/e.npy"], "error: input file not found: missing.csv"),
        (
            ["{reviews}", "--text-column", "body", "--out", "{tmp}/e.npy"],
            "error: {reviews} has no column 'body'; its columns are ['review', 'stars', 'question']",
        ),
        (["{reviews}", "--out", "{tmp}/e.npy"], "choose the text column with --text-column"),
        (["{reviews}", "--text-column", "review", "--out", "{tmp}/e.csv"], "must end in .npy or .parquet"),
        (["{reviews}", "--text-column", "review", "--out", "{tmp}/nodir/e.npy"], "does not exist"),
        (
            [
                "{reviews}",
                "--text-column",
                "review",
                "-i",
                "q",
                "--instruction-column",
                "question",
                "--out",
                "{tmp}/e.npy",
            ],
            "not both",
        ),
    ],
)
def test_input_errors_are_one_line(reviews, tmp_path, monkeypatch, capsys, args, message):
    args = [a.format(tmp=tmp_path, reviews=reviews) for a in args]
    code, err = main_exit(monkeypatch, capsys, "encode", *args)
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert message.format(reviews=reviews) in err


def test_empty_cell_is_named(tmp_path, monkeypatch, capsys):
    path = tmp_path / "t.csv"
    path.write_text('text\nfine\n""\n')
    code, err = main_exit(monkeypatch, capsys, "encode", path, "--out", tmp_path / "e.npy")
    assert code == 2 and "row 2 of column 'text' is empty" in err


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("t.csv", "text\nfine\n   \nlast\n", "row 2 of column 'text' is empty"),  # pandas would drop the row
        ("t.csv", "text\nfine\n\nlast\n", "row 2 of column 'text' is empty"),
        ("t.csv", "id,text\n", "holds no rows: there is nothing to embed"),
        ("t.jsonl", '{"text": "fine"}\n{"text": 5}\n', "row 2 of column 'text' is 5 (int), not a text"),
        ("t.jsonl", '{"text": "fine"}\n{"text": true}\n', "row 2 of column 'text' is True (bool), not a text"),
        ("t.jsonl", '{"text": ["a", "b"]}\n', "row 1 of column 'text' is ['a', 'b'] (list), not a text"),
        ("t.jsonl", '{"text": "a"}\n{"text": {"k": "v"}}\n', "row 2 of column 'text' is {'k': 'v'} (dict), not a text"),
    ],
)
def test_rows_that_are_not_texts_are_refused_before_the_model_loads(
    tmp_path, monkeypatch, capsys, name, content, message
):
    path = tmp_path / name
    path.write_text(content)
    code, err = main_exit(
        monkeypatch, capsys, "encode", path, "--model", tmp_path / "no-model", "--out", tmp_path / "e.npy"
    )
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "e.npy").exists()


def test_a_bad_jsonl_is_named_once(tmp_path, monkeypatch, capsys):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "fine"}\n{"text": \n')
    code, err = main_exit(monkeypatch, capsys, "encode", path, "--out", tmp_path / "e.npy")
    assert code == 2 and err.count("cannot read") == 1 and "line 2 is not valid JSON" in err, err


def test_parquet_columns_that_are_not_texts_are_refused(tmp_path):
    from inbedder.tables import InputError, column_texts, read_table

    path = tmp_path / "t.parquet"
    pd.DataFrame({"text": [["a", "b"], ["c"]], "n": [1, 2]}).to_parquet(path)
    table = read_table(path)
    with pytest.raises(InputError, match=r"row 1 of column 'text' is \['a', 'b'\] \(list\), not a text"):
        column_texts(table, "text", path)
    with pytest.raises(InputError, match=r"row 1 of column 'n' is 1 \(int\), not a text"):
        column_texts(table, "n", path)


def test_models_lists_the_default(monkeypatch, capsys):
    result = run("models")
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0].split()[:3] == ["name", "aliases", "offline"]
    assert any(line.startswith("smollm2-135m-instruct") and " yes " in line for line in lines[1:])


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.csv"
    rows = [
        (f"t{i}", f"{'great' if i % 2 else 'awful'} {'book' if i % 3 else 'lamp'} {i}", "ab"[i % 2]) for i in range(9)
    ]
    pd.DataFrame(rows, columns=["key", "text", "mood"]).to_csv(path, index=False)
    return path


def test_cluster_writes_assignments_clusters_and_report(tiny_model_dir, corpus, tmp_path):
    out = tmp_path / "clusters"
    args = ["cluster", corpus, "-i", "Is it good?", "-i", "What product?", "-k", 2, "--label-column", "mood"]
    result = run(*args, "--id-column", "key", "--model", tiny_model_dir, "--out", out)
    assert result.exit_code == 0, result.output
    assignments = pd.read_parquet(out / "assignments.parquet")
    assert len(assignments) == 18 and list(assignments["id"][:3]) == ["t0", "t1", "t2"]
    assert set(assignments["cluster"]) == {0, 1}
    saved = json.loads((out / "clusters.json").read_text())
    assert [len(i["clusters"]) for i in saved["instructions"]] == [2, 2]
    assert "mood" in saved["instructions"][0]["clusters"][0]["composition"]
    assert (out / "report.html").stat().st_size > 0 and (out / "embeddings.sqlite").stat().st_size > 0
    assert "'Is it good?': 2 clusters" in result.output


def test_cluster_cache_keeps_embeddings_in_the_user_store(tiny_model_dir, corpus, tmp_path, monkeypatch):
    from inbedder.cache import EmbeddingCache

    monkeypatch.setenv("INBEDDER_CACHE", str(tmp_path / "user-cache"))
    out = tmp_path / "clusters"
    args = ["cluster", corpus, "-i", "Is it good?", "-k", 2, "--model", tiny_model_dir, "--out", out, "--cache"]
    assert run(*args).exit_code == 0
    assert not (out / "embeddings.sqlite").exists()
    assert EmbeddingCache(tmp_path / "user-cache" / "embeddings.sqlite").info().entries == 9


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["-k", "20"], "k=20 is larger than the number of texts (9)"),
        (["-k", "two"], "--k must be an integer or 'auto', got 'two'"),
        (["--label-column", "stars"], "has no column 'stars'"),
        (["--method", "spectral"], "unknown clustering method 'spectral'"),
    ],
)
def test_cluster_errors_are_one_line(tiny_model_dir, corpus, tmp_path, monkeypatch, capsys, extra, message):
    args = ["cluster", corpus, "-i", "Why?", "--model", tiny_model_dir, "--out", tmp_path / "o", *extra]
    code, err = main_exit(monkeypatch, capsys, *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_cluster_refuses_an_output_that_is_a_file_or_unwritable(corpus, tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, err = main_exit(monkeypatch, capsys, "cluster", corpus, "-i", "Why?", "--out", blocker)
    assert code == 2 and "not a directory" in err
    code, err = main_exit(monkeypatch, capsys, "cluster", corpus, "-i", "Why?", "--out", blocker / "sub")
    assert code == 2 and "cannot create output directory" in err


def test_the_command_line_and_the_package_import_nothing_heavy():
    """`inbedder --help`, `models` and `cache` must not pay for torch, transformers, scikit-learn or pandas."""
    code = (
        "import sys, inbedder, inbedder.cli; "
        "print(sorted(m for m in ('torch', 'transformers', 'sklearn', 'pandas', 'pyarrow') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout


def test_jsonl_errors_name_the_line_and_an_empty_file_says_so(tmp_path, monkeypatch, capsys):
    from inbedder.tables import InputError, read_table

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n\n{"text": "broken"\n')
    with pytest.raises(InputError, match=r"bad.jsonl: line 3 is not valid JSON"):
        read_table(bad)
    bad.write_text('{"text": "fine"}\n["a list"]\n')
    with pytest.raises(InputError, match=r"line 2 is list, not a JSON object"):
        read_table(bad)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(InputError, match=r"empty.jsonl is empty: it holds no records"):
        read_table(empty)
    good = tmp_path / "good.jsonl"
    good.write_text('{"text": "a", "n": 1}\n\n{"text": "b\\u0000c", "n": 2}\n')
    table = read_table(good)
    assert table["text"].tolist() == ["a", "b\0c"] and table["n"].tolist() == [1, 2]


def test_written_files_get_the_mode_the_umask_gives(tmp_path):
    import os

    from inbedder.tables import write_embeddings

    previous = os.umask(0o022)
    try:
        write_embeddings(tmp_path / "a.npy", np.zeros((2, 3)))
        os.umask(0o077)
        write_embeddings(tmp_path / "b.npy", np.zeros((2, 3)))
    finally:
        os.umask(previous)
    assert (tmp_path / "a.npy").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.npy").stat().st_mode & 0o777 == 0o600


def test_upper_case_suffixes_and_the_answers_file_obey_the_same_rules(tiny_model_dir, reviews, tmp_path):
    out = tmp_path / "r.NPY"
    args = ["encode", reviews, "--text-column", "review", "-i", "Feeling?", "--model", tiny_model_dir]
    args += ["--return-generations", "--max-new-tokens", 2, "--no-progress"]
    assert run(*args, "--out", out).exit_code == 0
    answers = tmp_path / "r.answers.txt"
    assert np.load(out).shape[0] == len(answers.read_text().splitlines()) > 0
    (tmp_path / "s.answers.txt").write_text("mine\n")
    kept = run(*args, "--out", tmp_path / "s.npy")
    assert kept.exit_code != 0 and "s.answers.txt exists; pass --overwrite" in kept.exception.render(command_line=True)
    assert (tmp_path / "s.answers.txt").read_text() == "mine\n" and not (tmp_path / "s.npy").exists()
    table = pd.read_csv(reviews)
    table["answer"] = "x"
    clash = tmp_path / "clash.csv"
    table.to_csv(clash, index=False)
    refused = run(*["encode", clash, *args[2:]], "--out", tmp_path / "c.PARQUET")
    assert refused.exit_code != 0 and "already has column(s) ['answer']" in str(refused.exception)


def test_cluster_keeps_an_earlier_result_unless_asked(tiny_model_dir, corpus, tmp_path, monkeypatch, capsys):
    out = tmp_path / "clusters"
    args = ["cluster", corpus, "-i", "Is it good?", "-k", 2, "--model", tiny_model_dir, "--out", out]
    assert run(*args).exit_code == 0
    code, err = main_exit(monkeypatch, capsys, *args)
    assert code == 2 and "already holds a clustering (assignments.parquet, clusters.json, report.html)" in err
    first = (out / "clusters.json").read_bytes()
    assert run(*args, "--overwrite", "--seed", 1).exit_code == 0 and (out / "clusters.json").read_bytes() != first
    (out / "report.html").write_text("my notes")  # the user's edit makes it theirs: not replaced, even when asked
    code, err = main_exit(monkeypatch, capsys, *args, "--overwrite")
    assert code == 2 and "holds report.html, which inbedder did not write (or which changed since)" in err
    assert (out / "report.html").read_text() == "my notes"
    for name in ("assignments.parquet", "clusters.json", "report.html"):  # an unfinished run: only the store
        (out / name).unlink()
    assert run(*args).exit_code == 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--map", "umap"], "map 'umap' needs umap-learn"),
        (["--readout", "nope"], "unknown readout 'nope'; choose one of fst_gen"),
        (["--batch-size", "0"], "--batch-size must be a positive int, got 0"),
        (["--min-cluster-size", "0"], "--min-cluster-size must be a positive number, got 0"),
    ],
)
def test_cluster_refuses_bad_options_before_loading_anything(corpus, tmp_path, monkeypatch, capsys, extra, message):
    if extra[:2] == ["--map", "umap"] and importlib.util.find_spec("umap") is not None:
        pytest.skip("umap-learn is installed")
    out = tmp_path / "never"
    args = ["cluster", corpus, "-i", "Why?", "--model", tmp_path / "no-such-model", "--out", out, *extra]
    code, err = main_exit(monkeypatch, capsys, *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()  # nothing left behind


def test_encode_refuses_bad_options_before_loading_anything(reviews, tmp_path, monkeypatch, capsys):
    args = ["encode", reviews, "--text-column", "review", "-i", "Why?", "--model", tmp_path / "no-such-model"]
    for extra, message in ((["--readout", "nope"], "unknown readout 'nope'"), (["--batch-size", "0"], "--batch-size")):
        code, err = main_exit(monkeypatch, capsys, *args, "--out", tmp_path / "e.npy", *extra)
        assert code == 2 and message in err and "no-such-model" not in err


def test_data_only_errors_come_in_inbedders_words(tiny_model_dir, tmp_path, monkeypatch, capsys):
    same = tmp_path / "same.txt"
    same.write_text("one review\n" * 6)
    args = ["cluster", same, "-i", "Why?", "--model", tiny_model_dir, "--out", tmp_path / "o"]
    code, err = main_exit(monkeypatch, capsys, *args)
    assert code == 2 and "all 6 texts are the same text" in err
    long_question = "Why " * 1500
    reviews = tmp_path / "reviews.txt"
    reviews.write_text("great book\nawful lamp\nfine chair\n")
    args = ["cluster", reviews, "-i", long_question, "--model", tiny_model_dir, "--out", tmp_path / "long"]
    code, err = main_exit(monkeypatch, capsys, *args)
    last = err.strip().splitlines()[-1]
    assert code == 2 and last.startswith("error: ") and "instruction" in last and not (tmp_path / "long").exists()


# every encode option reaches the command line, or says why it cannot
CLI_NAMES = {"show_progress_bar": "progress", "normalize_embeddings": "normalize", "filter_words": "filter_word"}
NOT_ON_THE_COMMAND_LINE = {
    "convert_to_numpy": "the command writes files",
    "convert_to_tensor": "the command writes files",
    "fields": "a table's columns are texts, instructions and ids; fields are an API feature",
    "return_usage": "the command writes vectors (and answers); token counts are for callers that bill them",
}


def test_encode_command_offers_every_encode_option():
    import dataclasses
    import inspect

    from inbedder.cli.encode import encode
    from inbedder.options import EncodeOptions

    parameters = inspect.signature(encode).parameters
    for option in dataclasses.fields(EncodeOptions):
        if option.name in NOT_ON_THE_COMMAND_LINE:
            continue
        name = CLI_NAMES.get(option.name, option.name)
        assert name in parameters, f"EncodeOptions.{option.name} has no --{name.replace('_', '-')}"
        default = parameters[name].default
        if option.name in ("readout", "layer", "template", "postprocess"):
            assert default is None  # the model's own default
        elif option.name not in ("show_progress_bar", "cache", "filter_words"):  # CLI: a bar, no store, no words
            assert default == option.default, (option.name, default, option.default)


def test_sampled_answers_go_to_the_answers_file_one_line_per_text(tiny_model_dir, tmp_path):
    texts = tmp_path / "t.txt"
    texts.write_text("I love my cat\nthe dog barks\n")
    out = tmp_path / "e.npy"
    args = ["encode", texts, "-i", "What animal?", "-m", tiny_model_dir, "-o", out, "--readout", "re_encode"]
    args += ["--num-samples", 2, "--temperature", 1.0, "--seed", 1, "--max-new-tokens", 2, "--return-generations"]
    result = CliRunner().invoke(cli.app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    assert np.load(out).shape == (2, 384)
    lines = out.with_suffix(".answers.txt").read_text().splitlines()
    assert len(lines) == 2 and all(line.count("\t") == 1 for line in lines)


def test_an_output_on_a_full_disk_is_named(tmp_path):
    import subprocess

    from inbedder.tables import InputError, write_embeddings

    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        with pytest.raises(InputError, match=r"cannot write .*disk/e.npy: .*(No space left|disk full)"):
            write_embeddings(disk / "e.npy", np.ones((100, 576), dtype=np.float32))
        assert list(disk.iterdir()) == []  # no partial file left
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_the_command_prints_no_library_warning(tiny_model_dir, tmp_path):
    source = tmp_path / "t.csv"
    source.write_text("text\nI love my cat\nthe lazy dog\n")
    command = [sys.executable, "-m", "inbedder.cli", "encode", str(source), "-m", str(tiny_model_dir), "-i", "Animal?"]
    done = subprocess.run([*command, "-o", str(tmp_path / "e.npy")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr and "warn(" not in done.stderr, done.stderr


def test_an_instruction_too_long_for_the_prompt_is_refused_before_the_weights_load(
    tiny_model_dir, tmp_path, monkeypatch, capsys
):
    import shutil

    weightless = tmp_path / "weightless"  # loading weights would fail with another message
    shutil.copytree(tiny_model_dir, weightless, ignore=shutil.ignore_patterns("*.safetensors"))
    source = tmp_path / "t.txt"
    source.write_text("a text\n")
    args = ["encode", source, "-m", weightless, "-i", "why " * 1250, "-o", tmp_path / "e.npy"]
    code, err = main_exit(monkeypatch, capsys, *args)
    assert code == 2 and "leaving no room for the input within max_length" in err, err


def test_an_unexpected_error_shows_as_a_bug_not_as_bad_input(monkeypatch, capsys, reviews, tmp_path):
    def broken(path):
        raise ValueError("cannot reshape array of size 6 into shape (4,)")

    monkeypatch.setattr("inbedder.tables.read_table", broken)
    code, err = main_exit(monkeypatch, capsys, "encode", reviews, "-i", "What animal?", "--out", tmp_path / "e.npy")
    assert code == 1
    assert "ValueError: cannot reshape array" in err and "INBEDDER_DEBUG=1" in err and "bug in inbedder" in err
    monkeypatch.setenv("INBEDDER_DEBUG", "1")
    monkeypatch.setattr("sys.argv", ["inbedder", "encode", str(reviews), "-i", "q", "--out", str(tmp_path / "e.npy")])
    with pytest.raises(ValueError, match="cannot reshape"):
        cli.main()


def test_version_short_help_and_python_dash_m():
    from inbedder._version import __version__

    assert run("--version").output == f"inbedder {__version__}\n"
    assert run("-h").exit_code == 0 and "Usage: " in run("-h").output and "--version" in run("-h").output
    assert run("encode", "-h").exit_code == 0 and "--instruction" in run("encode", "-h").output
    done = subprocess.run([sys.executable, "-m", "inbedder", "--version"], capture_output=True, text=True, check=True)
    assert done.stdout == f"inbedder {__version__}\n"


def test_shell_completion_completes_commands_and_options():
    """typer's completion: what bash gets back for a partial command and a partial option."""

    def complete(*words: str) -> list[str]:
        env = {**os.environ, "_INBEDDER_COMPLETE": "complete_bash", "COMP_WORDS": " ".join(("inbedder", *words))}
        env["COMP_CWORD"] = str(len(words))
        script = Path(sys.executable).with_name("inbedder")  # the installed command, whose name the shell completes
        done = subprocess.run([str(script)], env=env, capture_output=True, text=True, check=True)
        return done.stdout.split()

    assert complete("cl") == ["cluster"]
    assert "--readout" in complete("encode", "--read") and "--instruction" not in complete("encode", "--read")
    assert "--install-completion" in run("-h").output


def test_no_progress_bars_in_a_log_unless_asked(tiny_model_dir, reviews, tmp_path):
    """stderr that is not a terminal (a log file) gets no bars: neither inbedder's nor the loaders'."""
    args = [sys.executable, "-m", "inbedder", "encode", str(reviews), "--text-column", "review", "-i", "Feeling?"]
    args += ["--model", str(tiny_model_dir), "--max-length", "64"]
    quiet = subprocess.run([*args, "-o", str(tmp_path / "a.npy")], capture_output=True, text=True, check=True)
    assert "it/s" not in quiet.stderr and "%|" not in quiet.stderr and "wrote 3 embeddings" in quiet.stderr
    asked = subprocess.run([*args, "-o", str(tmp_path / "b.npy"), "--progress"], capture_output=True, text=True)
    assert asked.returncode == 0 and "%|" in asked.stderr


def test_a_new_encode_option_reaches_the_commands_with_no_command_edited(monkeypatch, tmp_path):
    """An ``EncodeOptions`` field with ``cli`` metadata is an option of ``encode`` and ``cluster`` and reaches the
    options object they build: the commands list none of the options by hand."""
    import dataclasses
    import importlib

    import typer

    import inbedder.cli.cluster
    import inbedder.cli.encode
    import inbedder.options
    from inbedder.options import EncodeOptions, cli

    wider = dataclasses.make_dataclass(
        "WiderOptions",
        [("shout", bool, dataclasses.field(default=False, metadata=cli("Answer in capitals.")))],
        bases=(EncodeOptions,),
        frozen=True,
    )
    built = []

    def record(cls, values, **more):
        built.append(cls(**values, **more))
        raise InputError("stop here")

    monkeypatch.setattr(inbedder.options, "EncodeOptions", wider)
    try:
        app = typer.Typer()
        for module in (importlib.reload(inbedder.cli.encode), importlib.reload(inbedder.cli.cluster)):
            monkeypatch.setattr(module, "build", record)
            app.command()(getattr(module, module.__name__.rsplit(".", 1)[1]))
        runner = CliRunner()
        for command in ("encode", "cluster"):
            shown = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
            assert "--shout" in shown.output and "Answer in capitals." in shown.output
            runner.invoke(app, [command, "in.csv", "-i", "Why?", "-o", str(tmp_path / "out"), "--shout"])
        assert [type(b).__name__ for b in built] == ["WiderOptions", "WiderOptions"] and all(b.shout for b in built)
    finally:
        monkeypatch.undo()
        importlib.reload(inbedder.cli.encode)
        importlib.reload(inbedder.cli.cluster)


def test_a_command_that_declares_an_option_the_dataclass_gives_is_refused():
    from inbedder.cli.declared import takes_fields
    from inbedder.options import EncodeOptions

    def command(batch_size: int = 3, encoding: dict | None = None) -> None: ...

    with pytest.raises(TypeError, match=r"command declares \['batch_size'\] itself and takes them from EncodeOptions"):
        takes_fields(EncodeOptions, "encoding")(command)


def test_encode_reads_a_pipe_and_writes_json_lines(tiny, tiny_model_dir):
    common = ["encode", "-", "-i", "Is it good?", "-o", "-", "--model", str(tiny_model_dir), "--no-progress"]
    piped = CliRunner().invoke(cli.app, common, input="id,text\n7,great lamp\n9,it broke\n")
    assert piped.exit_code == 0, piped.output
    records = [json.loads(line) for line in piped.stdout.splitlines()]
    assert [r["id"] for r in records] == ["7", "9"] and set(records[0]) == {"id", "embedding"}
    expected = tiny.encode(["great lamp", "it broke"], "Is it good?")
    np.testing.assert_allclose([r["embedding"] for r in records], expected, atol=1e-5)

    jsonl = '{"text": "great lamp"}\n{"text": "it broke"}\n'
    answered = CliRunner().invoke(cli.app, [*common, "--return-generations", "--max-new-tokens", "2"], input=jsonl)
    assert answered.exit_code == 0, answered.output
    records = [json.loads(line) for line in answered.stdout.splitlines()]
    _, answers = tiny.encode(["great lamp", "it broke"], "Is it good?", return_generations=True, max_new_tokens=2)
    assert [r["id"] for r in records] == [0, 1] and [r["answer"] for r in records] == answers


@pytest.mark.parametrize(
    ("given", "extra", "message"),
    [
        ("", [], "standard input is empty"),
        ('{"text": "a"}\n[1]\n', [], "line 2 is list, not a JSON object"),
        ("id,text\n1,a\n", ["--engine", "ray"], "'-' (standard input or output) is for local runs"),
    ],
)
def test_a_bad_pipe_is_one_line(given, extra, message, tiny_model_dir, monkeypatch, capsys):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO(given))
    args = ["inbedder", "encode", "-", "-i", "Q?", "-o", "-", "--model", str(tiny_model_dir), *extra]
    monkeypatch.setattr("sys.argv", args)
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and err.count("\n") == 1, err
