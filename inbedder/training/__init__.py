"""Fine-tuning a language model into an InBedder: short-answer QA training (LoRA or full).

``train(base, data, out)`` writes to ``out`` a peft adapter (or, with ``merge=True`` or full
fine-tuning, a model directory) that ``InBedder(out)`` loads. See ``TrainingConfig`` for the options.
"""

from inbedder.extras import require

require("train", "datasets")

from inbedder.training.data import DEFAULT_HUB_DATA, Columns, QARecord, load_records, shuffle_split
from inbedder.training.encoding import IGNORE_INDEX, Collator, Example, QAEncoder
from inbedder.training.trainer import TrainingConfig, TrainingResult, evaluate, train

__all__ = [
    "DEFAULT_HUB_DATA",
    "IGNORE_INDEX",
    "Collator",
    "Columns",
    "Example",
    "QAEncoder",
    "QARecord",
    "TrainingConfig",
    "TrainingResult",
    "evaluate",
    "load_records",
    "shuffle_split",
    "train",
]
