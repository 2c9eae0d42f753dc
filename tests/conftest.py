"""Tiny random models (Llama, BERT, RoBERTa, T5, BART) with tokenizers trained here: no network, seconds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    BartConfig,
    BartForConditionalGeneration,
    BertConfig,
    BertForMaskedLM,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    RobertaConfig,
    RobertaForMaskedLM,
    T5Config,
    T5ForConditionalGeneration,
)

# Most tests check vectors against float32 computations by hand, so models load in float32 unless a
# test asks for another dtype (tests/test_precision.py covers bfloat16 and "auto"). An environment
# variable, so that the processes tests start (the CLI, the server, Ray actors) load alike.
os.environ.setdefault("INBEDDER_DTYPE", "float32")

CORPUS = [
    "I love my cat and my dog.",
    "What animal is mentioned? How does the writer feel about it?",
    "### Input:\n### Instruction:\n### Response:",
    "The quick brown fox jumps over the lazy dog. Reviews, tweets, stories and poems.",
]


def build_tiny_llama(directory: Path, num_layers: int = 3) -> Path:
    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(CORPUS * 4, trainer)
    bpe.post_processor = processors.TemplateProcessing(  # a BOS before every text, as Llama does
        single="<s> $A", special_tokens=[("<s>", bpe.token_to_id("<s>"))]
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    tokenizer.chat_template = (
        "{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>\n{% endfor %}"
        "{% if add_generation_prompt %}<s>assistant\n{% endif %}"
    )
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory


def build_tiny_bert(directory: Path) -> Path:
    wordpiece = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wordpiece.normalizer = normalizers.BertNormalizer(lowercase=True)
    wordpiece.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    wordpiece.decoder = decoders.WordPiece()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    wordpiece.train_from_iterator(CORPUS * 4, trainers.WordPieceTrainer(vocab_size=200, special_tokens=special))
    wordpiece.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        special_tokens=[("[CLS]", wordpiece.token_to_id("[CLS]")), ("[SEP]", wordpiece.token_to_id("[SEP]"))],
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=wordpiece,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    BertForMaskedLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def build_tiny_t5(directory: Path) -> Path:
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.Metaspace()
    bpe.decoder = decoders.Metaspace()
    bpe.train_from_iterator(CORPUS * 4, trainers.BpeTrainer(vocab_size=200, special_tokens=["<pad>", "</s>", "<unk>"]))
    bpe.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", bpe.token_to_id("</s>"))]
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    T5ForConditionalGeneration(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def roberta_style_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE with RoBERTa's and BART's special tokens: <s> text </s>, <pad> = 1, <mask>."""
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(CORPUS * 4, trainer)
    bpe.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", bpe.token_to_id("<s>")), ("</s>", bpe.token_to_id("</s>"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
    )


def build_tiny_roberta(directory: Path) -> Path:
    """Position ids start after the padding index, so 130 position embeddings hold 128 tokens."""
    tokenizer = roberta_style_tokenizer()
    config = RobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=130,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    RobertaForMaskedLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def build_tiny_bart(directory: Path) -> Path:
    """A deeper encoder (3 layers) than decoder (2), to exercise reading both stacks at one layer."""
    tokenizer = roberta_style_tokenizer()
    config = BartConfig(
        vocab_size=len(tokenizer),
        d_model=32,
        encoder_layers=3,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.eos_token_id,
        forced_eos_token_id=None,
        tie_word_embeddings=False,  # an untied head answers with varied tokens, not its input token again
    )
    torch.manual_seed(0)
    BartForConditionalGeneration(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def t5_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_t5(tmp_path_factory.mktemp("tiny-t5"))


@pytest.fixture(scope="session")
def roberta_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_roberta(tmp_path_factory.mktemp("tiny-roberta"))


@pytest.fixture(scope="session")
def bart_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bart(tmp_path_factory.mktemp("tiny-bart"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny(tiny_model_dir: Path):
    from inbedder import InBedder

    return InBedder(str(tiny_model_dir), max_length=64)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test gets its own INBEDDER_CACHE so nothing touches the user's cache."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("INBEDDER_CACHE", str(cache))
    return cache


ENCODE_OPTION_CASES: dict[str, dict] = {
    "batch_size": {"batch_size": 3},
    "show_progress_bar": {"show_progress_bar": False},
    "normalize_embeddings": {"normalize_embeddings": True},
    "convert_to_numpy": {"convert_to_numpy": False},
    "convert_to_tensor": {"convert_to_tensor": True},
    "readout": {"readout": "avg_ppt"},
    "layer": {"layer": 1},
    "template": {"template": "T: {input}\nQ: {instruction}\nA:"},
    "postprocess": {"postprocess": "center"},
    "fields": {"fields": {"kind": ["pet"] * 40}, "template": "T: {input} ({kind})\nQ: {instruction}\nA:"},
    "max_new_tokens": {"max_new_tokens": 3, "readout": "avg_gen"},
    "temperature": {"temperature": 0.8, "seed": 1, "readout": "avg_gen", "max_new_tokens": 3},
    "top_p": {"top_p": 0.5, "temperature": 0.8, "seed": 1, "readout": "avg_gen", "max_new_tokens": 3},
    "seed": {"seed": 5, "temperature": 0.8, "readout": "avg_gen", "max_new_tokens": 3},
    "num_samples": {"num_samples": 2, "temperature": 0.8, "seed": 1, "readout": "re_encode", "max_new_tokens": 3},
    "filter_words": {"filter_words": ["the"], "readout": "avg_gen", "max_new_tokens": 3},
    "truncate_dim": {"truncate_dim": 16, "readout": "fst_head_rp"},
    "return_generations": {"return_generations": True, "max_new_tokens": 3},
    "return_usage": {"return_usage": True},
    "cache": {"cache": "STORE"},  # each test puts a store of its own here
}
"""Every ``EncodeOptions`` field with a value that changes something (and what it needs beside it):
each engine must honour each one or refuse it by name (tests/test_distributed.py, tests/test_serve.py)."""
