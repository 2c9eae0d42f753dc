"""Training on a weighted mix of files, length-grouped batches, max_length from the data, and resuming a mix."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from inbedder import cli
from inbedder.tables import InputError
from inbedder.training import train
from inbedder.training.encoding import Collator, Example, choose_max_length
from inbedder.training.mix import DataSource, mix, parse_sources
from inbedder.training.trainer import GROUP_BATCHES, TrainingConfig, _Loop

FAST = {"batch_size": 4, "progress": False, "save_every": 0}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def records(prefix: str, count: int, words: int = 1) -> list[dict]:
    return [
        {"context": f"{prefix} text {i} " + "word " * (words * (i % 5)), "question": f"{prefix}?", "answer": prefix}
        for i in range(count)
    ]


@pytest.fixture()
def two_files(tmp_path: Path) -> tuple[Path, Path]:
    return write_jsonl(tmp_path / "aspects.jsonl", records("aspect", 40)), write_jsonl(
        tmp_path / "short.jsonl", records("short", 10)
    )


# --- sources ------------------------------------------------------------------------------------------------------


def test_sources_parse_path_and_weight():
    assert DataSource.parse("data/qa.jsonl:0.7") == DataSource("data/qa.jsonl", 0.7)
    assert DataSource.parse("data/qa.jsonl") == DataSource("data/qa.jsonl", 1.0)
    assert DataSource.parse(("a.csv", 2)) == DataSource("a.csv", 2.0)
    assert DataSource.parse("user/dataset:v2") == DataSource("user/dataset:v2", 1.0)  # not a weight: part of the id
    assert parse_sources("a.jsonl") == [DataSource("a.jsonl")]
    assert parse_sources(("a.jsonl", 0.5)) == [DataSource("a.jsonl", 0.5)]
    assert parse_sources(["a.jsonl:3", "b.jsonl:1"]) == [DataSource("a.jsonl", 3.0), DataSource("b.jsonl", 1.0)]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (["a.jsonl:0"], "weight of a.jsonl must be a positive number, got 0.0"),
        (["a.jsonl:-1"], "weight of a.jsonl must be a positive number, got -1.0"),
        (["a.jsonl:nan"], "weight of a.jsonl must be a positive number"),
        (["a.jsonl", "a.jsonl:2"], "a.jsonl is given twice"),
        ([], "no training data given"),
        ([":0.5"], "needs a path"),
    ],
)
def test_bad_sources_are_refused_by_name(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_sources(spec)


# --- the mix ------------------------------------------------------------------------------------------------------


def test_mix_takes_each_source_by_weight_and_holds_out_disjointly(two_files):
    aspects, short = two_files
    mixed = mix([DataSource(str(aspects), 0.7), DataSource(str(short), 0.3)], limit=30, eval_size=10, seed=1)
    by_answer = Counter(r.answer for r in mixed.train)
    assert by_answer == {"aspect": 21, "short": 9}
    assert Counter(r.answer for r in mixed.held_out) == {"aspect": 7, "short": 3}
    assert not {r.context for r in mixed.held_out} & {r.context for r in mixed.train}
    assert [s["train_records"] for s in mixed.sources] == [21, 9]
    assert [s["records"] for s in mixed.sources] == [40, 10] and mixed.sources[0]["weight"] == 0.7
    assert len({r.context for r in mixed.train if r.answer == "aspect"}) == 21  # no repeats while records last
    first_half = [r.answer for r in mixed.train[:15]]
    assert "aspect" in first_half and "short" in first_half  # the sources are interleaved, not appended


def test_a_small_source_repeats_whole_to_fill_its_share(two_files):
    aspects, short = two_files
    mixed = mix([DataSource(str(aspects), 1), DataSource(str(short), 1)], limit=60, eval_size=0)
    shorts = Counter(r.context for r in mixed.train if r.answer == "short")
    assert sum(shorts.values()) == 30 and len(shorts) == 10 and set(shorts.values()) == {3}


def test_mix_is_seeded_and_one_source_without_limit_uses_every_record(two_files):
    aspects, short = two_files
    sources = [DataSource(str(aspects), 2), DataSource(str(short), 1)]
    assert mix(sources, seed=3).train == mix(sources, seed=3).train != mix(sources, seed=4).train
    alone = mix([DataSource(str(aspects))], eval_fraction=0.1)
    assert len(alone.train) == 36 and len(alone.held_out) == 4
    assert {r.context for r in alone.train} | {r.context for r in alone.held_out} == {
        r["context"] for r in records("aspect", 40)
    }


def test_mix_names_a_missing_file(tmp_path, two_files):
    with pytest.raises(InputError, match="input file not found: .*nope.jsonl"):
        mix([DataSource(str(two_files[0])), DataSource(str(tmp_path / "nope.jsonl"))])


# --- length ---------------------------------------------------------------------------------------------------------


def test_choose_max_length_covers_the_quantile_rounded_up():
    assert choose_max_length(list(range(1, 101))) == 104  # 98th percentile is 98 -> next multiple of 8
    assert choose_max_length([10] * 99 + [900]) == 16
    assert choose_max_length([33]) == 40
    with pytest.raises(ValueError, match="no records"):
        choose_max_length([])


def _loop(lengths: list[int], **options) -> _Loop:
    examples = [Example([1] * n, [1] * n) for n in lengths]
    config = TrainingConfig(**(FAST | {"batch_size": 4} | options))
    return _Loop(torch.nn.Linear(1, 1), examples, Collator(0), config, torch.device("cpu"))


def test_length_grouped_batches_cover_each_record_once_with_less_padding():
    lengths = [int(n) for n in torch.randint(5, 300, (1001,), generator=torch.Generator().manual_seed(0))]
    grouped, plain = _loop(lengths), _loop(lengths, group_by_length=False)
    for loop in (grouped, plain):
        batches = loop.epoch_batches(0)
        assert len(batches) == loop.per_epoch == 251
        assert sorted(i for b in batches for i in b) == list(range(1001))

    def padded(batches):
        return sum(len(b) * max(lengths[i] for i in b) for b in batches)

    tokens = sum(lengths)
    assert padded(grouped.epoch_batches(0)) < 1.05 * tokens < 1.05 / 1.5 * padded(plain.epoch_batches(0))
    assert grouped.epoch_batches(0) == grouped.epoch_batches(0) != grouped.epoch_batches(1)
    # batches are shuffled after grouping: the first ones are not simply the shortest
    first = [max(lengths[i] for i in b) for b in grouped.epoch_batches(0)[:GROUP_BATCHES]]
    assert first != sorted(first)


# --- training on a mix ------------------------------------------------------------------------------------------------


def test_training_json_records_the_mix_and_the_chosen_length(tiny_model_dir, two_files, tmp_path):
    aspects, short = two_files
    result = train(
        str(tiny_model_dir),
        [f"{aspects}:0.7", (short, 0.3)],
        tmp_path / "out",
        max_steps=2,
        limit=20,
        eval_size=4,
        max_length="auto",
        **FAST,
    )
    record = json.loads((tmp_path / "out" / "training.json").read_text())
    assert [(s["path"], s["weight"], s["train_records"]) for s in record["data_mix"]] == [
        (str(aspects), 0.7, 14),
        (str(short), 0.3, 6),
    ]
    assert record["data"] == [{"path": str(aspects), "weight": 0.7}, {"path": str(short), "weight": 0.3}]
    assert record["max_length"] == "auto" and record["max_length_used"] % 8 == 0
    assert record["train_records"] == 20 == result.train_records and record["eval_records"] == 4
    assert record["group_by_length"] is True and record["train_tokens"] > 0


def test_an_interrupted_mixed_run_resumes_to_the_same_weights(tiny_model_dir, two_files, tmp_path):
    aspects, short = two_files
    data = [f"{aspects}:0.6", f"{short}:0.4"]
    options = FAST | {"max_steps": 6, "eval_size": 4, "max_length": "auto", "lr": 5e-3, "lora_dropout": 0.1}
    options |= {"save_every": 3, "keep_checkpoints": None}
    full = train(str(tiny_model_dir), data, tmp_path / "full", **options)
    (tmp_path / "resumed").mkdir()
    shutil.copytree(tmp_path / "full" / "checkpoint-3", tmp_path / "resumed" / "checkpoint-3")  # killed after step 3
    resumed = train(str(tiny_model_dir), data, tmp_path / "resumed", resume=True, **options)
    assert resumed.details["resumed_from_step"] == 3
    assert resumed.train_losses == pytest.approx(full.train_losses, rel=1e-5)
    weights, expected = (load_file(str(tmp_path / d / "adapter_model.safetensors")) for d in ("resumed", "full"))
    assert weights.keys() == expected.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(weights[name], tensor, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="settings differ"):
        train(str(tiny_model_dir), [f"{aspects}:0.5", f"{short}:0.5"], tmp_path / "resumed", resume=True, **options)


def test_cli_takes_a_mix_and_auto_length(tiny_model_dir, two_files, tmp_path, monkeypatch, capsys):
    aspects, short = two_files
    args = ["train", "--base", str(tiny_model_dir), "--data", f"{aspects}:3", "--data", f"{short}:1"]
    args += ["--max-steps", "1", "--no-progress"]
    result = CliRunner().invoke(cli.app, [*args, "--out", str(tmp_path / "out"), "--max-length", "auto"])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "out" / "training.json").read_text())
    assert [s["weight"] for s in record["data_mix"]] == [3.0, 1.0]
    monkeypatch.setattr("sys.argv", ["inbedder", *args, "--out", str(tmp_path / "bad"), "--max-length", "long"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1
    assert "--max-length must be a number of tokens or 'auto', got 'long'" in err


def test_config_refuses_a_bad_max_length():
    with pytest.raises(ValueError, match="max_length must be a positive number of tokens or 'auto', got 'long'"):
        TrainingConfig(max_length="long")


def test_answer_loss_equals_the_models_own_loss(tiny_model_dir, bert_dir, t5_dir):
    from inbedder.training.losses import _keeps_logits, answer_loss
    from inbedder.training.modeling import load_model

    llama = load_model(str(tiny_model_dir), "causal").eval()
    assert _keeps_logits(llama) and not _keeps_logits(load_model(str(bert_dir), "masked"))
    assert not _keeps_logits(load_model(str(t5_dir), "seq2seq"))
    examples = [Example([5, 6, 7, 8, 9], [-100, -100, -100, 8, 9]), Example([5, 6, 7], [-100, 6, 7])]
    batch = Collator(0)(examples)
    with torch.no_grad():
        expected = llama(**batch).loss
        logits = llama(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    by_hand = torch.nn.functional.cross_entropy(torch.cat([logits[0, 2:4], logits[1, 0:2]]), torch.tensor([8, 9, 6, 7]))
    with torch.no_grad():
        torch.testing.assert_close(answer_loss(llama, batch), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(answer_loss(llama, batch), by_hand, rtol=1e-5, atol=1e-6)


def test_the_mix_script_splits_open_answers_by_group_and_caps_tasks(tmp_path):
    import subprocess
    import sys

    data = tmp_path / "data"
    data.mkdir()
    open_rows = [{"context": f"t{i}", "question": "q", "answer": "a", "group": g} for i, g in enumerate("xxy")]
    aspects = [{"context": f"c{i}", "question": "q", "answer": "a", "task": t} for i, t in enumerate("sssssmmmm")]
    write_jsonl(data / "qa-open.jsonl", open_rows)
    write_jsonl(data / "qa-aspects.jsonl", aspects)
    script = Path(__file__).parents[1] / "scripts" / "training_mix.py"
    command = [sys.executable, str(script), "--data-dir", str(data), "--out", str(tmp_path / "mix"), "--cap", "3"]
    done = subprocess.run([*command, "--task-cap", "m=0"], capture_output=True, text=True, check=True)
    assert "qa-aspects-capped.jsonl: 3 records" in done.stdout
    capped = [json.loads(line) for line in (tmp_path / "mix" / "qa-aspects-capped.jsonl").read_text().splitlines()]
    assert Counter(r["task"] for r in capped) == {"s": 3}
    assert len((tmp_path / "mix" / "qa-open-x.jsonl").read_text().splitlines()) == 2
    refused = subprocess.run([*command, "--task-cap", "nope=1"], capture_output=True, text=True)
    assert refused.returncode != 0 and "--task-cap names tasks qa-aspects does not have: nope" in refused.stderr
