"""Checks that need no model weights: what ``InBedder`` and ``encode`` would refuse, refused first.

``check_settings`` reads a model's config (no weights) to refuse a readout, layer, post-processing,
length or truncation before loading takes seconds to minutes; ``InBedder.check(options)`` refuses
what needs the loaded model. The CLI, Ray and the server call these instead of their own copies.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from inbedder import models
from inbedder.errors import InputError
from inbedder.loading import load_tokenizer, read_config
from inbedder.model_settings import read_settings
from inbedder.options import Fields
from inbedder.postprocess import check_postprocess
from inbedder.readout import Readout, check_readout_name
from inbedder.templates import PromptTemplate, PromptTokenizer, check_unicode

DEFAULT_MAX_LENGTH = 512
"""The longest prompt in tokens, unless the model allows fewer or the user asks otherwise."""


def check_truncation(spec: Readout, truncate_dim: int | None) -> None:
    """Refuse a ``truncate_dim`` the readout cannot honour: only a projected head's prefix is a smaller projection."""
    if truncate_dim is None:
        return
    size = spec.kind.prefix_dim
    if size is None:
        raise InputError(
            f"truncate_dim applies to readouts whose first numbers stand for the whole (fst_head_rp), "
            f"not to {spec.name!r}: its numbers have no such order"
        )
    if truncate_dim > size:
        raise InputError(f"truncate_dim={truncate_dim} is more than readout {spec.name!r} gives ({size} numbers)")


CHARS_PER_TOKEN = 16
"""More characters than a token of any tokenizer here covers on average: ``prompt_tokens`` reads this many a token."""


def check_instructions_fit(
    model_name_or_path: str | None,
    instructions: Sequence[str | None],
    *,
    template: str | None = None,
    max_length: int | None = None,
    trust_remote_code: bool = False,
) -> None:
    """Refuse, with the tokenizer and config alone (no weights), an instruction that leaves a prompt no
    room for its text: what ``encode`` would refuse only after the model has loaded."""
    source = models.resolve(model_name_or_path or models.DEFAULT_MODEL)
    saved = read_settings(source) if os.path.isdir(source) else {}
    tokenizer = load_tokenizer(source, trust_remote_code)
    limit = getattr(read_config(source, trust_remote_code), "max_position_embeddings", None) or DEFAULT_MAX_LENGTH
    length = max_length or saved.get("max_length") or min(DEFAULT_MAX_LENGTH, limit)
    prompts = PromptTokenizer(tokenizer, length)
    chosen = PromptTemplate.from_spec(template or saved.get("template") or "qa", tokenizer)
    for instruction in dict.fromkeys(i for i in instructions if i is not None):
        prompts("x", instruction, chosen)


def check_settings(
    source: str | None,
    *,
    readout: str | None = None,
    layer: int | None = None,
    postprocess: str | None = None,
    max_length: int | None = None,
    truncate_dim: int | None = None,
    trust_remote_code: bool = False,
) -> None:
    """What can be refused from the config alone (``source``: a model's folder or file, as ``models.resolve``
    gives it; None: no config to read), refused before the weights load (seconds to minutes)."""
    if readout is not None:
        check_readout_name(readout)
    if postprocess is not None:
        check_postprocess(postprocess)
    if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1):
        raise InputError(f"max_length must be a positive number of tokens, got {max_length!r}")
    if readout is not None:
        check_truncation(Readout(readout), truncate_dim)
    if layer is not None and source is not None:
        try:
            config = read_config(source, trust_remote_code)
        except (OSError, ValueError):
            return  # the loading that follows names the problem with the model itself
        if not getattr(config, "is_encoder_decoder", False):  # an encoder-decoder's count depends on its backend
            Readout(readout or "fst_gen", layer).layer_index(config.num_hidden_layers)


def check_texts(sentences: Any) -> list[str]:
    """``sentences`` as a list of texts, each a non-empty string (one string is a list of one)."""
    return as_texts(sentences)[0]


def as_texts(sentences: Any) -> tuple[list[str], bool]:
    if isinstance(sentences, str):
        sentences, single = [sentences], True
    elif sentences is None or isinstance(sentences, (bytes, Mapping)) or not isinstance(sentences, Iterable):
        raise TypeError(f"sentences must be a string or a list of strings, got {type(sentences).__name__}")
    else:
        sentences, single = list(sentences), False
    for i, text in enumerate(sentences):
        if not isinstance(text, str):
            raise TypeError(f"sentences[{i}] is {text!r} ({type(text).__name__}); every text must be a string")
        if not text.strip():
            raise InputError(f"sentences[{i}] is empty; every text must have some content")
        check_unicode(text, f"sentences[{i}]")
    return sentences, single


def per_text_fields(fields: Fields | None, n: int) -> list[dict[str, str]]:
    if fields is None:
        return [{}] * n
    if isinstance(fields, Mapping):
        for name, values in fields.items():
            if isinstance(values, str) or len(values) != n:
                raise InputError(f"fields[{name!r}] must hold one value per text ({n})")
        return [{name: values[i] for name, values in fields.items()} for i in range(n)]
    records = [dict(record) for record in fields]
    if len(records) != n:
        raise InputError(f"fields has {len(records)} records for {n} texts")
    return records
