"""Token ids and labels for one QA record, per model family, and a padding collator.

The prompt is built by the same ``PromptTokenizer`` that ``InBedder.encode`` uses, so a
model is trained on exactly the prompts it is later read out on. Only the context is ever
shortened: the question, the answer (up to ``max_answer_tokens``) and the special tokens
always survive.

- causal: prompt + answer + EOS; loss on the answer and EOS only.
- masked: prompt + one mask per answer token (+ the tokenizer's closing tokens, e.g. [SEP]);
  loss at the masks, whose targets are the answer's tokens.
- seq2seq: the prompt feeds the encoder; answer + EOS are the decoder's labels.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from functools import lru_cache

import torch
from transformers import PreTrainedTokenizerBase

from inbedder.backends import check_family
from inbedder.errors import InputError
from inbedder.templates import PromptTemplate, PromptTokenizer
from inbedder.training.data import QARecord

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100


@dataclass(frozen=True)
class Example:
    """One encoded record: the model's input ids and the labels (``IGNORE_INDEX`` where no loss)."""

    input_ids: list[int]
    labels: list[int]


class QAEncoder:
    """Encodes ``QARecord``s for a model family within ``max_length`` tokens."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        family: str,
        *,
        template: str | PromptTemplate = "qa",
        max_length: int = 512,
        max_answer_tokens: int = 32,
        answer_prefix: str = " ",
    ) -> None:
        if check_family(family) == "auto":
            raise InputError("QAEncoder takes a resolved family, not 'auto'")
        if max_answer_tokens < 1 or max_length <= max_answer_tokens:
            raise InputError(
                f"need 1 <= max_answer_tokens < max_length, got max_answer_tokens={max_answer_tokens}, "
                f"max_length={max_length}"
            )
        self.tokenizer = tokenizer
        self.family = family
        self.template = PromptTemplate.from_spec(template, tokenizer)
        self.max_length = max_length
        self.max_answer_tokens = max_answer_tokens
        self.answer_prefix = answer_prefix
        self.eos_id = tokenizer.eos_token_id
        self.mask_id = tokenizer.mask_token_id
        if family in ("causal", "seq2seq") and self.eos_id is None:
            raise InputError(f"the tokenizer has no EOS token, which {family} training appends to the answer")
        if family == "masked" and self.mask_id is None:
            raise InputError("the tokenizer has no mask token, which masked LM training needs")
        self._prompts = lru_cache(maxsize=None)(lambda budget: PromptTokenizer(tokenizer, budget))

    def __call__(self, record: QARecord) -> Example:
        """The record's ids and labels; a ValueError when the question alone leaves no room."""
        answer = self.tokenizer(self.answer_prefix + record.answer, add_special_tokens=False)["input_ids"]
        answer = answer[: self.max_answer_tokens]
        if self.family == "seq2seq":
            prompt = self._prompts(self.max_length)(record.context, record.question, self.template)
            return Example(prompt, [*answer, self.eos_id])
        target = [*answer, self.eos_id] if self.family == "causal" else answer
        prompts = self._prompts(self.max_length - len(target))
        prompt = prompts(record.context, record.question, self.template)
        if self.family == "causal":
            return Example([*prompt, *target], [IGNORE_INDEX] * len(prompt) + target)
        cut = len(prompt) - len(prompts.suffix)  # the masks go before the closing special tokens
        input_ids = [*prompt[:cut], *[self.mask_id] * len(answer), *prompt[cut:]]
        return Example(input_ids, [IGNORE_INDEX] * cut + answer + [IGNORE_INDEX] * (len(prompt) - cut))

    def encode_all(self, records: list[QARecord]) -> list[Example]:
        """All records encoded, leaving out (with a warning) those whose question alone is too long."""
        examples, errors = [], []
        for record in records:
            try:
                examples.append(self(record))
            except ValueError as err:
                errors.append(err)
        if errors and not examples:
            raise InputError(f"no record fits in max_length={self.max_length}: {errors[0]}")
        if errors:
            logger.warning("left out %d of %d records that do not fit: %s", len(errors), len(records), errors[0])
        return examples

    def lengths(self, records: list[QARecord]) -> list[int]:
        """The token length of each record that fits (prompt and answer, within ``max_length``)."""
        return [len(example.input_ids) for example in self.encode_all(records)]


def choose_max_length(lengths: list[int], quantile: float = 0.98, multiple: int = 8) -> int:
    """The length that covers ``quantile`` of ``lengths`` untouched, rounded up to a multiple of ``multiple``."""
    if not lengths:
        raise InputError("cannot choose max_length from no records")
    ordered = sorted(lengths)
    covered = ordered[min(len(ordered) - 1, math.ceil(quantile * len(ordered)) - 1)]
    return multiple * math.ceil(covered / multiple)


@dataclass(frozen=True)
class Collator:
    """Right-pads a list of ``Example``s into a batch of tensors (labels padded with ``IGNORE_INDEX``).

    ``multiple``: the batch's width is rounded up to a multiple of it, so batches come in a few
    shapes. On a CPU, oneDNN keeps compiled kernels for every shape it meets; with one width per
    batch that cache grows for the whole run (BENCHMARKS.md, "Training v3").
    """

    pad_id: int
    multiple: int = 1

    def __call__(self, examples: list[Example]) -> dict[str, torch.Tensor]:
        width = self.multiple * math.ceil(max(len(e.input_ids) for e in examples) / self.multiple)
        return {
            "input_ids": _pad([e.input_ids for e in examples], self.pad_id, width),
            "attention_mask": _pad([[1] * len(e.input_ids) for e in examples], 0, width),
            "labels": _pad([e.labels for e in examples], IGNORE_INDEX, width),
        }


def _pad(rows: list[list[int]], value: int, width: int) -> torch.Tensor:
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return out


def pad_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The padding id: the tokenizer's pad token, else EOS, else 0 (masked out either way)."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return candidate
    return 0
