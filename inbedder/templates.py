"""Prompt patterns, and tokenization that shortens the input and never the question.

A pattern is a string with ``{input}`` and usually ``{instruction}``; any other
``{name}`` is a per-text field (``{{`` and ``}}`` stand for literal braces).
Each piece of the pattern is tokenized on its own and the pieces are joined, so
that truncation can cut the input alone and leave the instruction and the
response cue whole. A masked LM's answer slots (its mask tokens) follow the prompt,
before the tokenizer's closing special tokens, and count toward the length.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any

from transformers import PreTrainedTokenizerBase

from inbedder.errors import InputError

QA_PATTERN = "### Input:\n{input}\n\n### Instruction:\n{instruction}\n\n### Response:"
"""The short-answer QA pattern InBedders are trained with (the default)."""

NAMED_TEMPLATES = ("qa", "chat")

_INPUT = "input"
_INSTRUCTION = "instruction"


def _parse(pattern: str) -> list[tuple[str, str | None]]:
    """Split ``pattern`` into (literal text, field name or None) pairs, naming bad fields."""
    try:
        parts = [(literal, field) for literal, field, _, _ in string.Formatter().parse(pattern)]
    except ValueError as err:
        raise InputError(f"cannot parse template {pattern!r}: {err}") from None
    for _, field in parts:
        if field is not None and not field.isidentifier():
            raise InputError(
                f"template {pattern!r} has the placeholder {{{field}}}; placeholders must be "
                "plain names such as {input}, {instruction} or {head}"
            )
    return parts


def _shown(value: str, limit: int = 60) -> str:
    shown = repr(value)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def check_unicode(text: str, name: str) -> None:
    """Refuse a string that is not text: one holding a lone surrogate (from a bad decode), which no
    tokenizer can read."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise InputError(
            f"{name} holds {text[err.start]!r} at position {err.start}, half of a surrogate pair and not text; "
            "decode the input as UTF-8 (errors='replace' keeps the rest)"
        ) from None


def one_per_text(value: Any, n: int, name: str = "instruction") -> list[str | None]:
    """One value (a string or None) for every text, or a list with exactly one per text, checked."""
    if value is None or isinstance(value, str):
        if value is not None:
            check_unicode(value, name)
        return [value] * n
    values = list(value)
    if len(values) != n:
        raise InputError(f"{name} has {len(values)} entries for {n} texts; give one {name} or one per text")
    for i, item in enumerate(values):
        if item is not None and not isinstance(item, str):
            raise TypeError(f"{name}[{i}] is {item!r} ({type(item).__name__}); expected a string or None")
    first = {item: i for i, item in reversed(list(enumerate(values))) if item is not None}  # each distinct one once
    for item, i in first.items():
        check_unicode(item, f"{name}[{i}]")
    return values


def fill_fields(text: str, fields: Mapping[str, str]) -> str:
    """Fill ``{name}`` placeholders in an instruction from one record's fields."""
    out = []
    for literal, field in _parse(text):
        out.append(literal)
        if field is not None:
            if field not in fields:
                raise InputError(f"instruction {text!r} needs the field {field!r}; fields given: {sorted(fields)}")
            out.append(str(fields[field]))
    return "".join(out)


@dataclass(frozen=True)
class PromptTemplate:
    """A prompt pattern ending where the answer begins."""

    pattern: str = QA_PATTERN

    def __post_init__(self) -> None:
        names = [field for _, field in _parse(self.pattern) if field is not None]
        if _INPUT not in names:
            raise InputError(f"template {self.pattern!r} has no {{input}} placeholder")
        if names.count(_INPUT) > 1 or names.count(_INSTRUCTION) > 1:
            raise InputError(f"template {self.pattern!r} repeats {{input}} or {{instruction}}")

    @cached_property
    def segments(self) -> tuple[tuple[str, str | None], ...]:
        return tuple(_parse(self.pattern))

    @property
    def asks(self) -> bool:
        """Whether the pattern has a place for the instruction."""
        return any(field == _INSTRUCTION for _, field in self.segments)

    @property
    def fields(self) -> frozenset[str]:
        """Per-text placeholders besides ``{input}`` and ``{instruction}``."""
        return frozenset(f for _, f in self.segments if f not in (None, _INPUT, _INSTRUCTION))

    @classmethod
    def from_spec(cls, spec: str | PromptTemplate, tokenizer: PreTrainedTokenizerBase) -> PromptTemplate:
        """``"qa"``, ``"chat"`` (the tokenizer's chat template), or a custom pattern."""
        if isinstance(spec, PromptTemplate):
            return spec
        if spec == "qa":
            return cls(QA_PATTERN)
        if spec == "chat":
            return cls(chat_pattern(tokenizer))
        if isinstance(spec, str) and "{input}" in spec:
            return cls(spec)
        raise InputError(f"unknown template {spec!r}: use 'qa', 'chat', or a pattern containing {{input}}")


def chat_pattern(tokenizer: PreTrainedTokenizerBase) -> str:
    """The tokenizer's chat template as a pattern: one user turn holding input and instruction."""
    if not getattr(tokenizer, "chat_template", None):
        raise InputError("this model's tokenizer has no chat template; use template='qa'")
    marks = {_INPUT: "\x00INPUT\x00", _INSTRUCTION: "\x00INSTRUCTION\x00"}
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": f"{marks[_INPUT]}\n\n{marks[_INSTRUCTION]}"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    escaped = rendered.replace("{", "{{").replace("}", "}}")
    for name, mark in marks.items():
        escaped = escaped.replace(mark, "{" + name + "}")
    return escaped


class PromptTokenizer:
    """Turns (text, instruction, fields) into token ids of at most ``max_length``.

    ``answer`` ids (a masked LM's mask slots) go after every prompt, before the closing
    special tokens: ``[CLS] prompt [MASK] [MASK] [SEP]``; only the input is cut to make room.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_length: int, answer: tuple[int, ...] = ()) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.answer = tuple(answer)
        self.prefix, self.suffix = special_tokens_around(tokenizer)
        self._tokenize_literal = lru_cache(maxsize=256)(self._tokenize)

    def _tokenize(self, text: str) -> tuple[int, ...]:
        return tuple(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def __call__(
        self,
        text: str,
        instruction: str | None,
        template: PromptTemplate | None,
        fields: Mapping[str, str] | None = None,
    ) -> list[int]:
        """Token ids for one prompt; with no instruction, the raw text alone."""
        fields = fields or {}
        budget = self.max_length - len(self.prefix) - len(self.answer) - len(self.suffix)
        if instruction is None or template is None:
            return [*self.prefix, *self._tokenize(text)[: max(budget, 0)], *self.answer, *self.suffix]
        if not template.asks:
            raise InputError(
                f"template {template.pattern!r} has no {{instruction}} placeholder, so the instruction "
                f"{_shown(instruction)} would be dropped; add {{instruction}} to the template, or give no instruction"
            )

        pieces: list[tuple[int, ...]] = []
        input_index = -1
        for literal, field in template.segments:
            if literal:
                pieces.append(self._tokenize_literal(literal))
            if field == _INPUT:
                input_index = len(pieces)
                pieces.append(())
            elif field == _INSTRUCTION:
                pieces.append(self._tokenize(fill_fields(instruction, fields) if fields else instruction))
            elif field is not None:
                if field not in fields:
                    raise InputError(f"template needs the field {field!r}; fields given: {sorted(fields)}")
                pieces.append(self._tokenize(str(fields[field])))
        room = budget - sum(len(p) for p in pieces)
        if room < 1:
            raise InputError(
                f"the prompt without its input is {budget - room} tokens, leaving no room for the "
                f"input within max_length={self.max_length}; shorten the instruction or raise max_length"
            )
        pieces[input_index] = self._tokenize(text)[:room]
        ids = [i for piece in pieces for i in piece]
        prefix = () if tuple(ids[: len(self.prefix)]) == self.prefix else self.prefix  # a chat template may hold BOS
        return [*prefix, *ids, *self.answer, *self.suffix]


def special_tokens_around(tokenizer: PreTrainedTokenizerBase) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The special tokens the tokenizer puts before and after a text (e.g. BOS, or [CLS] ... [SEP])."""
    probe = "hello"
    bare = tokenizer(probe, add_special_tokens=False)["input_ids"]
    full = tokenizer(probe)["input_ids"]
    for start in range(len(full) - len(bare) + 1):
        if full[start : start + len(bare)] == bare:
            return tuple(full[:start]), tuple(full[start + len(bare) :])
    return (), ()
