"""A missing optional package is named in one line, with the extra that installs it."""

import subprocess
import sys

import pytest

from inbedder.extras import MissingExtra, require


def without(modules: list[str], code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter where importing ``modules`` fails, as if they were not installed."""
    block = "; ".join(f"sys.modules[{m!r}] = None" for m in modules)
    return subprocess.run([sys.executable, "-c", f"import sys; {block}; {code}"], capture_output=True, text=True)


def test_require_names_the_package_and_the_extra():
    require("cluster", "json")  # present: nothing happens
    with pytest.raises(
        MissingExtra, match=r"clustering needs the 'no_such_pkg' package.*pip install 'inbedder\[cluster\]'"
    ):
        require("cluster", "no_such_pkg")


@pytest.mark.parametrize(
    "modules, code, extra",
    [
        (["sklearn"], "import inbedder.clustering", "cluster"),
        (["scipy"], "from inbedder.eval import load_local", "eval"),
        (["datasets"], "from inbedder.training import train", "train"),
        (["sentence_transformers"], "from inbedder.reencoder import load_sentence_embedder as f; f()", "reencode"),
    ],
)
def test_each_optional_part_names_its_extra(modules, code, extra):
    done = without(modules, code)
    assert done.returncode != 0 and f"pip install 'inbedder[{extra}]'" in done.stderr.splitlines()[-1]


def test_encoding_needs_no_extra(tiny_model_dir):
    code = (
        f"from inbedder import InBedder; m = InBedder({str(tiny_model_dir)!r}, max_length=64); "
        "print(m.encode(['a cat'], 'What animal?').shape)"
    )
    done = without(["sklearn", "scipy", "datasets", "sentence_transformers"], code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(1, 32)"


def test_the_command_says_which_extra_in_one_line(tmp_path):
    corpus = tmp_path / "t.txt"
    corpus.write_text("a\nb\nc\n")
    args = ["cluster", str(corpus), "-i", "Why?", "--out", str(tmp_path / "o")]
    code = f"from inbedder.cli import main; sys.argv = ['inbedder', *{args!r}]; main()"
    done = without(["sklearn"], code)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "error: clustering needs the 'sklearn' package, which is not installed; "
        "install it with: pip install 'inbedder[cluster]'"
    )
