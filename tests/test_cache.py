"""The persistent cache: hits do no model work, a grown corpus runs only its new texts, every setting
that changes a result is in the key, interrupted runs keep their finished batches, and two processes
can write one store at once."""

from __future__ import annotations

import contextlib
import multiprocessing
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from inbedder.cache import FILE_NAME, EmbeddingCache, open_cache

TEXTS = [
    "I love my cat and my dog.",
    "The quick brown fox jumps over the lazy dog.",
    "dog",
    "Reviews, tweets, stories and poems about my cat.",
    "I hate my cat",
    "What animal is mentioned?",
    "A story about a fox.",
    "poems",
]
INSTRUCTION = "What animal is mentioned?"


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    """A model of this module's own, so that patching it never reaches other tests' ``tiny``."""
    from inbedder import InBedder

    return InBedder(str(tiny_model_dir), max_length=64)


@pytest.fixture
def store(tmp_path) -> Path:
    return tmp_path / "store" / "embeddings.sqlite"


class Work:
    """What reaches the model: calls of its embedding layer (every forward pass) and texts batched."""

    def __init__(self) -> None:
        self.passes = 0
        self.rows = 0
        self.batches = 0


@contextlib.contextmanager
def counting(embedder) -> Iterator[Work]:
    """Count the work inside the block: the runner's batches (its public hook) and the model's passes."""
    work = Work()

    def count_batch(batch):
        work.rows += len(batch)
        work.batches += 1

    def count_pass(_module, _args):
        work.passes += 1

    hook = embedder.backend.model.get_input_embeddings().register_forward_pre_hook(count_pass)
    try:
        with embedder.runner.watch(count_batch):
            yield work
    finally:
        hook.remove()


def rows_in(path: Path) -> int:
    return EmbeddingCache(path).info().entries


def test_second_run_does_no_model_work(model, store):
    options = dict(readout="avg_gen", max_new_tokens=4, return_generations=True, batch_size=3)
    with counting(model) as first:
        vectors, answers = model.encode(TEXTS, INSTRUCTION, cache=store, **options)
    assert first.passes > 0 and first.rows == len(TEXTS)
    assert rows_in(store) == len(TEXTS)
    with counting(model) as second:
        again, again_answers = model.encode(TEXTS, INSTRUCTION, cache=store, **options)
    assert second.passes == 0 and second.rows == 0
    np.testing.assert_allclose(again, vectors, atol=1e-6)
    assert again_answers == answers
    # and the cached run equals one without the cache
    np.testing.assert_allclose(again, model.encode(TEXTS, INSTRUCTION, cache=False, **options)[0], atol=1e-6)


def test_single_text_and_tensor_output(model, store):
    first = model.encode(TEXTS[0], INSTRUCTION, cache=store)
    with counting(model) as work:
        again = model.encode(TEXTS[0], INSTRUCTION, cache=store, convert_to_tensor=True)
    assert work.passes == 0 and isinstance(again, torch.Tensor) and again.shape == first.shape
    np.testing.assert_allclose(again.numpy(), first, atol=1e-6)


def test_model_default_and_per_call_override(tiny_model_dir, isolated_cache):
    from inbedder import InBedder

    cached = InBedder(str(tiny_model_dir), max_length=64, cache=True)
    first = cached.encode(TEXTS[:3], INSTRUCTION)
    default_store = isolated_cache / FILE_NAME
    assert rows_in(default_store) == 3  # under $INBEDDER_CACHE
    with counting(cached) as hit:
        np.testing.assert_allclose(cached.encode(TEXTS[:3], INSTRUCTION), first, atol=1e-6)
    with counting(cached) as off:
        cached.encode(TEXTS[:3], INSTRUCTION, cache=False)
    assert hit.rows == 0 and off.rows == 3


def test_no_cache_unless_asked(model, store, isolated_cache):
    model.encode(TEXTS[:2], INSTRUCTION)
    assert not isolated_cache.exists()
    assert model.encode([], INSTRUCTION, cache=store).shape == (0, model.embedding_dim)
    with pytest.raises(ValueError, match="cache must be"):
        model.encode(TEXTS[:2], INSTRUCTION, cache=3)


def test_grown_corpus_runs_only_the_new_texts(model, store):
    old = TEXTS[:6]
    before = model.encode(old, INSTRUCTION, cache=store, batch_size=2)
    grown = [TEXTS[6], *old[:3], TEXTS[7], *old[3:]]
    with counting(model) as work:
        after = model.encode(grown, INSTRUCTION, cache=store, batch_size=2)
    assert work.rows == 2
    assert rows_in(store) == 8
    np.testing.assert_allclose(after[[1, 2, 3, 5, 6, 7]], before, atol=1e-6)  # the stored rows, as they were
    np.testing.assert_allclose(after, model.encode(grown, INSTRUCTION, batch_size=2), atol=1e-4)


def test_repeated_texts_run_once(model, store):
    texts = [TEXTS[0], TEXTS[1], TEXTS[0], TEXTS[0]]
    with counting(model) as work:
        got = model.encode(texts, INSTRUCTION, cache=store, return_generations=True, readout="avg_gen")
    assert work.rows == 2 and rows_in(store) == 2
    np.testing.assert_array_equal(got[0][2], got[0][0])
    np.testing.assert_array_equal(got[0][3], got[0][0])
    assert got[1][0] == got[1][2] == got[1][3]


BASE = dict(readout="avg_gen", layer=-1, max_new_tokens=3)


@pytest.mark.parametrize(
    "change",
    [
        {"instruction": "How does the writer feel?"},
        {"instruction": None},
        {"layer": 1},
        {"readout": "last_gen"},
        {"template": "chat"},
        {"template": "Text: {input}\nQuestion: {instruction}\nAnswer:"},
        {"max_new_tokens": 2},
        {"filter_words": ["the"]},
        {"temperature": 0.7, "seed": 1},
    ],
    ids=lambda change: ",".join(change),
)
def test_every_setting_that_changes_a_result_is_in_the_key(model, store, change):
    texts = TEXTS[:4]
    model.encode(texts, INSTRUCTION, cache=store, **BASE)
    options = {"instruction": INSTRUCTION, **BASE, **change}
    with counting(model) as work:
        model.encode(texts, cache=store, **options)
    assert work.rows == len(texts)
    with counting(model) as again:
        model.encode(texts, cache=store, **options)
    assert again.rows == 0


def test_truncation_is_in_the_key(tiny_model_dir, model, store):
    from inbedder import InBedder

    texts = ["dog", "The quick brown fox jumps over the lazy dog. " * 4]
    model.encode(texts, INSTRUCTION, cache=store)
    shorter = InBedder(str(tiny_model_dir), max_length=56)
    with counting(shorter) as work:
        shorter.encode(texts, INSTRUCTION, cache=store)
    assert work.rows == 1  # only the text that max_length now cuts


def test_greedy_ignores_the_seed(model, store):
    model.encode(TEXTS[:3], INSTRUCTION, cache=store, readout="avg_gen", seed=1)
    with counting(model) as work:
        model.encode(TEXTS[:3], INSTRUCTION, cache=store, readout="avg_gen", seed=2)
    assert work.rows == 0


def test_sampling_without_a_seed_is_not_cached(model, store):
    for _ in range(2):
        with counting(model) as work:
            model.encode(TEXTS[:3], INSTRUCTION, cache=store, readout="avg_gen", temperature=0.8, max_new_tokens=2)
        assert work.rows == 3
    assert rows_in(store) == 0


@pytest.mark.parametrize(
    "post", [{"postprocess": "center"}, {"postprocess": "standardize"}, {"normalize_embeddings": True}]
)
def test_post_processing_reuses_the_raw_rows(model, store, post):
    model.encode(TEXTS, INSTRUCTION, cache=store)
    with counting(model) as work:
        got = model.encode(TEXTS, INSTRUCTION, cache=store, **post)
    assert work.rows == 0
    np.testing.assert_allclose(got, model.encode(TEXTS, INSTRUCTION, **post), atol=1e-5)


def test_head_readout_reuses_the_fst_gen_rows(model, store):
    model.encode(TEXTS, INSTRUCTION, cache=store)
    with counting(model) as work:
        got = model.encode(TEXTS, INSTRUCTION, cache=store, readout="fst_head")
    assert work.passes == 0 and rows_in(store) == len(TEXTS)
    np.testing.assert_allclose(got, model.encode(TEXTS, INSTRUCTION, readout="fst_head"), atol=1e-6)


def test_changed_weights_miss(tiny_model_dir, store):
    from inbedder import InBedder

    changed = InBedder(str(tiny_model_dir), max_length=64)
    before = changed.encode(TEXTS[:3], INSTRUCTION, cache=store)
    with torch.no_grad():
        changed.backend.layers[-1].mlp.down_proj.weight.mul_(1.5)
    with counting(changed) as work:
        after = changed.encode(TEXTS[:3], INSTRUCTION, cache=store)
    assert work.rows == 3 and not np.allclose(before, after, atol=1e-4)
    assert rows_in(store) == 6


def test_same_weights_elsewhere_share_rows(tiny_model_dir, tmp_path, store):
    import shutil

    from inbedder import InBedder

    copy = shutil.copytree(tiny_model_dir, tmp_path / "copy")
    InBedder(str(tiny_model_dir), max_length=64).encode(TEXTS[:3], INSTRUCTION, cache=store)
    moved = InBedder(str(copy), max_length=64)
    with counting(moved) as work:
        moved.encode(TEXTS[:3], INSTRUCTION, cache=store)
    assert work.rows == 0


INSTRUCTIONS = ["What animal is mentioned?", "How does the writer feel?"]


def test_encode_multi_fills_and_uses_the_cache(model, store):
    multi = model.encode_multi(TEXTS, INSTRUCTIONS, cache=store, batch_size=3)
    assert rows_in(store) == len(TEXTS) * len(INSTRUCTIONS)
    for instruction, expected in zip(INSTRUCTIONS, multi):  # each instruction's rows serve encode
        with counting(model) as work:
            got = model.encode(TEXTS, instruction, cache=store)
        assert work.rows == 0
        np.testing.assert_allclose(got, expected, atol=1e-6)
    with counting(model) as work:
        again = model.encode_multi(TEXTS, INSTRUCTIONS, cache=store, batch_size=3)
    assert work.rows == 0
    for got, expected in zip(again, multi):
        np.testing.assert_allclose(got, expected, atol=1e-6)


def test_encode_multi_runs_a_text_that_misses_under_any_instruction(model, store):
    model.encode(TEXTS, INSTRUCTIONS[0], cache=store)  # every text under the first instruction only
    model.encode(TEXTS[:5], INSTRUCTIONS[1], cache=store)
    with counting(model) as work:
        multi = model.encode_multi(TEXTS, INSTRUCTIONS, cache=store)
    assert work.rows == len(TEXTS) - 5
    assert rows_in(store) == 2 * len(TEXTS)
    for instruction, got in zip(INSTRUCTIONS, multi):
        np.testing.assert_allclose(got, model.encode(TEXTS, instruction), atol=1e-4)


def interrupt_after(batches: int):
    """A runner hook that interrupts (as Ctrl-C does) before batch ``batches + 1`` runs."""
    calls = []

    def interrupt(_batch):
        calls.append(1)
        if len(calls) > batches:
            raise KeyboardInterrupt

    return interrupt


def test_interrupted_run_keeps_finished_batches(model, store):
    options = dict(readout="avg_gen", max_new_tokens=3, return_generations=True, batch_size=2)
    expected, expected_answers = model.encode(TEXTS, INSTRUCTION, **options)
    with model.runner.watch(interrupt_after(batches=2)), pytest.raises(KeyboardInterrupt):
        model.encode(TEXTS, INSTRUCTION, cache=store, **options)
    assert rows_in(store) == 4
    with counting(model) as work:
        got, answers = model.encode(TEXTS, INSTRUCTION, cache=store, **options)
    assert work.rows == len(TEXTS) - 4
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert answers == expected_answers


def _encode_in_process(model_dir: str, store: str, texts: list[str], out: str, barrier, kill_after: int | None) -> None:
    """A separate process's encode (spawned: no state shared with the test but the files)."""
    import os

    torch.set_num_threads(1)
    from inbedder import InBedder

    embedder = InBedder(model_dir, max_length=64)
    calls = []

    def die(_batch):  # die hard, as a killed process does: no cleanup, no exception handlers
        calls.append(1)
        if kill_after is not None and len(calls) > kill_after:
            os._exit(9)

    if barrier is not None:
        barrier.wait(timeout=120)
    with embedder.runner.watch(die):
        vectors = embedder.encode(texts, INSTRUCTION, cache=store, batch_size=1)
    np.save(out, vectors)


def _spawn(*args) -> multiprocessing.Process:
    process = multiprocessing.get_context("spawn").Process(target=_encode_in_process, args=args)
    process.start()
    return process


def test_killed_process_keeps_finished_batches(tiny_model_dir, model, store, tmp_path):
    process = _spawn(str(tiny_model_dir), str(store), TEXTS, str(tmp_path / "never.npy"), None, 3)
    process.join(timeout=300)
    assert process.exitcode == 9 and not (tmp_path / "never.npy").exists()
    assert rows_in(store) == 3
    with counting(model) as work:
        got = model.encode(TEXTS, INSTRUCTION, cache=store, batch_size=1)
    assert work.rows == len(TEXTS) - 3
    np.testing.assert_allclose(got, model.encode(TEXTS, INSTRUCTION, batch_size=1), atol=1e-6)


def _open_and_write(path: Path, start: threading.Barrier, opener: int, errors: list[Exception]) -> None:
    store = EmbeddingCache(path)
    start.wait()
    try:
        for row in range(3):
            store.put_many("m", "s", "name", [(f"{opener}-{row}", np.ones(64), None)])
    except Exception as error:  # any failure of an opener fails the round
        errors.append(error)
    finally:
        store.close()


def test_many_openers_of_one_new_file_all_get_in(tmp_path):
    """Switching a new file to WAL fails at once, unretried by SQLite, while another opener holds it."""
    openers, rounds = 8, 100  # the race lost about one round in 30 before the retry
    for round_ in range(rounds):
        path, start, errors = tmp_path / f"{round_}.sqlite", threading.Barrier(openers), []
        threads = [
            threading.Thread(target=_open_and_write, args=(path, start, opener, errors)) for opener in range(openers)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors, f"round {round_}: {errors[0]}"
        assert rows_in(path) == openers * 3


def test_two_processes_write_one_store_at_once(tiny_model_dir, model, store, tmp_path):
    corpus = [f"{i}: {text}" for i, text in enumerate(TEXTS * 3)]  # a number first: max_length cuts the end
    halves = [corpus[:16], corpus[8:]]  # 8 texts in common
    barrier = multiprocessing.get_context("spawn").Barrier(2)
    outs = [tmp_path / f"out{k}.npy" for k in range(2)]
    processes = [
        _spawn(str(tiny_model_dir), str(store), half, str(out), barrier, None) for half, out in zip(halves, outs)
    ]
    for process in processes:
        process.join(timeout=300)
    assert [p.exitcode for p in processes] == [0, 0]

    with contextlib.closing(sqlite3.connect(store)) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert connection.execute("SELECT COUNT(*), COUNT(DISTINCT prompt) FROM embeddings").fetchone() == (24, 24)
    expected = model.encode(corpus, INSTRUCTION, batch_size=1)
    for half, out, start in zip(halves, outs, (0, 8)):
        np.testing.assert_allclose(np.load(out), expected[start : start + len(half)], atol=1e-6)
    with counting(model) as work:
        got = model.encode(corpus, INSTRUCTION, cache=store)
    assert work.rows == 0
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_store_round_trip_and_clear(tmp_path):
    cache = EmbeddingCache(tmp_path / "c.sqlite")
    assert not cache.info().exists and not cache.path.exists()  # info does not create the file
    rows = [("k1", np.arange(4, dtype=np.float32), "a cat"), ("k2", np.ones(4), ["a", "b"])]
    assert cache.put_many("m", "s", "model-a", rows) == 2
    assert cache.put_many("m", "s", "model-a", [("k1", np.zeros(4), "other")]) == 0  # the first write stays
    assert cache.put_many("m2", "s", "model-b", [("k1", np.zeros(3), "x")]) == 1
    found = cache.get_many("m", "s", ["k1", "k2", "k3"])
    assert set(found) == {"k1", "k2"}
    np.testing.assert_array_equal(found["k1"][0], np.arange(4))
    assert found["k2"][1] == '["a", "b"]'
    info = cache.info()
    assert info.entries == 3 and info.per_model == {"model-a": 2, "model-b": 1} and info.size_bytes > 0
    assert "3 entries" in info.summary()
    assert cache.clear("model-b") == 1 and cache.clear("nobody") == 0
    assert cache.clear() == 2 and cache.info().entries == 0


def test_open_cache_paths(tmp_path, isolated_cache):
    assert open_cache(None) is None and open_cache(False) is None
    assert open_cache(True).path == isolated_cache / FILE_NAME
    assert open_cache(tmp_path).path == tmp_path / FILE_NAME  # an existing directory
    assert open_cache(tmp_path / "new-dir").path == tmp_path / "new-dir" / FILE_NAME  # no suffix: a directory
    assert open_cache(str(tmp_path / "my.db")).path == tmp_path / "my.db"
    store = EmbeddingCache(tmp_path / "x.sqlite")
    assert open_cache(store) is store
    with pytest.raises(ValueError, match="cache must be"):
        open_cache("")


@pytest.mark.parametrize("family_dir", ["bert_dir", "t5_dir"])
def test_other_families_hit(request, family_dir, store):
    from inbedder import InBedder

    other = InBedder(str(request.getfixturevalue(family_dir)), max_length=64)
    first, answers = other.encode(TEXTS[:4], INSTRUCTION, cache=store, readout="avg_gen", return_generations=True)
    with counting(other) as work:
        again, again_answers = other.encode(
            TEXTS[:4], INSTRUCTION, cache=store, readout="avg_gen", return_generations=True
        )
    assert work.rows == 0 and again_answers == answers
    np.testing.assert_allclose(again, first, atol=1e-6)


class ModuleReencoder(torch.nn.Module):
    """A sentence embedder that is a torch module (as sentence-transformers' is): its weights are fingerprinted."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(5))
        self.calls = 0

    def encode(self, texts):
        self.calls += 1
        codes = torch.tensor([[len(t), sum(map(ord, t)) % 97, 1.0, 2.0, 3.0] for t in texts])
        return (codes * self.scale).detach().numpy()


def test_re_encode_is_cached_with_a_module_reencoder(tiny_model_dir, store):
    from inbedder import InBedder

    reencoder = ModuleReencoder()
    embedder = InBedder(str(tiny_model_dir), max_length=64, reencoder=reencoder)
    options = dict(readout="re_encode", temperature=1.0, num_samples=2, seed=3, max_new_tokens=3)
    first, answers = embedder.encode(TEXTS[:3], INSTRUCTION, cache=store, return_generations=True, **options)
    assert all(isinstance(a, list) and len(a) == 2 for a in answers)
    with counting(embedder) as work:
        again, again_answers = embedder.encode(TEXTS[:3], INSTRUCTION, cache=store, return_generations=True, **options)
    assert work.rows == 0 and again_answers == answers  # the sampled answers, lists and all
    np.testing.assert_allclose(again, first, atol=1e-6)
    with torch.no_grad():
        reencoder.scale.mul_(2)
    with counting(embedder) as work:
        embedder.encode(TEXTS[:3], INSTRUCTION, cache=store, **options)
    assert work.rows == 3 * 2  # another re-encoder, other rows: each text runs once per sample


def test_re_encode_with_an_opaque_reencoder_is_not_cached(tiny_model_dir, store):
    from inbedder import InBedder

    class Opaque:
        def encode(self, texts):
            return np.ones((len(texts), 4))

    embedder = InBedder(str(tiny_model_dir), max_length=64, reencoder=Opaque())
    embedder.encode(TEXTS[:2], INSTRUCTION, cache=store, readout="re_encode")
    assert rows_in(store) == 0


def test_rows_are_filed_under_the_canonical_model_name(tiny_model_dir):
    from inbedder.fingerprints import model_label

    assert model_label("smollm2") == model_label("SmolLM2-135M-Instruct") == "smollm2-135m-instruct"
    assert model_label("default") == "smollm2-135m-inbedder-v2"
    assert model_label(f"{tiny_model_dir}/.") == str(Path(tiny_model_dir).resolve())
    assert model_label("someone/some-model") == "someone/some-model"


@contextlib.contextmanager
def tiny_disk(folder: Path, size: str = "160k") -> Iterator[Path]:
    """A small tmpfs at ``folder`` (root only; the test is skipped where mounting is not allowed)."""
    import subprocess

    folder.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)]
    if subprocess.run(mount, capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_full_disk_is_named_not_hidden_by_the_rollback(tmp_path):
    from inbedder.cache import CacheError, EmbeddingCache

    with tiny_disk(tmp_path / "disk") as disk:
        cache = EmbeddingCache(disk / "store.sqlite")
        with pytest.raises(CacheError, match=r"cannot write to the cache .*store.sqlite: database or disk is full"):
            for batch in range(200):
                cache.put_many("m", "s", "name", [(f"{batch}-{i}", np.random.rand(256), None) for i in range(16)])
        cache.close()


def test_a_read_only_store_is_refused_before_any_model_work(tmp_path, monkeypatch, capsys):
    import subprocess

    from inbedder import cli

    folder = tmp_path / "ro"
    folder.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=64k,ro", "tmpfs", str(folder)]
    if subprocess.run(mount, capture_output=True).returncode:
        pytest.skip("cannot mount a read-only tmpfs here")
    try:
        monkeypatch.setenv("INBEDDER_CACHE", str(folder))
        (tmp_path / "t.txt").write_text("a text\n")
        args = ["encode", str(tmp_path / "t.txt"), "--model", str(tmp_path / "no-model"), "--cache", "-o", "x.npy"]
        monkeypatch.setattr("sys.argv", ["inbedder", *args])
        with pytest.raises(SystemExit) as stopped:
            cli.main()
        err = capsys.readouterr().err
        assert stopped.value.code == 2 and "cannot be written" in err and "read-only" in err, err
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_store_stays_open_across_calls_and_is_checked_again_only_when_replaced(tiny, tmp_path, monkeypatch):
    from inbedder import cache

    checked = []
    real = cache.check_store
    monkeypatch.setattr(cache, "check_store", lambda path: (checked.append(path), real(path))[1])
    path = tmp_path / "store.sqlite"
    first = tiny.encode(["A cat sat on the mat."], "What animal?", cache=path)
    tiny.encode(["A dog barked."], "What animal?", cache=path)
    assert cache.open_cache(path) is cache.open_cache(str(path)) and len(checked) == 1
    assert cache.open_cache(path).info().entries == 2  # info checks again, whatever was checked before

    for part in cache._files(path):  # removed behind the store's back: checked again, made again
        part.unlink()
    again = tiny.encode(["A cat sat on the mat."], "What animal?", cache=path)
    assert len(checked) == 3 and cache.open_cache(path).info().entries == 1
    np.testing.assert_allclose(again, first, atol=1e-6)
