"""QA fine-tuning on tiny random models built here (Llama, BERT, T5): encoding, training, resuming, loading."""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from inbedder import InBedder, cli, models
from inbedder.cli import train as cli_train
from inbedder.loading import read_family
from inbedder.tables import InputError
from inbedder.training import (
    DEFAULT_HUB_DATA,
    IGNORE_INDEX,
    Collator,
    Columns,
    Example,
    QAEncoder,
    QARecord,
    TrainingConfig,
    load_records,
    shuffle_split,
    train,
)
from inbedder.training.modeling import freeze_below, load_model, top_blocks

CORPUS = [
    "I love my cat and my dog. The cat sleeps; the dog barks.",
    "What animal is mentioned? How does the writer feel about it? Which one is lazy?",
    "### Input:\n### Instruction:\n### Response:",
    "The quick brown fox jumps over the lazy dog. Reviews, tweets, stories and poems.",
]
ANIMALS = ["cat", "dog", "fox", "cat", "dog", "fox", "cat", "dog"]
RECORDS = [
    {"context": f"The quick brown {a} jumps over the lazy dog {i}.", "question": "What animal jumps?", "answer": a}
    for i, a in enumerate(ANIMALS)
]
FAST = {"batch_size": 4, "max_length": 64, "progress": False, "save_every": 0}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def loud_llama_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama with its output layer scaled up.

    At its random init (std 0.02 over 32 dimensions) no hidden state moves the logits by more
    than about half a nat, so adapters inside the blocks could barely lower the loss.
    """
    from transformers import AutoModelForCausalLM

    directory = tmp_path_factory.mktemp("loud-llama")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        model.lm_head.weight.mul_(10)
    model.save_pretrained(directory)
    tokenizer_of(tiny_model_dir).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def qa_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("qa") / "qa.jsonl", RECORDS)


@pytest.fixture(scope="module")
def adapter_run(tiny_model_dir: Path, qa_file: Path, tmp_path_factory: pytest.TempPathFactory):
    """A LoRA run of 4 steps with a checkpoint at step 2 (and LoRA dropout, so resuming must restore the RNG)."""
    out = tmp_path_factory.mktemp("runs") / "adapter"
    options = FAST | {"save_every": 2, "keep_checkpoints": None, "lora_dropout": 0.1, "lr": 5e-3}
    return train(str(tiny_model_dir), qa_file, out, max_steps=4, eval_size=2, **options), options


def tokenizer_of(directory: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(directory)


# --- encoding -------------------------------------------------------------------------------------------------


def test_causal_labels_cover_the_answer_and_eos_only(tiny, tiny_model_dir):
    tokenizer = tokenizer_of(tiny_model_dir)
    record = QARecord("I love my cat.", "What animal is mentioned?", "cat")
    example = QAEncoder(tokenizer, "causal", max_length=64)(record)
    prompt = tiny.prompt_tokenizer(record.context, record.question, tiny.template)  # what InBedder.encode reads
    answer = tokenizer(" cat", add_special_tokens=False)["input_ids"]
    assert example.input_ids == [*prompt, *answer, tokenizer.eos_token_id]
    assert example.labels == [IGNORE_INDEX] * len(prompt) + [*answer, tokenizer.eos_token_id]


def test_masked_labels_only_at_the_masks(bert_dir):
    tokenizer = tokenizer_of(bert_dir)
    record = QARecord("I love my cat.", "What animal is mentioned?", "the lazy dog")
    example = QAEncoder(tokenizer, "masked", max_length=64)(record)
    answer = tokenizer("the lazy dog", add_special_tokens=False)["input_ids"]
    masks = [i for i, t in enumerate(example.input_ids) if t == tokenizer.mask_token_id]
    assert len(masks) == len(answer) == 3
    assert masks == list(range(masks[0], masks[0] + 3)) and masks[-1] == len(example.input_ids) - 2
    assert example.input_ids[0] == tokenizer.cls_token_id and example.input_ids[-1] == tokenizer.sep_token_id
    assert [example.labels[i] for i in masks] == answer
    assert all(label == IGNORE_INDEX for i, label in enumerate(example.labels) if i not in masks)
    prompt = tokenizer.decode(example.input_ids[: masks[0]], skip_special_tokens=True)
    assert "i love my cat" in prompt and prompt.endswith("response :")


def test_seq2seq_prompt_to_encoder_answer_to_decoder(t5_dir):
    tokenizer = tokenizer_of(t5_dir)
    example = QAEncoder(tokenizer, "seq2seq", max_length=64)(QARecord("I love my cat.", "What animal?", "cat"))
    assert example.input_ids[-1] == tokenizer.eos_token_id
    assert "Input:" in tokenizer.decode(example.input_ids) and "What animal?" in tokenizer.decode(example.input_ids)
    assert example.labels == [*tokenizer(" cat", add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]


@pytest.mark.parametrize("family", ["causal", "masked", "seq2seq"])
def test_truncation_cuts_the_context_only(family, tiny_model_dir, bert_dir, t5_dir):
    directory = {"causal": tiny_model_dir, "masked": bert_dir, "seq2seq": t5_dir}[family]
    tokenizer = tokenizer_of(directory)
    question, answer = "Which one is lazy?", "the dog"
    record = QARecord("The quick brown fox jumps over the lazy dog. " * 40, question, answer)
    example = QAEncoder(tokenizer, family, max_length=48, max_answer_tokens=8)(record)
    total = len(example.input_ids) + (len(example.labels) if family == "seq2seq" else 0)
    assert len(example.input_ids) <= 48 and total > 40  # the context filled the room left
    text = tokenizer.decode([t for t in example.input_ids if t != tokenizer.mask_token_id], skip_special_tokens=True)
    assert question.lower() in text.lower()
    answer_ids = [t for t in example.labels if t != IGNORE_INDEX]
    assert tokenizer.decode(answer_ids, skip_special_tokens=True).strip() == answer


def test_question_that_leaves_no_room_is_left_out(tiny_model_dir):
    encoder = QAEncoder(tokenizer_of(tiny_model_dir), "causal", max_length=40, max_answer_tokens=4)
    fits = QARecord("cat", "What animal?", "cat")
    assert encoder.encode_all([fits, QARecord("cat", "What animal? " * 30, "cat")]) == [encoder(fits)]
    with pytest.raises(ValueError, match="no record fits in max_length=40"):
        encoder.encode_all([QARecord("cat", "What animal? " * 30, "cat")])


def test_collator_pads_right_with_ignored_labels(tiny_model_dir):
    encoder = QAEncoder(tokenizer_of(tiny_model_dir), "causal", max_length=64)
    short, long = encoder(QARecord("cat", "What?", "cat")), encoder(QARecord("my cat and my dog", "What?", "dog"))
    batch = Collator(pad_id=0)([short, long])
    n = len(short.input_ids)
    assert batch["input_ids"].shape == batch["labels"].shape == (2, len(long.input_ids))
    assert batch["attention_mask"][0].tolist() == [1] * n + [0] * (len(long.input_ids) - n)
    assert batch["labels"][0, n:].eq(IGNORE_INDEX).all() and batch["input_ids"][0, n:].eq(0).all()
    assert batch["labels"][1].tolist() == long.labels


@pytest.mark.parametrize(("lengths", "multiple", "width"), [([5, 40], 32, 64), ([32], 32, 32), ([3, 7], 1, 7)])
def test_collator_pads_batches_to_a_multiple(lengths, multiple, width):
    examples = [Example(list(range(1, n + 1)), [IGNORE_INDEX] * (n - 1) + [9]) for n in lengths]
    batch = Collator(pad_id=0, multiple=multiple)(examples)
    assert batch["input_ids"].shape == (len(lengths), width)
    for row, n in enumerate(lengths):
        assert batch["attention_mask"][row].sum() == n and batch["input_ids"][row, n:].eq(0).all()
        assert batch["labels"][row, n:].eq(IGNORE_INDEX).all() and batch["labels"][row, n - 1] == 9


def test_pad_multiple_must_be_positive():
    with pytest.raises(InputError, match="pad_multiple must be positive, got 0"):
        TrainingConfig(pad_multiple=0)


# --- data -----------------------------------------------------------------------------------------------------


def test_records_from_csv_and_column_errors(tmp_path):
    path = tmp_path / "qa.csv"
    path.write_text("passage,q,a\nI love my cat.,What animal?,cat\nThe dog.,Which?,dog\n")
    records = load_records(path, Columns(context="passage", question="q", answer="a"))
    assert records[0] == QARecord("I love my cat.", "What animal?", "cat") and len(records) == 2
    with pytest.raises(InputError, match=r"has no column 'context'; its columns are \['passage', 'q', 'a'\]"):
        load_records(path)
    path.write_text("context,question,answer\nI love my cat.,What animal?,\n")
    with pytest.raises(InputError, match="row 1 of column 'answer' is empty"):
        load_records(path)
    with pytest.raises(InputError, match="input file not found"):
        load_records(tmp_path / "missing.jsonl")
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(InputError, match="cannot read"):
        load_records(tmp_path / "bad.jsonl")


def test_shuffle_split_is_seeded_and_holds_out():
    records = [QARecord(f"c{i}", "q", "a") for i in range(50)]
    train_part, held = shuffle_split(records, seed=3, eval_size=5)
    assert (train_part, held) == shuffle_split(records, seed=3, eval_size=5)
    assert len(held) == 5 and len(train_part) == 45 and set(held).isdisjoint(train_part)
    assert shuffle_split(records, seed=4, eval_size=5)[1] != held
    assert [len(p) for p in shuffle_split(records, limit=20, eval_fraction=0.1)] == [18, 2]
    with pytest.raises(ValueError, match="cannot hold out 50 of 50"):
        shuffle_split(records, eval_size=50)


def test_hub_path_reads_the_same_schema(tmp_path):
    data = write_jsonl(tmp_path / "pretrain.jsonl", RECORDS)
    records = load_records(DEFAULT_HUB_DATA, data_files=data)
    assert records == [QARecord(r["context"], r["question"], r["answer"]) for r in RECORDS]


def test_unreachable_hub_is_one_clear_error(monkeypatch):
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ConnectionError, match=r"cannot load training data from the Hugging Face hub \(KomeijiForce/"):
        load_records(DEFAULT_HUB_DATA)


# --- models ---------------------------------------------------------------------------------------------------


def test_family_detection(tiny_model_dir, bert_dir, t5_dir):
    assert [read_family(str(d)) for d in (tiny_model_dir, bert_dir, t5_dir)] == ["causal", "masked", "seq2seq"]
    assert read_family(str(bert_dir), "causal") == "causal"  # given, not read


def test_adapter_names_a_base_inbedder_can_resolve(tiny_model_dir):
    assert models.canonical_name("smollm2") == models.canonical_name("SmolLM2-135M-Instruct") == "smollm2-135m-instruct"
    assert models.canonical_name("default") == models.DEFAULT_MODEL
    assert models.canonical_name(str(tiny_model_dir)) == str(tiny_model_dir.resolve())
    assert models.canonical_name("org/some-model") == "org/some-model"


def test_train_layers_freezes_everything_below(tiny_model_dir, t5_dir):
    llama = load_model(str(tiny_model_dir), "causal")
    blocks = top_blocks(llama, 1)
    assert blocks == ["model.layers.2"]
    freeze_below(llama, blocks)
    trainable = {n for n, p in llama.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("model.layers.2.") for n in trainable)
    assert top_blocks(load_model(str(t5_dir), "seq2seq"), 1) == ["encoder.block.1", "decoder.block.1"]
    with pytest.raises(ValueError, match="between 1 and the model's 3 layers"):
        top_blocks(llama, 4)


# --- training -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("family", "options"),
    [("causal", {"lr": 1e-2}), ("masked", {"lora": False, "lr": 1e-2}), ("seq2seq", {"lr": 5e-2})],
)
def test_a_few_steps_reduce_the_loss(family, options, loud_llama_dir, bert_dir, t5_dir, qa_file, tmp_path):
    base = {"causal": loud_llama_dir, "masked": bert_dir, "seq2seq": t5_dir}[family]
    settings = FAST | {"batch_size": 8, "eval_size": 0, "lora_dropout": 0.0, "warmup_steps": 0} | options
    result = train(str(base), qa_file, tmp_path / "out", max_steps=8, **settings)
    assert result.family == family and result.steps == 8 and len(result.train_losses) == 8
    assert result.train_losses[-1] < 0.7 * result.train_losses[0], result.train_losses


def answer_batch(model_dir: Path) -> dict[str, torch.Tensor]:
    encoder = QAEncoder(tokenizer_of(model_dir), "causal", max_length=64)
    examples = [encoder(QARecord(r["context"], r["question"], r["answer"])) for r in RECORDS[:3]]
    return Collator(pad_id=0)(examples)


def kl_to_untuned(model_dir: Path, adapted: torch.nn.Module, batch: dict[str, torch.Tensor]) -> float:
    """Mean KL(untuned || adapted) over the states that predict an answer token, from full logits in float64."""
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    predicts = torch.zeros_like(batch["labels"], dtype=torch.bool)
    predicts[:, :-1] = batch["labels"][:, 1:] != IGNORE_INDEX
    with torch.no_grad():
        untuned = load_model(str(model_dir), "causal").eval()(**inputs).logits[predicts].double().log_softmax(-1)
        tuned = adapted.eval()(**inputs).logits[predicts].double().log_softmax(-1)
    return float((untuned.exp() * (untuned - tuned)).sum(-1).mean())


def test_kl_to_base_adds_the_weighted_divergence_from_the_untuned_model(tiny_model_dir):
    from inbedder.training.losses import answer_loss
    from inbedder.training.modeling import LoraSettings, add_lora, top_blocks

    model = load_model(str(tiny_model_dir), "causal")
    model = add_lora(model, "causal", top_blocks(model, None), LoraSettings(dropout=0.0), str(tiny_model_dir)).eval()
    batch = answer_batch(tiny_model_dir)
    with torch.no_grad():
        # fresh adapters change nothing (LoRA's B starts at zero): no divergence yet
        assert answer_loss(model, batch, 0.5).item() == pytest.approx(answer_loss(model, batch).item(), abs=1e-6)
        torch.manual_seed(0)
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.5)
        plain, with_kl = answer_loss(model, batch).item(), answer_loss(model, batch, 0.5).item()
    divergence = kl_to_untuned(tiny_model_dir, model, batch)
    assert divergence > 1e-3
    assert with_kl - plain == pytest.approx(0.5 * divergence, rel=1e-3)


def test_training_with_kl_to_base_stays_closer_to_the_base(loud_llama_dir, qa_file, tmp_path):
    from inbedder.training.modeling import load_lora

    settings = FAST | {"batch_size": 8, "eval_size": 0, "lora_dropout": 0.0, "warmup_steps": 0, "lr": 1e-2}
    batch, divergence, losses = answer_batch(loud_llama_dir), {}, {}
    for weight in (0.0, 4.0):
        result = train(
            str(loud_llama_dir), qa_file, tmp_path / f"kl{weight}", max_steps=8, kl_to_base=weight, **settings
        )
        adapted = load_lora(load_model(str(loud_llama_dir), "causal"), result.out)
        divergence[weight], losses[weight] = kl_to_untuned(loud_llama_dir, adapted, batch), result.train_losses
        assert result.details["settings"]["kl_to_base"] == weight
    assert divergence[4.0] < 0.5 * divergence[0.0], divergence
    assert losses[4.0][-1] < losses[4.0][0], losses  # it still learns the answers


def test_kl_to_base_is_refused_where_there_is_no_base_to_compare(t5_dir, qa_file, tmp_path):
    with pytest.raises(InputError, match="kl_to_base must be 0 .off. or a positive weight, got -1"):
        TrainingConfig(kl_to_base=-1)
    with pytest.raises(InputError, match="kl_to_base needs LoRA training"):
        TrainingConfig(kl_to_base=0.5, lora=False)
    with pytest.raises(InputError, match=r"kl_to_base applies to causal LMs; .* is a seq2seq model"):
        train(str(t5_dir), qa_file, tmp_path / "out", max_steps=1, kl_to_base=0.5, **FAST)


def test_a_run_from_before_a_new_setting_resumes_with_its_default(adapter_run, tiny_model_dir, qa_file, tmp_path):
    full, options = adapter_run
    older = tmp_path / "older"
    shutil.copytree(full.out / "checkpoint-2", older / "checkpoint-2")
    state_file = older / "checkpoint-2" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    del state["settings"]["kl_to_base"]  # a run begun before the option existed
    state_file.write_text(json.dumps(state))
    resumed = train(str(tiny_model_dir), qa_file, older, max_steps=4, eval_size=2, resume=True, **options)
    assert resumed.details["resumed_from_step"] == 2
    np.testing.assert_allclose(resumed.train_losses, full.train_losses, rtol=1e-5)
    with pytest.raises(InputError, match=r"settings differ \(kl_to_base: 0.0 -> 0.5\)"):
        train(str(tiny_model_dir), qa_file, older, max_steps=4, eval_size=2, resume=True, kl_to_base=0.5, **options)


def test_top_layers_lora_adapts_only_those_layers(tiny_model_dir, qa_file, tmp_path):
    train(str(tiny_model_dir), qa_file, tmp_path / "out", max_steps=1, train_layers=1, **FAST)
    targets = json.loads((tmp_path / "out" / "adapter_config.json").read_text())["target_modules"]
    assert targets and all(t.startswith("model.layers.2.") for t in targets)
    assert {t.rsplit(".", 1)[-1] for t in targets} >= {"q_proj", "v_proj", "down_proj"}


def test_output_loads_in_inbedder_and_records_the_run(adapter_run, tiny, tiny_model_dir):
    result, _ = adapter_run
    adapter_config = json.loads((result.out / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == str(tiny_model_dir.resolve())
    record = json.loads((result.out / "training.json").read_text())
    assert record["train_losses"] == result.train_losses and len(record["train_losses"]) == 4
    assert record["eval_loss"] == result.eval_loss > 0 and record["eval_records"] == 2
    assert record["steps"] == 4 and record["family"] == "causal" and record["max_length"] == 64
    trained = InBedder(str(result.out), max_length=64)
    texts = ["I love my cat", "the lazy dog"]
    assert not np.allclose(trained.encode(texts, "What animal?"), tiny.encode(texts, "What animal?"), atol=1e-4)


def test_merged_output_loads_like_the_adapter(adapter_run, tiny_model_dir, qa_file, tmp_path):
    first, options = adapter_run
    merged = train(str(tiny_model_dir), qa_file, tmp_path / "merged", max_steps=4, eval_size=2, merge=True, **options)
    assert not (merged.out / "adapter_config.json").exists() and (merged.out / "model.safetensors").exists()
    texts = ["I love my cat", "the lazy dog"]
    np.testing.assert_allclose(
        InBedder(str(merged.out), max_length=64).encode(texts, "What animal?"),
        InBedder(str(first.out), max_length=64).encode(texts, "What animal?"),
        atol=1e-4,
    )


def test_resume_from_a_checkpoint_matches_the_uninterrupted_run(adapter_run, tiny_model_dir, qa_file, tmp_path):
    full, options = adapter_run
    assert (full.out / "checkpoint-2" / "adapter_model.safetensors").exists()
    interrupted = tmp_path / "resumed"
    interrupted.mkdir()
    shutil.copytree(full.out / "checkpoint-2", interrupted / "checkpoint-2")  # as if killed after step 2
    resumed = train(str(tiny_model_dir), qa_file, interrupted, max_steps=4, eval_size=2, resume=True, **options)
    np.testing.assert_allclose(resumed.train_losses, full.train_losses, rtol=1e-5)
    assert resumed.details["resumed_from_step"] == 2 and resumed.eval_loss == pytest.approx(full.eval_loss, rel=1e-5)
    weights, expected = (load_file(str(d / "adapter_model.safetensors")) for d in (interrupted, full.out))
    assert weights.keys() == expected.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(weights[name], tensor, rtol=1e-5, atol=1e-6)


def test_a_truncated_newest_checkpoint_falls_back_to_the_one_before(
    adapter_run, tiny_model_dir, qa_file, tmp_path, caplog
):
    full, options = adapter_run
    interrupted = tmp_path / "resumed"
    interrupted.mkdir()
    shutil.copytree(full.out / "checkpoint-2", interrupted / "checkpoint-2")
    shutil.copytree(full.out / "checkpoint-2", interrupted / "checkpoint-3")  # killed while writing step 3's
    state = interrupted / "checkpoint-3" / "trainer_state.safetensors"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    resumed = train(str(tiny_model_dir), qa_file, interrupted, max_steps=4, eval_size=2, resume=True, **options)
    assert resumed.details["resumed_from_step"] == 2
    np.testing.assert_allclose(resumed.train_losses, full.train_losses, rtol=1e-5)
    assert "checkpoint-3 cannot be resumed from (SafetensorError" in caplog.text and "from checkpoint-2" in caplog.text
    (interrupted / "checkpoint-2" / "trainer_state.json").write_text("{")
    shutil.rmtree(interrupted / "checkpoint-3")
    for name in ("training.json", "adapter_model.safetensors"):
        (interrupted / name).unlink()
    with pytest.raises(
        InputError, match=r"no checkpoint in .*resumed can be resumed from: checkpoint-2 \(JSONDecodeError"
    ):
        train(str(tiny_model_dir), qa_file, interrupted, max_steps=4, eval_size=2, resume=True, **options)


def test_full_fine_tuning_resumes_too(bert_dir, qa_file, tmp_path):
    options = FAST | {"lora": False, "lr": 1e-3, "save_every": 2, "eval_size": 2, "max_steps": 4}  # BERT has dropout
    full = train(str(bert_dir), qa_file, tmp_path / "full", **options)
    files = [f.name for f in (tmp_path / "full").rglob("*") if f.is_file()]
    assert "trainer_state.safetensors" in files and not [f for f in files if f.endswith((".bin", ".pt", ".pkl"))]
    (tmp_path / "resumed").mkdir()
    shutil.copytree(tmp_path / "full" / "checkpoint-2", tmp_path / "resumed" / "checkpoint-2")
    resumed = train(str(bert_dir), qa_file, tmp_path / "resumed", resume=True, **options)
    np.testing.assert_allclose(resumed.train_losses, full.train_losses, rtol=1e-5)
    weights, expected = (load_file(str(tmp_path / d / "model.safetensors")) for d in ("resumed", "full"))
    for name, tensor in expected.items():
        torch.testing.assert_close(weights[name], tensor, rtol=1e-5, atol=1e-6)


def test_refuses_to_overwrite_or_resume_with_other_settings(adapter_run, tiny_model_dir, qa_file):
    result, options = adapter_run
    with pytest.raises(
        InputError, match="already holds a training run; pass resume=True or choose another out$"
    ) as err:
        train(str(tiny_model_dir), qa_file, result.out, max_steps=4, eval_size=2, **options)
    assert err.value.render(command_line=True).endswith("pass --resume or choose another --out")  # as the CLI says it
    with pytest.raises(ValueError, match=r"settings differ \(lr: 0.005 -> 0.001"):
        train(str(tiny_model_dir), qa_file, result.out, max_steps=4, eval_size=2, resume=True, **options | {"lr": 1e-3})


def test_a_finished_run_without_checkpoints_is_not_resumed_with_other_settings(adapter_run, qa_file, tmp_path):
    result, options = adapter_run
    finished = tmp_path / "finished"
    shutil.copytree(result.out, finished, ignore=shutil.ignore_patterns("checkpoint-*"))
    before = {p.name: p.read_bytes() for p in finished.iterdir() if p.is_file()}
    base = json.loads((finished / "training.json").read_text())["base"]
    with pytest.raises(InputError, match=r"settings differ \(lora_rank: 8 -> 4"):
        train(base, qa_file, finished, max_steps=4, eval_size=2, resume=True, **options | {"lora_rank": 4})
    with pytest.raises(InputError, match="holds a finished run and no checkpoint to go on from"):
        train(base, qa_file, finished, max_steps=4, eval_size=2, resume=True, **options)
    assert {p.name: p.read_bytes() for p in finished.iterdir() if p.is_file()} == before


def test_a_folder_of_other_files_is_written_into_only_when_asked(tiny_model_dir, qa_file, tmp_path):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "README.md").write_text("my project")
    with pytest.raises(InputError, match="holds other files and no training run.*pass overwrite=True"):
        train(str(tiny_model_dir), qa_file, folder, max_steps=1, eval_size=2, **FAST)
    assert (folder / "README.md").read_text() == "my project" and len(list(folder.iterdir())) == 1
    train(str(tiny_model_dir), qa_file, folder, max_steps=1, eval_size=2, overwrite=True, **FAST)
    assert (folder / "adapter_config.json").is_file()


def test_refused_data_leaves_no_output_folder(tiny_model_dir, tmp_path):
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"context": "c", "question": "q"}])
    with pytest.raises(ValueError):
        train(str(tiny_model_dir), bad, tmp_path / "out", max_steps=1, **FAST)
    assert not (tmp_path / "out").exists()


def test_config_rejects_bad_options():
    with pytest.raises(ValueError, match="give warmup_steps or warmup_ratio, not both"):
        TrainingConfig(warmup_steps=3, warmup_ratio=0.1)
    with pytest.raises(ValueError, match="batch_size must be positive"):
        TrainingConfig(batch_size=0)
    with pytest.raises(ValueError, match="unknown model family 'encoder'"):
        TrainingConfig(family="encoder")


# --- command line ---------------------------------------------------------------------------------------------


def test_cli_trains_end_to_end(tiny_model_dir, qa_file, tmp_path):
    out = tmp_path / "cli-out"
    args = ["train", "--base", tiny_model_dir, "--data", qa_file, "--out", out, "--max-steps", 2, "--batch-size", 4]
    args += ["--max-length", 64, "--eval-size", 2, "--train-layers", 2, "--no-progress", "--lr", 1e-3]
    result = CliRunner().invoke(cli.app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    assert "2 steps (causal)" in result.output and "held-out loss" in result.output
    record = json.loads((out / "training.json").read_text())
    assert len(record["train_losses"]) == 2 and record["train_layers"] == 2 and record["lr"] == 1e-3
    assert InBedder(str(out), max_length=64).encode("I love my cat", "What animal?").shape == (32,)


def test_without_a_bar_the_log_gets_a_line_every_few_steps(tiny_model_dir, qa_file, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr("inbedder.training.trainer.LOG_EVERY", 2)
    args = ["train", "--base", tiny_model_dir, "--data", qa_file, "--out", tmp_path / "o", "--max-steps", 3]
    args += ["--batch-size", 4, "--max-length", 64, "--eval-size", 2, "--train-layers", 1, "--no-progress"]
    with caplog.at_level(logging.INFO, logger="inbedder.training"):
        result = CliRunner().invoke(cli.app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    steps = [r.getMessage() for r in caplog.records if r.getMessage().startswith("step ")]
    assert [s.split(":")[0] for s in steps] == ["step 2/3", "step 3/3"]  # every 2 steps, and the last
    assert re.fullmatch(r"step 3/3: loss \d+\.\d{4} \(last 20\), \d+\.\d\d s a step, 0:00:00 left", steps[-1])


def test_cli_missing_column_is_one_line(tiny_model_dir, qa_file, tmp_path, monkeypatch, capsys):
    args = ["inbedder", "train", "--base", str(tiny_model_dir), "--data", str(qa_file), "--out", str(tmp_path / "o")]
    monkeypatch.setattr("sys.argv", [*args, "--answer-column", "response"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1
    assert "has no column 'response'; its columns are ['context', 'question', 'answer']" in err


def test_every_training_option_is_on_the_command_line():
    fields = {f.name for f in dataclasses.fields(TrainingConfig)} - {"target_modules"}
    assert fields <= set(inspect.signature(cli_train.train_model).parameters)
    assert "target_module" in inspect.signature(cli_train.train_model).parameters


def test_cli_defaults_match_the_config():
    config = TrainingConfig()
    for name, parameter in inspect.signature(cli_train.train_model).parameters.items():
        if name == "max_length":
            assert cli_train.tokens_or_auto(parameter.default, "--max-length") == config.max_length
        elif name == "progress":  # the command draws bars only on a terminal; the library as asked
            assert parameter.default is None and config.progress is True
        elif hasattr(config, name) and name != "target_modules":
            assert parameter.default == getattr(config, name), name


def test_an_adapter_shipped_in_the_package_loads_by_its_registered_name(adapter_run, monkeypatch, tmp_path):
    from inbedder import models as registry

    result, _ = adapter_run
    shipped = tmp_path / "adapters" / "tiny-inbedder"
    shipped.mkdir(parents=True)
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        shutil.copy(result.out / name, shipped / name)
    entry = registry.RegisteredModel(name="tiny-inbedder", description="tiny", adapter="tiny-inbedder")
    monkeypatch.setattr(registry, "ADAPTERS_DIR", tmp_path / "adapters")
    monkeypatch.setitem(registry.REGISTRY, entry.name, entry)
    monkeypatch.setitem(registry._ALIASES, entry.name, entry.name)
    assert entry.available_offline() and registry.resolve("tiny-inbedder") == str(shipped)
    texts = ["I love my cat", "the lazy dog"]
    np.testing.assert_allclose(
        InBedder("tiny-inbedder", max_length=64).encode(texts, "What animal?"),
        InBedder(str(result.out), max_length=64).encode(texts, "What animal?"),
        atol=1e-5,
    )
    shutil.rmtree(shipped)
    assert not entry.available_offline()
    with pytest.raises(FileNotFoundError, match="not installed and it has no hub id"):
        registry.resolve("tiny-inbedder")


def test_an_adapter_stored_as_int8_loads_close_to_the_float_one(adapter_run, tmp_path):
    from inbedder.adapter_storage import INT8_WEIGHTS, dequantize_int8, quantize_int8, save_int8

    result, _ = adapter_run
    weights = load_file(str(result.out / "adapter_model.safetensors"))
    packed = quantize_int8(weights)
    restored = dequantize_int8(packed)
    for name, tensor in weights.items():  # within half a step, plus what the float16 scale rounds off
        across = 1 if tensor.shape[0] <= tensor.shape[1] else 0  # a step per rank component
        step = tensor.abs().amax(dim=across, keepdim=True) / 127
        assert packed[name].dtype == torch.int8 and (restored[name] - tensor).abs().le(0.6 * step).all()
    small = tmp_path / "int8"
    small.mkdir()
    shutil.copy(result.out / "adapter_config.json", small / "adapter_config.json")
    save_int8(weights, small)
    assert (small / INT8_WEIGHTS).stat().st_size < 0.5 * (result.out / "adapter_model.safetensors").stat().st_size
    texts = ["I love my cat", "the lazy dog"]
    as_int8 = InBedder(str(small), max_length=64).encode(texts, "What animal?", normalize_embeddings=True)
    as_float = InBedder(str(result.out), max_length=64).encode(texts, "What animal?", normalize_embeddings=True)
    assert (as_int8 * as_float).sum(1).min() > 0.9999


def test_packaging_at_half_strength_merges_halfway_between_base_and_trained(
    adapter_run, tiny_model_dir, tmp_path, monkeypatch
):
    import importlib.util

    from transformers import AutoModelForCausalLM

    script = Path(__file__).parents[1] / "scripts" / "package_adapter.py"
    spec = importlib.util.spec_from_file_location("package_adapter", script)
    package_adapter = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(package_adapter)
    result, _ = adapter_run
    monkeypatch.setattr(models, "ADAPTERS_DIR", tmp_path)
    monkeypatch.setattr(models, "registered", lambda name: name == str(tiny_model_dir.resolve()) or None)
    half = package_adapter.package(result.out, "half", scale=0.5, readout="fst_head_rp")
    assert json.loads((half / "adapter_config.json").read_text())["lora_alpha"] == pytest.approx(
        0.5 * json.loads((result.out / "adapter_config.json").read_text())["lora_alpha"]
    )
    assert json.loads((half / "training.json").read_text())["shipped_scale"] == 0.5
    config = json.loads((result.out / "adapter_config.json").read_text())
    low = package_adapter.package(result.out, "low", rank=config["r"] - 1)
    shipped = json.loads((low / "adapter_config.json").read_text())
    assert shipped["r"] == config["r"] - 1  # LoRA's scale alpha / r is kept
    assert shipped["lora_alpha"] / shipped["r"] == pytest.approx(config["lora_alpha"] / config["r"])
    assert json.loads((low / "training.json").read_text())["shipped_rank"] == config["r"] - 1
    with pytest.raises(SystemExit, match="--rank must be below the adapter's rank"):
        package_adapter.package(result.out, "same", rank=config["r"])
    with pytest.raises(SystemExit, match="--scale must be positive, not 0"):
        package_adapter.package(result.out, "none", scale=0.0)

    def weights(adapter: Path | None) -> dict[str, torch.Tensor]:
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        return (models.merge_adapter(model, str(adapter)) if adapter else model).state_dict()

    base, trained, halfway = weights(None), weights(result.out), weights(half)
    moved = [name for name in base if not torch.equal(base[name], trained[name])]
    assert moved  # the run changed some weights, and half strength moves each of them half as far
    for name in moved:
        expected = base[name] + 0.5 * (trained[name] - base[name])
        torch.testing.assert_close(
            halfway[name], expected, atol=1e-3 * (trained[name] - base[name]).abs().max(), rtol=0
        )


def test_leading_components_are_the_best_low_rank_change_at_the_same_scale():
    from inbedder.adapter_storage import leading_components

    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(8, 40, generator=generator), torch.randn(24, 8, generator=generator)
    cut = leading_components({"m.lora_A.weight": a, "m.lora_B.weight": b, "other": a}, 3)
    assert cut["m.lora_A.weight"].shape == (3, 40) and cut["m.lora_B.weight"].shape == (24, 3)
    u, s, vh = torch.linalg.svd(b @ a, full_matrices=False)  # Eckart-Young: the best rank-3 approximation
    torch.testing.assert_close(
        cut["m.lora_B.weight"] @ cut["m.lora_A.weight"], (u[:, :3] * s[:3]) @ vh[:3], atol=1e-4, rtol=1e-4
    )
    assert cut["other"] is a


def test_a_pickled_adapter_is_refused_before_anything_is_unpickled(adapter_run, tmp_path):
    result, _ = adapter_run
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copy(result.out / "adapter_config.json", pickled / "adapter_config.json")
    # a pickle that would create a file if anything unpickled it
    marker = tmp_path / "unpickled"
    payload = b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."
    (pickled / "adapter_model.bin").write_bytes(payload)
    with pytest.raises(ValueError, match=r"adapter_model\.bin is a pickle, which inbedder does not load"):
        InBedder(str(pickled), max_length=64)
    assert not marker.exists()


def test_merging_an_adapter_prints_no_warning(adapter_run):
    import subprocess
    import sys

    result, _ = adapter_run
    code = f"from inbedder import InBedder; InBedder({str(result.out)!r}, max_length=64).encode(['a cat'], 'Animal?')"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "Warning" not in run.stderr, run.stderr


def test_a_model_trained_from_a_base_reads_out_as_the_base_says(tiny_model_dir, qa_file, tmp_path):
    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir, base)
    (base / "inbedder.json").write_text(json.dumps({"readout": "fst_head", "template": "chat"}))
    result = train(str(base), qa_file, tmp_path / "out", max_steps=1, eval_size=2, **FAST)
    assert json.loads((result.out / "inbedder.json").read_text()) == {"readout": "fst_head", "template": "qa"}
    assert InBedder(str(result.out), max_length=64).readout.name == "fst_head"


def test_training_from_an_adapter_without_a_tokenizer_stacks_on_it(adapter_run, qa_file, tmp_path):
    result, _ = adapter_run
    shipped = tmp_path / "shipped"  # as packaged adapters ship: config and weights, no tokenizer files
    shipped.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        shutil.copy(result.out / name, shipped / name)
    second = train(str(shipped), qa_file, tmp_path / "second", max_steps=2, eval_size=2, **FAST | {"lr": 5e-3})
    assert json.loads((second.out / "adapter_config.json").read_text())["base_model_name_or_path"] == str(shipped)
    texts = ["I love my cat", "the lazy dog"]
    first_vectors = InBedder(str(shipped), max_length=64).encode(texts, "What animal?")
    stacked = InBedder(str(second.out), max_length=64).encode(texts, "What animal?")
    assert stacked.shape == first_vectors.shape and not np.allclose(stacked, first_vectors, atol=1e-4)


@pytest.mark.parametrize("number", ["SIGINT", "SIGTERM"])
def test_a_stop_signal_saves_the_step_in_hand_and_resume_goes_on(
    number, adapter_run, tiny_model_dir, qa_file, tmp_path, monkeypatch
):
    """Ctrl-C (SIGINT) or a scheduler's SIGTERM during a step lets it finish and saves it (no checkpoint
    was due); --resume then ends as the uninterrupted run did."""
    import os
    import signal

    sent = getattr(signal, number)
    handler = signal.getsignal(sent)
    from inbedder.errors import Interrupted
    from inbedder.training import trainer

    full, options = adapter_run
    step = trainer._Loop.step

    def interrupted_at_2(self, index):
        if index == 2:
            os.kill(os.getpid(), sent)  # arrives while the step runs
        return step(self, index)

    monkeypatch.setattr(trainer._Loop, "step", interrupted_at_2)
    out = tmp_path / "stopped"
    settings = options | {"save_every": 0}
    with pytest.raises(Interrupted, match=r"stopped after step 3 of 4, saved as checkpoint-3; .*--resume"):
        train(str(tiny_model_dir), qa_file, out, max_steps=4, eval_size=2, **settings)
    assert signal.getsignal(sent) is handler  # the handler is put back
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-3"]
    monkeypatch.setattr(trainer._Loop, "step", step)
    resumed = train(str(tiny_model_dir), qa_file, out, max_steps=4, eval_size=2, resume=True, **settings)
    assert resumed.details["resumed_from_step"] == 3
    np.testing.assert_allclose(resumed.train_losses, full.train_losses, rtol=1e-5)
    weights, expected = (load_file(str(d / "adapter_model.safetensors")) for d in (out, full.out))
    for name, tensor in expected.items():
        torch.testing.assert_close(weights[name], tensor, rtol=1e-5, atol=1e-6)
