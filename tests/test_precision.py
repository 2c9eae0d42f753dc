"""bfloat16 where the CPU runs it natively: choosing the dtype, faithfulness to float32, the store, training."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from inbedder import InBedder, cli
from inbedder.loading import cpu_runs_bfloat16, default_dtype, load_language_model, resolve_dtype
from inbedder.model_settings import write_settings
from inbedder.training.trainer import training_dtype

TEXTS = [
    "I love my cat and my dog.",
    "The quick brown fox jumps over the lazy dog.",
    "What animal is mentioned here? A fox.",
    "Reviews, tweets, stories and poems.",
    "my dog",
    "The cat sat on the mat and would not move for anyone, not even for the dog.",
] * 3
QUESTION = "What animal is mentioned?"
CPU = torch.device("cpu")


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture
def native_bf16(monkeypatch: pytest.MonkeyPatch):
    """Sets what torch reports of the CPU's bfloat16 units (both probes alike); no dtype from the environment."""
    monkeypatch.delenv("INBEDDER_DTYPE", raising=False)

    def report(native: bool) -> None:
        for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
            monkeypatch.setattr(torch.cpu, probe, lambda: native)

    return report


# --- choosing the dtype ---------------------------------------------------------------------------------------


def test_auto_is_bfloat16_only_where_torch_reports_native_bf16(native_bf16):
    native_bf16(True)
    assert cpu_runs_bfloat16() and resolve_dtype("auto", CPU) == torch.bfloat16 == resolve_dtype(None, CPU)
    native_bf16(False)  # a CPU without AMX or AVX-512 BF16 keeps float32
    assert not cpu_runs_bfloat16() and resolve_dtype("auto", CPU) == torch.float32 == resolve_dtype(None, CPU)
    assert resolve_dtype("bfloat16", CPU) == torch.bfloat16  # asked for by name: given, whatever the CPU


@pytest.mark.parametrize("choose", [resolve_dtype, training_dtype], ids=["inference", "training"])
def test_bfloat16_by_name_on_a_cpu_that_emulates_it_is_warned_of_once(native_bf16, caplog, choose):
    from inbedder import loading

    loading._warn_emulated_bfloat16.cache_clear()
    native_bf16(True)
    with caplog.at_level("WARNING", logger="inbedder.loading"):
        assert choose("bfloat16", CPU) == torch.bfloat16
        native_bf16(False)
        assert choose("float32", CPU) == torch.float32 and choose("auto", CPU) == torch.float32
        assert not caplog.records  # native bfloat16, float32 and auto: nothing to say
        assert choose("bfloat16", CPU) == choose("bfloat16", CPU) == torch.bfloat16
    assert len(caplog.records) == 1
    assert "bfloat16 on this CPU is emulated" in caplog.text and "--dtype auto" in caplog.text


def test_a_model_without_native_bf16_loads_in_float32(native_bf16, tiny_model_dir):
    native_bf16(False)
    model = InBedder(str(tiny_model_dir))
    assert model.dtype == torch.float32
    assert {p.dtype for p in model.backend.model.parameters()} == {torch.float32}
    native_bf16(True)
    model = InBedder(str(tiny_model_dir))
    assert model.dtype == torch.bfloat16
    assert {p.dtype for p in model.backend.layers.parameters()} == {torch.bfloat16}
    # the residual stream's ends stay float32: the embeddings and the LM head
    lm = model.backend.model
    assert lm.get_input_embeddings().weight.dtype == lm.get_output_embeddings().weight.dtype == torch.float32


def test_the_residual_stream_is_float32_and_the_blocks_compute_in_bfloat16(tiny_model_dir):
    model = InBedder(str(tiny_model_dir), dtype="bfloat16", max_length=64)
    seen: dict[str, torch.dtype] = {}
    layer = model.backend.layers[1]

    def record(name: str):
        def hook(_module: torch.nn.Module, args: tuple) -> None:
            seen.setdefault(name, args[0].dtype)

        return hook

    hooks = [
        layer.register_forward_pre_hook(record("stream")),
        layer.self_attn.q_proj.register_forward_pre_hook(record("matmul")),
    ]
    try:
        model.encode(TEXTS[:2], QUESTION, readout="fst_gen")
    finally:
        for hook in hooks:
            hook.remove()
    assert seen == {"stream": torch.float32, "matmul": torch.bfloat16}


def test_the_argument_wins_over_the_environment_which_wins_over_the_model_setting(
    native_bf16, tiny_model_dir, tmp_path, monkeypatch
):
    native_bf16(True)
    directory = Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))
    write_settings(directory, dtype="float32")
    assert InBedder(str(directory)).dtype == torch.float32  # the model's setting over auto
    monkeypatch.setenv("INBEDDER_DTYPE", "bfloat16")
    assert default_dtype("float32") == "bfloat16"
    assert InBedder(str(directory)).dtype == torch.bfloat16
    assert InBedder(str(directory), dtype="float32").dtype == torch.float32
    monkeypatch.setenv("INBEDDER_DTYPE", "fp8")
    with pytest.raises(ValueError, match="INBEDDER_DTYPE='fp8' is not a dtype"):
        InBedder(str(directory))


@pytest.mark.parametrize("command", ["encode", "cluster"])
def test_an_unknown_dtype_is_refused_by_the_cli_before_loading(command, tmp_path, monkeypatch, capsys):
    texts = tmp_path / "t.txt"
    texts.write_text("a cat\nthe dog\na fox\n")
    out = tmp_path / ("e.npy" if command == "encode" else "clusters")
    args = [command, texts, "-i", QUESTION, "-m", tmp_path / "no-such-model", "-o", out, "--dtype", "float33"]
    monkeypatch.setattr("sys.argv", ["inbedder", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2  # a usage error
    assert capsys.readouterr().err.strip() == (
        "error: unknown --dtype 'float33'; choose one of auto, float32, bfloat16, float16"
    )
    assert not out.exists()


def test_the_cli_encodes_in_the_dtype_it_is_given(tiny_model_dir, tmp_path):
    texts = tmp_path / "t.txt"
    texts.write_text("".join(t + "\n" for t in TEXTS[:6]))
    vectors = {}
    for dtype in ("float32", "bfloat16"):
        out = tmp_path / f"{dtype}.npy"
        args = ["encode", texts, "-i", QUESTION, "-m", tiny_model_dir, "-o", out, "--dtype", dtype, "--no-progress"]
        result = CliRunner().invoke(cli.app, [str(a) for a in args])
        assert result.exit_code == 0, result.output
        vectors[dtype] = np.load(out)
    expected = InBedder(str(tiny_model_dir), dtype="bfloat16").encode(TEXTS[:6], QUESTION)
    np.testing.assert_allclose(vectors["bfloat16"], expected, atol=1e-6)
    assert not np.array_equal(vectors["float32"], vectors["bfloat16"])
    assert cosines(vectors["float32"], vectors["bfloat16"]).min() >= 0.999


# --- faithfulness -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family_dir", ["tiny_model_dir", "bert_dir", "t5_dir"])
def test_bfloat16_states_follow_float32(family_dir, request):
    directory = str(request.getfixturevalue(family_dir))
    f32, b16 = (InBedder(directory, dtype=d, max_length=64) for d in ("float32", "bfloat16"))
    readout = "fst_gen" if f32.family != "masked" else "avg_gen"
    states = [m.encode(TEXTS, QUESTION, readout=readout, batch_size=16) for m in (f32, b16)]
    assert cosines(*states).min() >= 0.999
    heads = [m.encode(TEXTS, QUESTION, readout="fst_head", batch_size=16) for m in (f32, b16)]
    assert cosines(*heads).min() >= 0.999


def test_a_text_alone_and_in_a_batch_of_16_agree_in_bfloat16(tiny_model_dir):
    model = InBedder(str(tiny_model_dir), dtype="bfloat16", max_length=64)
    for readout in ("fst_gen", "fst_head"):
        batched = model.encode(TEXTS[:16], QUESTION, readout=readout, batch_size=16)
        alone = np.stack([model.encode(text, QUESTION, readout=readout) for text in TEXTS[:16]])
        assert cosines(alone, batched).min() >= 0.9999, readout


def test_the_lm_head_runs_in_float32_in_a_bfloat16_model(tiny_model_dir):
    model = InBedder(str(tiny_model_dir), dtype="bfloat16", max_length=64)
    states = model.encode(TEXTS[:4], QUESTION, readout="fst_gen")
    weight = model.backend.model.get_output_embeddings().weight.detach().float()
    expected = torch.softmax(torch.as_tensor(states) @ weight.T, dim=-1).sqrt()
    expected = expected / expected.norm(dim=-1, keepdim=True)
    heads = model.encode(TEXTS[:4], QUESTION, readout="fst_head")
    np.testing.assert_allclose(heads / np.linalg.norm(heads, axis=1, keepdims=True), expected.numpy(), atol=1e-6)


def test_the_store_keeps_float32_and_bfloat16_rows_apart(tiny_model_dir, tmp_path):
    store = tmp_path / "store.sqlite"
    b16 = InBedder(str(tiny_model_dir), dtype="bfloat16", max_length=64, cache=store)
    b16.encode(TEXTS, QUESTION)
    f32 = InBedder(str(tiny_model_dir), dtype="float32", max_length=64, cache=store)
    batches: list[list[int]] = []
    with f32.runner.watch(batches.append):
        from_store = f32.encode(TEXTS, QUESTION)
    assert sum(map(len, batches)) == len(set(TEXTS)), "float32 rows were served from the bfloat16 ones"
    fresh = InBedder(str(tiny_model_dir), dtype="float32", max_length=64).encode(TEXTS, QUESTION)
    np.testing.assert_allclose(from_store, fresh, atol=1e-5)  # float32 values, not bfloat16 ones
    batches.clear()
    with b16.runner.watch(batches.append):
        b16.encode(TEXTS, QUESTION)
    assert not batches  # its own rows are still there


# --- a model converted from GGUF --------------------------------------------------------------------------------


def test_a_stale_gguf_quantization_config_is_dropped_so_the_model_saves(tiny_model_dir, tmp_path):
    directory = Path(shutil.copytree(tiny_model_dir, tmp_path / "converted"))
    config = json.loads((directory / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "gguf", "gguf_file": "x.gguf", "dequantize": False}
    (directory / "config.json").write_text(json.dumps(config))
    _, model, _ = load_language_model(str(directory))
    assert getattr(model.config, "quantization_config", None) is None and not getattr(model, "is_quantized", False)
    model.save_pretrained(tmp_path / "saved")  # refused while the GGUF quantizer is attached
    assert (tmp_path / "saved" / "model.safetensors").is_file()


# --- training ---------------------------------------------------------------------------------------------------


def test_bfloat16_training_keeps_weights_and_optimizer_state_in_float32(tiny_model_dir, tmp_path):
    from inbedder.training import train

    records = [{"context": f"The quick brown {a} jumps.", "question": "What animal?", "answer": a} for a in TEXTS]
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    options = {"batch_size": 4, "max_length": 64, "progress": False, "max_steps": 3, "eval_size": 2, "lr": 5e-3}
    runs = {
        d: train(str(tiny_model_dir), data, tmp_path / d, dtype=d, save_every=2, **options)
        for d in ("float32", "bfloat16")
    }
    for dtype, run in runs.items():
        assert run.details["compute_dtype"] == dtype
        assert all(np.isfinite(run.train_losses)) and np.isfinite(run.eval_loss)
    from safetensors.torch import load_file

    weights = load_file(str(tmp_path / "bfloat16" / "adapter_model.safetensors"))
    assert weights and {t.dtype for t in weights.values()} == {torch.float32}
    state = load_file(str(tmp_path / "bfloat16" / "checkpoint-2" / "trainer_state.safetensors"))
    moments = [t for name, t in state.items() if name.startswith("optimizer.") and t.ndim]
    assert moments and {t.dtype for t in moments} == {torch.float32}
    # the same start and data: the first step's loss differs only by bf16 rounding
    first = [run.train_losses[0] for run in runs.values()]
    assert abs(first[0] - first[1]) < 0.02 * first[0]
    with pytest.raises(ValueError, match="dtype must be one of auto, float32, bfloat16, got 'float16'"):
        train(str(tiny_model_dir), data, tmp_path / "bad", dtype="float16", **options)
