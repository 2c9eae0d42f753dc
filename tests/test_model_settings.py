"""A model directory carries its settings (inbedder.json): InBedder reads them, explicit arguments win."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from inbedder import InBedder
from inbedder.model_settings import SETTINGS_FILE, read_settings, write_settings
from inbedder.templates import QA_PATTERN, PromptTemplate
from inbedder.training import train

RECORDS = [
    {"context": f"The {a} sat on mat {i}.", "question": "What animal?", "answer": a}
    for i, a in enumerate(["cat", "dog", "fox", "cat"])
]


@pytest.fixture()
def model_copy(tiny_model_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))


def test_saved_settings_become_the_defaults_and_arguments_win(model_copy):
    write_settings(model_copy, template="Q: {instruction}\nText: {input}\nA:", readout="avg_ppt", layer=1)
    write_settings(model_copy, postprocess="center")  # merges with what is there
    assert read_settings(model_copy) == {
        "template": "Q: {instruction}\nText: {input}\nA:",
        "readout": "avg_ppt",
        "layer": 1,
        "postprocess": "center",
    }
    saved = InBedder(str(model_copy), max_length=64)
    assert saved.template.pattern == "Q: {instruction}\nText: {input}\nA:"
    assert (saved.readout.name, saved.readout.layer, saved.postprocess) == ("avg_ppt", 1, "center")
    given = InBedder(str(model_copy), max_length=64, template="qa", readout="fst_gen", layer=-1, postprocess="none")
    assert given.template.pattern == QA_PATTERN
    assert (given.readout.name, given.readout.layer, given.postprocess) == ("fst_gen", -1, "none")


def test_a_directory_without_settings_gets_the_built_in_defaults(tiny_model_dir):
    model = InBedder(str(tiny_model_dir), max_length=64)
    assert model.template.pattern == QA_PATTERN and model.readout.layer == -1 and model.postprocess == "none"


def test_bad_settings_files_are_refused_by_name(model_copy):
    (model_copy / SETTINGS_FILE).write_text(json.dumps({"readout": "fst_gen", "colour": "blue"}))
    with pytest.raises(ValueError, match=r"inbedder.json has unknown settings \['colour'\]"):
        InBedder(str(model_copy))
    (model_copy / SETTINGS_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="cannot read the model settings in .*inbedder.json"):
        read_settings(model_copy)
    with pytest.raises(ValueError, match=r"unknown model settings \['readuot'\]"):
        write_settings(model_copy, readuot="fst_gen")


def test_a_model_trained_with_the_chat_template_is_read_out_with_it(tiny_model_dir, tmp_path):
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    out = tmp_path / "chat-run"
    train(
        str(tiny_model_dir),
        data,
        out,
        template="chat",
        max_steps=1,
        batch_size=2,
        max_length=64,
        eval_size=0,
        progress=False,
        save_every=0,
    )
    assert read_settings(out) == {"template": "chat"}
    trained = InBedder(str(out), max_length=64)
    assert trained.template == PromptTemplate.from_spec("chat", trained.tokenizer) != PromptTemplate()
    assert InBedder(str(out), max_length=64, template="qa").template.pattern == QA_PATTERN
