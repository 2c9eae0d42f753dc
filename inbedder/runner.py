"""The runner stage of ``encode``: prompts' token ids through a backend, in batches.

Batches are sorted by length and bounded by a count and a token budget; when several
instructions share a prompt prefix (``encode_multi`` with the QA template), each text's
prefix runs once and its key/value cache serves every instruction. ``watch`` lets a caller
see every batch that reaches the model (tests count work with it; a progress display could).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import cast

import torch

from inbedder.backends.base import AnswerStates, Backend, GenerationSettings, SharedPrefixBackend
from inbedder.errors import check_positive_int

Prompts = list[list[list[int]]]
"""Token ids per instruction, per text."""


@dataclass(frozen=True)
class Plan:
    """What to run: the prompts, how many leading tokens each text's prompts share, and the batches."""

    prompts: Prompts
    shared: list[int]
    batches: list[list[int]]


class Runner:
    """Runs batches of prompts through ``backend``: at most ``max_batch_tokens`` padded tokens a pass, if set,
    each batch padded to a multiple of ``pad_multiple`` tokens (few widths, so few shapes: a long-running
    process keeps a bounded set of compiled CPU kernels)."""

    def __init__(self, backend: Backend, max_batch_tokens: int | None = None, pad_multiple: int = 1) -> None:
        self.backend = backend
        self.max_batch_tokens = max_batch_tokens
        check_positive_int("pad_multiple", pad_multiple)
        self.pad_multiple = pad_multiple
        self._watchers: list[Callable[[list[int]], None]] = []

    @property
    def max_batch_tokens(self) -> int | None:
        return self._max_batch_tokens

    @max_batch_tokens.setter
    def max_batch_tokens(self, value: int | None) -> None:
        check_positive_int("max_batch_tokens", value, optional=True)
        self._max_batch_tokens = value

    @contextlib.contextmanager
    def watch(self, callback: Callable[[list[int]], None]) -> Iterator[None]:
        """Call ``callback(batch)`` with the text indices of every batch run inside the block."""
        self._watchers.append(callback)
        try:
            yield
        finally:
            self._watchers.remove(callback)

    def plan(self, prompts: Prompts, todo: list[int], batch_size: int) -> Plan:
        """Batches of the texts in ``todo``, longest first; a batch's cost is its widest pass
        (the shared prefix when there is one, else the whole prompt)."""
        shared_ok = len(prompts) > 1 and self.backend.shares_prefixes
        shared = shared_prefix_lengths(prompts) if shared_ok else [0] * len(prompts[0])
        widths = [
            -(-(shared[i] or max(len(p[i]) for p in prompts)) // self.pad_multiple) * self.pad_multiple for i in todo
        ]
        batches = [[todo[j] for j in b] for b in length_sorted_batches(widths, batch_size, self.max_batch_tokens)]
        return Plan(prompts, shared, batches)

    def run(self, plan: Plan, batch: list[int], layer: int, settings: GenerationSettings | None) -> list[AnswerStates]:
        """The states of one batch of texts at ``layer``, one ``AnswerStates`` per instruction
        (a single pass, or a generation given ``settings``)."""
        for callback in self._watchers:
            callback(batch)
        if plan.shared[batch[0]]:
            return self._run_shared_prefix(plan, batch, layer, settings)
        runs = []
        for per_text in plan.prompts:
            input_ids, mask = self.backend.pad([per_text[i] for i in batch], self.pad_multiple)
            if settings is None:
                runs.append(self.backend.forward(input_ids, mask, layer))
            else:
                runs.append(self.backend.generate(input_ids, mask, layer, settings))
        return runs

    def _run_shared_prefix(
        self, plan: Plan, batch: list[int], layer: int, settings: GenerationSettings | None
    ) -> list[AnswerStates]:
        """The first ``shared[i]`` tokens of text i's prompts, the same under every instruction,
        run once; their key/value cache, repeated once per instruction, serves one pass (or one
        generation, given ``settings``) over all the instructions' remaining tokens. Causal LMs only.
        """
        backend, prompts, shared = cast(SharedPrefixBackend, self.backend), plan.prompts, plan.shared
        copies = len(prompts)
        prefix_ids, prefix_mask = backend.pad([prompts[0][i][: shared[i]] for i in batch], self.pad_multiple)
        past = backend.new_past()
        # generation reads every layer of the key/value cache, so the prefix then runs through the whole model
        prefix_states = backend.forward_states(prefix_ids, prefix_mask, layer, past, to_end=settings is not None)
        past.batch_repeat_interleave(copies)  # rows: text 0 under each instruction, then text 1, ...
        input_ids, mask = backend.pad(
            [per_text[i][shared[i] :] for i in batch for per_text in prompts], self.pad_multiple
        )
        full_mask = torch.cat([prefix_mask.repeat_interleave(copies, dim=0), mask], dim=1)
        prefix_states = prefix_states.repeat_interleave(copies, dim=0)
        if settings is None:
            states = torch.cat([prefix_states, backend.forward_states(input_ids, full_mask, layer, past)], dim=1)
            gen = backend.single_pass(states, full_mask)
        else:
            full_ids = torch.cat([prefix_ids.repeat_interleave(copies, dim=0), input_ids], dim=1)
            gen = backend.generate(full_ids, full_mask, layer, settings, past)
            gen = replace(gen, prompt_states=torch.cat([prefix_states, gen.prompt_states], dim=1))
        return [gen.rows(slice(k, None, copies)) for k in range(copies)]


def shared_prefix_lengths(prompts: Prompts) -> list[int]:
    """Per text, how many leading tokens all its prompts share (leaving each at least one token).

    All zero when some text shares nothing, so that no batch needs a prefix pass for only some rows.
    """
    lengths = []
    for variants in zip(*prompts):
        shortest = min(len(v) for v in variants)
        length = next((j for j in range(shortest) if len({v[j] for v in variants}) > 1), shortest)
        lengths.append(min(length, shortest - 1))
    return lengths if all(lengths) else [0] * len(lengths)


def length_sorted_batches(widths: list[int], batch_size: int, max_tokens: int | None) -> list[list[int]]:
    """Indices grouped longest first: at most ``batch_size`` texts and ``max_tokens`` padded tokens a batch."""
    order = sorted(range(len(widths)), key=lambda i: -widths[i])
    batches: list[list[int]] = []
    for i in order:
        batch = batches[-1] if batches else None
        # the first (longest) text of a batch sets its padded width
        if (
            batch is None
            or len(batch) == batch_size
            or (max_tokens and (len(batch) + 1) * widths[batch[0]] > max_tokens)
        ):
            batches.append([i])
        else:
            batch.append(i)
    return batches
