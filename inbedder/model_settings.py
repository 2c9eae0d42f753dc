"""The settings a model directory carries: how InBedder should prompt it and read it out.

``inbedder train`` writes ``inbedder.json`` beside the weights or adapter (the template it
trained with), and packaging a model can add the readout chosen for it, so that
``InBedder(path)`` embeds the way the model was meant to be used, as sentence-transformers
saves its modules' configs. Arguments given to ``InBedder`` still win over the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from inbedder.errors import InputError

SETTINGS_FILE = "inbedder.json"
KEYS = ("template", "readout", "layer", "postprocess", "mask_length", "max_length", "dtype", "prompts")
"""What the file may set: the ``InBedder`` arguments of the same names."""
DTYPES = ("auto", "float32", "bfloat16", "float16")
"""The dtypes ``InBedder(dtype=...)``, ``--dtype`` and the file may name."""


def read_settings(directory: str | Path) -> dict[str, Any]:
    """The settings saved in ``directory`` (empty when it has none, or is a hub id); unknown keys refused."""
    path = Path(directory) / SETTINGS_FILE
    if not path.is_file():
        return {}
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read the model settings in {path}: {err}") from err
    if not isinstance(saved, dict):
        raise InputError(f"{path} must hold a JSON object of settings, got {type(saved).__name__}")
    unknown = sorted(set(saved) - set(KEYS))
    if unknown:
        raise InputError(f"{path} has unknown settings {unknown}; it may set {list(KEYS)}")
    return saved


def write_settings(directory: str | Path, **settings: Any) -> Path:
    """Save ``settings`` (only those not None) into ``directory``, over any saved before."""
    unknown = sorted(set(settings) - set(KEYS))
    if unknown:
        raise InputError(f"unknown model settings {unknown}; a model directory may set {list(KEYS)}")
    path = Path(directory) / SETTINGS_FILE
    merged = read_settings(directory) | {k: v for k, v in settings.items() if v is not None}
    if merged or path.exists():  # nothing to say: no file
        path.write_text(json.dumps(merged, indent=2) + "\n")
    return path
