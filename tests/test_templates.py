import pytest

from inbedder.errors import InputError
from inbedder.templates import QA_PATTERN, PromptTemplate, PromptTokenizer, chat_pattern, fill_fields


@pytest.fixture(scope="module")
def tokenizer(tiny):
    return tiny.tokenizer


def decode(tokenizer, ids):
    return tokenizer.decode(ids, skip_special_tokens=False)


def test_qa_prompt_equals_rendered_pattern(tokenizer):
    prompts = PromptTokenizer(tokenizer, max_length=200)
    ids = prompts("I love my cat", "What animal?", PromptTemplate())
    rendered = QA_PATTERN.format(input="I love my cat", instruction="What animal?")
    assert ids == tokenizer(rendered)["input_ids"]  # same tokens as tokenizing the whole prompt
    assert ids[0] == tokenizer.bos_token_id


def test_truncation_cuts_the_input_only(tokenizer):
    prompts = PromptTokenizer(tokenizer, max_length=60)
    long_text = "The quick brown fox jumps over the lazy dog. " * 20
    ids = prompts(long_text, "What animal is mentioned?", PromptTemplate())
    assert len(ids) == 60
    text = decode(tokenizer, ids)
    assert text.startswith("<s>### Input:\nThe quick brown fox")
    assert text.endswith("\n\n### Instruction:\nWhat animal is mentioned?\n\n### Response:")


def test_raw_text_without_instruction_is_truncated_to_max_length(tokenizer):
    prompts = PromptTokenizer(tokenizer, max_length=10)
    assert prompts("I love my cat", None, PromptTemplate()) == tokenizer("I love my cat")["input_ids"]
    assert len(prompts("I love my cat and my dog. " * 5, None, PromptTemplate())) == 10


def test_instruction_longer_than_max_length_is_an_error(tokenizer):
    prompts = PromptTokenizer(tokenizer, max_length=12)
    with pytest.raises(ValueError, match="max_length=12"):
        prompts("cat", "How does the writer feel about the animal that is mentioned?", PromptTemplate())


def test_custom_pattern_with_fields(tokenizer):
    template = PromptTemplate("Text: {input}\nAbout {head}: {instruction}\nAnswer:")
    assert template.fields == {"head"}
    prompts = PromptTokenizer(tokenizer, max_length=100)
    ids = prompts("I love my cat", "how is {head} seen?", template, {"head": "cat"})
    assert decode(tokenizer, ids) == "<s>Text: I love my cat\nAbout cat: how is cat seen?\nAnswer:"
    with pytest.raises(ValueError, match="field 'head'"):
        prompts("I love my cat", "what?", template, {})


def test_fill_fields_names_the_missing_field():
    assert fill_fields("relation of {head} to {tail}?", {"head": "A", "tail": "B"}) == "relation of A to B?"
    with pytest.raises(ValueError, match="'tail'"):
        fill_fields("relation of {head} to {tail}?", {"head": "A"})


def test_chat_template_becomes_a_pattern(tokenizer):
    pattern = chat_pattern(tokenizer)
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "I love my cat\n\nWhat animal?"}], tokenize=False, add_generation_prompt=True
    )
    assert PromptTemplate(pattern).pattern.format(input="I love my cat", instruction="What animal?") == rendered


@pytest.mark.parametrize(
    "spec, message",
    [("fancy", "unknown template 'fancy'"), ("no input {instruction}", "unknown template")],
)
def test_bad_template_specs(tokenizer, spec, message):
    with pytest.raises(ValueError, match=message):
        PromptTemplate.from_spec(spec, tokenizer)


@pytest.mark.parametrize(
    "pattern, message",
    [("{instruction} only", "no {input}"), ("{input} {input}", "repeats"), ("{input} {0}", "plain names")],
)
def test_bad_patterns(pattern, message):
    with pytest.raises(ValueError, match=message):
        PromptTemplate(pattern)


def test_a_template_without_an_instruction_refuses_one(tiny_model_dir):
    """Case 10 of the reliability probe: the question must not be dropped silently."""
    from inbedder.validation import check_instructions_fit

    with pytest.raises(InputError, match=r"template 'Review: \{input\}' has no \{instruction\} placeholder, so the "
                       r"instruction 'Is it good\?' would be dropped"):  # fmt: skip
        check_instructions_fit(str(tiny_model_dir), ["Is it good?"], template="Review: {input}")
    check_instructions_fit(str(tiny_model_dir), [None], template="Review: {input}")  # no question: nothing dropped
