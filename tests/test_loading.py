"""Loading a model prints nothing of transformers' own, and leaves the user's progress-bar setting as it was."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers.utils import logging as transformers_logging

from inbedder.loading import load_language_model


@pytest.mark.parametrize("enabled", [True, False])
def test_load_prints_no_progress_bar_and_restores_the_setting(
    tiny_model_dir: Path, capfd: pytest.CaptureFixture[str], enabled: bool
) -> None:
    (transformers_logging.enable_progress_bar if enabled else transformers_logging.disable_progress_bar)()
    try:
        _, model, family = load_language_model(str(tiny_model_dir))
        assert family == "causal" and model is not None
        assert "Loading weights" not in capfd.readouterr().err
        assert transformers_logging.is_progress_bar_enabled() is enabled
    finally:
        transformers_logging.enable_progress_bar()


def test_the_setting_is_restored_when_loading_fails(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A folder with the config and tokenizer but no weights fails inside the quiet part of the load."""
    for item in tiny_model_dir.iterdir():
        if item.suffix != ".safetensors":
            (tmp_path / item.name).write_bytes(item.read_bytes())
    transformers_logging.enable_progress_bar()
    with pytest.raises(OSError, match="could not load model"):
        load_language_model(str(tmp_path))
    assert transformers_logging.is_progress_bar_enabled()


def test_a_sentence_embedder_loads_without_a_progress_bar(capfd: pytest.CaptureFixture[str]) -> None:
    from inbedder.reencoder import load_sentence_embedder

    transformers_logging.enable_progress_bar()
    model = load_sentence_embedder()
    assert model.encode(["one text"]).shape == (1, 384)
    assert "Loading weights" not in capfd.readouterr().err
    assert transformers_logging.is_progress_bar_enabled()
