"""The embeddings server on the tiny model: a real server on 127.0.0.1, real HTTP clients."""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import uvicorn

from inbedder.errors import InputError
from inbedder.serving import ServerSettings, create_app

TEXTS = ["I love my cat", "The dog barks at the mailman every morning.", "A parrot that talks", "fish"]
QUESTION = "What animal is mentioned?"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not become ready")


@contextlib.contextmanager
def running(settings: ServerSettings, model, **config) -> Iterator[str]:
    """A uvicorn server in a thread, serving ``model``; its base URL once the model is loaded."""
    port = free_port()
    app = create_app(settings, load=lambda: model)
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning", **config))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)


class Gated:
    """The tiny model behind a gate: ``encode`` calls wait until the test opens it, and are recorded."""

    def __init__(self, model) -> None:
        self.model, self.gate, self.calls = model, threading.Event(), []

    def __getattr__(self, name):
        return getattr(self.model, name)

    def encode(self, texts, instruction=None, **options):
        self.calls.append(len(texts))
        self.gate.wait(timeout=30)
        return self.model.encode(texts, instruction, **options)

    def encode_multi(self, texts, instructions, **options):
        self.calls.append(len(texts) * len(instructions))
        self.gate.wait(timeout=30)
        return self.model.encode_multi(texts, instructions, **options)


@pytest.fixture(scope="module")
def url(tiny):
    settings = ServerSettings(
        model="tiny", max_inputs=8, max_chars=200, max_instruction_chars=300, max_response_bytes=4096
    )
    with running(settings, tiny) as base:
        yield base


def post(url: str, body: dict, **kwargs) -> httpx.Response:
    """The body as JSON with \\u escapes, as a client in another language may send a lone surrogate."""
    headers = {"content-type": "application/json", **kwargs.pop("headers", {})}
    return httpx.post(f"{url}/v1/embeddings", content=json.dumps(body), headers=headers, timeout=30, **kwargs)


def assert_served(got, expected, atol: float = 1e-5) -> None:
    """The served vectors are the model's, scaled to unit length (OpenAI's convention)."""
    expected = np.asarray(expected, dtype=np.float64)
    expected = expected / np.linalg.norm(expected, axis=-1, keepdims=True)
    np.testing.assert_allclose(got, expected, atol=atol)


def vectors(response: httpx.Response) -> np.ndarray:
    data = response.json()["data"]
    assert [d["index"] for d in data] == list(range(len(data)))
    return np.array([d["embedding"] for d in data], dtype=np.float32)


def test_the_openai_client_works_unchanged(url, tiny):
    import openai

    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused")
    plain = client.embeddings.create(model="tiny", input=TEXTS)  # the client asks for base64 and decodes it
    assert_served([d.embedding for d in plain.data], tiny.encode(TEXTS, None), atol=1e-5)
    asked = client.embeddings.create(model="tiny", input=TEXTS, extra_body={"instruction": QUESTION})
    assert_served([d.embedding for d in asked.data], tiny.encode(TEXTS, QUESTION), atol=1e-5)
    assert asked.usage.prompt_tokens == sum(len(tiny.prompt_tokenizer(t, QUESTION, tiny.template)) for t in TEXTS)
    assert [m.id for m in client.models.list().data] == [tiny.name]


def test_floats_base64_and_order(url, tiny):
    questions = [QUESTION, "How does the writer feel?", QUESTION, None]
    floats = post(url, {"input": TEXTS, "instruction": questions, "encoding_format": "float"})
    assert floats.status_code == 200 and floats.json()["model"] == tiny.name
    assert_served(vectors(floats), tiny.encode(TEXTS, questions), atol=1e-5)
    packed = post(url, {"input": TEXTS, "instruction": questions, "encoding_format": "base64"}).json()["data"]
    decoded = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in packed])
    np.testing.assert_array_equal(decoded, vectors(floats))
    one = post(url, {"input": TEXTS[1], "instruction": QUESTION, "readout": "avg_ppt", "layer": 1})
    assert_served(vectors(one)[0], tiny.encode(TEXTS[1], QUESTION, readout="avg_ppt", layer=1), atol=1e-5)


@pytest.mark.parametrize(
    "body, status, param, words",
    [
        ({"input": []}, 400, "input", "at least one text"),
        ({"input": ["fine", "  "]}, 400, "input[1]", "input[1] is empty"),
        ({"input": [1, 2]}, 400, "input[0]", "string"),
        ({"input": "x" * 201}, 400, "input", "201 characters; the limit is 200"),
        ({"input": ["a"] * 9}, 400, "input", "9 texts; the limit is 8"),
        ({"input": "hi", "model": "gpt-4"}, 404, "model", "'gpt-4' is not served here"),
        ({"input": "hi", "dimensions": 8}, 400, "dimensions", "not to 'fst_gen': its numbers have no such order"),
        ({"input": "hi", "readout": "fst_head_rp", "dimensions": 2048}, 400, "dimensions", "more than readout"),
        ({"input": "hi", "readout": "nope"}, 400, "readout", "unknown readout 'nope'"),
        ({"input": "hi", "layer": 99}, 400, "layer", "layer 99 does not exist"),
        ({"input": ["a", "b"], "instruction": ["q"]}, 400, "instruction", "1 entries for 2 inputs"),
        ({"input": "hi", "instructions": "q"}, 400, "instructions", "unknown field"),
        ({"input": "hi", "encoding_format": "int8"}, 400, "encoding_format", "float"),
        ({"model": "tiny"}, 400, "input", "Field required"),
        ({"input": ["fine", "x\ud800y"]}, 400, "input[1]", "not valid Unicode text at character 1"),
        ({"input": "hi", "instruction": "x\udfff"}, 400, "instruction", "not valid Unicode"),
        ({"input": "hi", "instruction": "why " * 80}, 400, "instruction", "320 characters; the limit is 300"),
        ({"input": "hi", "instruction": "why " * 70}, 400, "instruction", "leaving no room for the input"),
        ({"input": ["a", "b"], "instruction": ["q", "why " * 70]}, 400, "instruction[1]", "no room"),
        (
            {"input": ["a"] * 8},
            400,
            "input",
            "over this server's 0 MiB limit; send fewer inputs, or encoding_format base64",
        ),
    ],
)
def test_bad_requests_name_the_field(url, body, status, param, words):
    response = post(url, body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param and words in error["message"], error
    assert error["type"] == "invalid_request_error"


def test_dimensions_keep_the_first_numbers_of_a_projected_readout(url, tiny):
    body = {"input": TEXTS[:2], "instruction": QUESTION, "readout": "fst_head_rp", "dimensions": 64}
    response = post(url, body | {"encoding_format": "base64"})
    assert response.status_code == 200, response.text
    got = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in response.json()["data"]])
    assert_served(got, tiny.encode(TEXTS[:2], QUESTION, readout="fst_head_rp")[:, :64], atol=1e-5)


def test_a_response_within_the_limit_in_base64_is_served(url, tiny):
    response = post(url, {"input": ["a"] * 8, "encoding_format": "base64"})  # refused as floats, above
    assert response.status_code == 200 and len(response.json()["data"]) == 8


def test_every_error_comes_in_openai_shape(url):
    cases = [
        (httpx.get(f"{url}/v1/embeddings"), 405),
        (httpx.post(f"{url}/v1/nothing", json={}), 404),
        (httpx.post(f"{url}/v1/embeddings", content=b"{not json", headers={"content-type": "application/json"}), 400),
        (httpx.post(f"{url}/v1/embeddings", content=b"input=hi"), 400),
    ]
    for response, status in cases:
        assert response.status_code == status, response.text
        body = response.json()
        assert set(body) == {"error"} and body["error"]["message"], body


def test_metrics_label_routes_not_raw_paths(url):
    for i in range(20):
        httpx.get(f"{url}/secret-{i}/x")
    httpx.get(f"{url}/v1/models")
    metrics = httpx.get(f"{url}/metrics").text
    assert "secret" not in metrics
    assert 'route="unmatched",status="404"' in metrics and 'route="/v1/models",status="200"' in metrics


class Poisoned(Gated):
    """The gated tiny model, failing any call that holds the text "poison" (past every check of the API)."""

    def encode(self, texts, instruction=None, **options):
        if "poison" in texts:
            self.calls.append(len(texts))
            raise InputError("poison is not a text this model takes")
        return super().encode(texts, instruction, **options)


def test_one_failing_request_fails_alone_not_the_batch_it_joined(tiny):
    model = Poisoned(tiny)
    with (
        running(ServerSettings(model="tiny", max_wait=0.2), model) as base,
        concurrent.futures.ThreadPoolExecutor(10) as pool,
    ):
        first = pool.submit(post, base, {"input": TEXTS[0]})
        wait_until(lambda: model.calls == [1])
        asks = [[f"{TEXTS[i % 4]} ({i})"] for i in range(8)]
        futures = [pool.submit(post, base, {"input": t, "instruction": QUESTION}) for t in asks]
        bad = pool.submit(post, base, {"input": ["poison"], "instruction": QUESTION})
        wait_until(lambda: queued(base) == 9)
        model.gate.set()
        assert first.result().status_code == 200
        for texts, future in zip(asks, futures):
            assert future.result().status_code == 200
            assert_served(vectors(future.result()), tiny.encode(texts, QUESTION), atol=1e-5)
        refused = bad.result()
        assert refused.status_code == 400 and "poison is not a text" in refused.json()["error"]["message"]
    assert model.calls[:2] == [1, 9]  # merged, failed, then each request alone


def test_health_says_failed_without_the_reason(tiny):
    def broken():
        raise OSError("cannot open /home/someone/private/model.safetensors")

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(ServerSettings(), load=broken), port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: server.started and httpx.get(f"{url}/health").status_code == 500)
        assert httpx.get(f"{url}/health").json() == {"status": "failed"}
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_health_models_and_metrics(url, tiny):
    assert httpx.get(f"{url}/health").json() == {"status": "ok", "model": tiny.name}
    post(url, {"input": TEXTS[:2]})
    metrics = httpx.get(f"{url}/metrics").text
    for name in ("inbedder_requests_total", "inbedder_texts_total", "inbedder_batch_texts_bucket"):
        assert name in metrics
    assert "inbedder_queue_texts 0.0" in metrics and "inbedder_request_seconds_bucket" in metrics
    assert 'route="/v1/embeddings",status="200"' in metrics


def test_concurrent_requests_are_merged_and_each_gets_its_own(tiny):
    gated = Gated(tiny)
    with (
        running(ServerSettings(model="tiny", max_wait=0.2), gated) as base,
        concurrent.futures.ThreadPoolExecutor(9) as pool,
    ):
        first = pool.submit(post, base, {"input": TEXTS[0]})  # the worker takes it and waits at the gate
        wait_until(lambda: gated.calls == [1])
        asks = [([f"{TEXTS[i % 4]} ({i})", f"{TEXTS[(i + 1) % 4]} ({i})"], [f"Question {i}?", None]) for i in range(8)]
        futures = [pool.submit(post, base, {"input": t, "instruction": q}) for t, q in asks]
        wait_until(lambda: queued(base) == sum(len(t) for t, _ in asks))
        gated.gate.set()
        assert first.result().status_code == 200
        for (texts, questions), future in zip(asks, futures):
            assert_served(vectors(future.result()), tiny.encode(texts, questions), atol=1e-5)
    assert gated.calls == [1, sum(len(t) for t, _ in asks)]  # the eight waiting requests went in one call


def test_same_texts_under_different_questions_share_one_encode_multi(tiny):
    gated = Gated(tiny)
    with (
        running(ServerSettings(model="tiny", max_wait=0.2), gated) as base,
        concurrent.futures.ThreadPoolExecutor(4) as pool,
    ):
        first = pool.submit(post, base, {"input": "warm-up"})
        wait_until(lambda: gated.calls == [1])
        questions = [QUESTION, "How does the writer feel?", "Is it long?"]
        futures = [pool.submit(post, base, {"input": TEXTS, "instruction": q}) for q in questions]
        wait_until(lambda: queued(base) == 3 * len(TEXTS))
        gated.gate.set()
        first.result()
        for question, future in zip(questions, futures):
            assert_served(vectors(future.result()), tiny.encode(TEXTS, question), atol=1e-5)
    assert gated.calls == [1, 3 * len(TEXTS)]


def test_a_full_queue_answers_503_with_retry_after(tiny):
    gated = Gated(tiny)
    with (
        running(ServerSettings(model="tiny", max_queue=4), gated) as base,
        concurrent.futures.ThreadPoolExecutor(3) as pool,
    ):
        first = pool.submit(post, base, {"input": TEXTS[0]})
        wait_until(lambda: gated.calls == [1])
        waiting = pool.submit(post, base, {"input": TEXTS[:4]})  # fills the queue
        wait_until(lambda: queued(base) == 4)
        refused = post(base, {"input": "one more"})
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["code"] == "queue_full"
        gated.gate.set()
        assert first.result().status_code == 200 and waiting.result().status_code == 200


def test_a_request_whose_client_left_is_dropped(tiny):
    gated = Gated(tiny)
    with running(ServerSettings(model="tiny"), gated) as base:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            first = pool.submit(post, base, {"input": TEXTS[0]})
            wait_until(lambda: gated.calls == [1])
            with pytest.raises(httpx.ReadTimeout):  # the client gives up and closes its connection
                httpx.post(f"{base}/v1/embeddings", json={"input": TEXTS}, timeout=0.5)
            time.sleep(0.3)  # the server notices within its poll interval
            gated.gate.set()
            assert first.result().status_code == 200
        assert post(base, {"input": "after"}).status_code == 200
    assert gated.calls == [1, 1]  # the abandoned request never reached the model


def test_a_request_whose_client_leaves_mid_call_stops_at_the_next_batch(tiny):
    ran = []

    def slow_batch(batch):  # each batch of the model takes a tenth of a second
        ran.append(len(batch))
        time.sleep(0.1)

    texts = [f"{TEXTS[i % 4]} ({i})" for i in range(64)]
    with running(ServerSettings(model="tiny"), tiny) as base, tiny.watch(slow_batch):
        with pytest.raises(httpx.ReadTimeout):  # 64 texts in batches of 16 at most: 0.4 s of batches or more
            httpx.post(f"{base}/v1/embeddings", json={"input": texts, "instruction": QUESTION}, timeout=0.15)
        wait_until(lambda: post(base, {"input": "after"}).status_code == 200)
        taken = sum(ran[:-1])  # the last batch is the request that came after
    assert 0 < taken < len(texts), ran


def test_a_large_request_is_sliced_so_a_small_one_is_not_stuck_behind_it(tiny):
    """Round robin: the small request joins the large one's first slice instead of waiting for all of it."""
    from inbedder.serving.batcher import Batcher

    gated = Gated(tiny)
    batcher = Batcher(gated, slice_texts=8, slice_chars=10_000, max_wait=0.01)
    try:
        first = batcher.submit([TEXTS[0]], [None])
        wait_until(lambda: gated.calls == [1])
        large = [f"{TEXTS[i % 4]} ({i})" for i in range(40)]
        big = batcher.submit(large, [QUESTION] * 40)
        small = batcher.submit(["a small one"], ["Is it small?"])
        wait_until(lambda: batcher.queue_depth == 41)
        gated.gate.set()
        first.result(timeout=30)
        np.testing.assert_allclose(
            small.result(timeout=30).vectors, tiny.encode(["a small one"], "Is it small?"), atol=1e-5
        )
        result = big.result(timeout=30)
        np.testing.assert_allclose(result.vectors, tiny.encode(large, QUESTION), atol=1e-5)
        assert result.prompt_tokens == sum(tiny.encode(large, QUESTION, return_usage=True)[1])
    finally:
        batcher.close()
    assert gated.calls == [1, 9, 8, 8, 8, 8]  # the small request went with the first slice


def test_slices_are_bounded_by_characters_too(tiny):
    from inbedder.serving.batcher import Batcher

    gated = Gated(tiny)
    gated.gate.set()
    batcher = Batcher(gated, slice_texts=32, slice_chars=100)
    try:
        texts = ["x" * 60, "y" * 60, "z" * 30, "w" * 500, "v"]
        batcher.submit(texts, [None] * 5).result(timeout=30)
    finally:
        batcher.close()
    assert gated.calls == [1, 2, 1, 1]  # 60 | 60 + 30 | 500 (alone, though over the limit) | 1


def test_a_request_over_the_token_limit_is_refused_before_any_work(tiny):
    gated = Gated(tiny)
    gated.gate.set()
    texts = [f"{TEXTS[i % 4]} ({i})" for i in range(6)]
    tokens = sum(tiny.prompt_tokens(texts, QUESTION))
    with running(ServerSettings(model="tiny", max_request_tokens=tokens - 1), gated) as base:
        refused = post(base, {"input": texts, "instruction": QUESTION})
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "input"
        assert f"input takes {tokens} prompt tokens; the limit is {tokens - 1}" in refused.json()["error"]["message"]
        assert gated.calls == []
        served = post(base, {"input": texts[:-1], "instruction": QUESTION})
        assert served.status_code == 200 and served.json()["usage"]["prompt_tokens"] <= tokens - 1


def test_prompt_tokens_count_what_encode_reports(tiny):
    texts = ["short", "a much longer text " * 50]
    assert tiny.prompt_tokens(texts, QUESTION) == tiny.encode(texts, QUESTION, return_usage=True)[1]


def test_a_body_over_the_limit_is_refused_with_413(tiny):
    with running(ServerSettings(model="tiny", max_body_bytes=2_000), tiny) as base:
        body = {"input": ["x" * 1_500, "y" * 1_500]}
        declared = post(base, body)
        assert declared.status_code == 413 and declared.json()["error"]["code"] == "too_large"

        def chunks():  # no Content-Length: counted as it arrives
            data = json.dumps(body).encode()
            for start in range(0, len(data), 500):
                yield data[start : start + 500]

        streamed = httpx.post(f"{base}/v1/embeddings", content=chunks(), headers={"content-type": "application/json"})
        assert streamed.status_code == 413
        assert post(base, {"input": "small"}).status_code == 200


def test_a_client_that_trickles_its_request_is_disconnected(tiny):
    from inbedder.serving.protocol import timed_protocol

    with running(ServerSettings(model="tiny"), tiny, http=timed_protocol(0.5)) as base:
        port = int(base.rsplit(":", 1)[1])
        silent, trickling = (socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(2))
        trickling.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        for sock in (silent, trickling):
            assert sock.recv(100) == b""  # closed by the server
            sock.close()
        assert 0.4 < time.monotonic() - started < 3
        slow = post(base, {"input": ["slow " * 200] * 8})  # a request that is in is answered however long it takes
        assert slow.status_code == 200


def test_bearer_token(tiny):
    with running(ServerSettings(model="tiny", api_key="s3cret"), tiny) as base:
        assert post(base, {"input": "hi"}).status_code == 401
        wrong = post(base, {"input": "hi"}, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
        assert post(base, {"input": "hi"}, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert httpx.get(f"{base}/health").status_code == 200  # health stays open for probes


def test_health_says_loading_until_the_model_is_there(tiny):
    loaded = threading.Event()

    def slow_load():
        loaded.wait(timeout=30)
        return tiny

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(ServerSettings(), load=slow_load), port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: server.started)
        assert httpx.get(f"{url}/health").status_code == 503
        busy = post(url, {"input": "hi"})
        assert busy.status_code == 503 and busy.json()["error"]["code"] == "model_not_ready"
        loaded.set()
        wait_ready(url)
    finally:
        loaded.set()
        server.should_exit = True
        thread.join(timeout=30)


def test_the_command_serves_and_shuts_down_on_sigterm_without_losing_requests(tiny_model_dir, tmp_path):
    port = free_port()
    command = [sys.executable, "-m", "inbedder.cli", "serve", "--model", str(tiny_model_dir), "--port", str(port)]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url)
        texts = [f"{TEXTS[i % 4]} number {i}. " * 30 for i in range(512)]  # long: seconds of work
        finished = []

        def ask(part):
            response = post(url, {"input": part, "instruction": QUESTION})
            finished.append(time.monotonic())
            return response

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(ask, texts[k::8]) for k in range(8)]
            time.sleep(0.5)  # every request sent and queued
            server.send_signal(signal.SIGTERM)
            stopped = time.monotonic()
            responses = [f.result() for f in futures]
        assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200]
        assert sum(len(r.json()["data"]) for r in responses) == len(texts)
        assert max(finished) > stopped  # requests were still in flight when the signal came
        assert server.wait(timeout=60) == 0, server.stdout.read()
    finally:
        if server.poll() is None:
            os.kill(server.pid, signal.SIGKILL)


def queued(url: str) -> float:
    line = next(x for x in httpx.get(f"{url}/metrics").text.splitlines() if x.startswith("inbedder_queue_texts "))
    return float(line.split()[1])


def wait_until(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.01)


def test_the_command_refuses_a_model_it_cannot_find_before_starting(tmp_path):
    command = [sys.executable, "-m", "inbedder.cli", "serve", "--model", str(tmp_path / "nowhere"), "--port", "1"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "cannot serve" in done.stderr and "nowhere" in done.stderr, done.stderr
    assert "Uvicorn running" not in done.stderr


def test_mixed_valid_and_invalid_requests_at_once_each_get_exactly_their_own(url, tiny):
    import random

    rng = random.Random(7)
    questions = [QUESTION, "How does the writer feel?", None]
    invalid = [
        {"input": ["fine", " "]},
        {"input": ["x\ud800y"]},
        {"input": "hi", "instruction": "why " * 80},
        {"input": [1, 2]},
        {"input": "hi", "readout": "nope"},
        {"input": "hi", "layer": 99},
    ]
    asks = []
    for i in range(48):
        if rng.random() < 0.35:
            asks.append((rng.choice(invalid), None))
            continue
        texts = [f"{rng.choice(TEXTS)} #{i}-{j}" for j in range(rng.randint(1, 5))]
        instruction = [rng.choice(questions) for _ in texts] if rng.random() < 0.5 else rng.choice(questions)
        body = {"input": texts, "instruction": instruction, "encoding_format": rng.choice(["float", "base64"])}
        asks.append((body, tiny.encode(texts, instruction)))
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        responses = list(pool.map(lambda ask: post(url, ask[0]), asks))
    for (body, expected), response in zip(asks, responses):
        if expected is None:
            assert response.status_code == 400 and response.json()["error"]["param"], response.text
            continue
        assert response.status_code == 200, response.text
        data = response.json()["data"]
        if body["encoding_format"] == "base64":
            got = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in data])
        else:
            got = vectors(response)
        assert_served(got, expected, atol=1e-5)


@pytest.mark.parametrize("option", sorted(__import__("conftest").ENCODE_OPTION_CASES))
def test_every_encode_option_is_honoured_by_the_server_or_refused_by_name(url, tiny, option):
    from conftest import ENCODE_OPTION_CASES

    value = ENCODE_OPTION_CASES[option][option]
    response = post(url, {"input": TEXTS[:2], "instruction": QUESTION, option: value})
    if option in ("readout", "layer"):  # the request's own fields
        assert response.status_code == 200, response.text
        assert_served(vectors(response), tiny.encode(TEXTS[:2], QUESTION, **{option: value}), atol=1e-5)
    else:  # the rest are the server's to set (dimensions is truncate_dim's OpenAI name)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["message"] == f"{option}: unknown field"


class Buggy(Gated):
    """The tiny model with a bug: any call fails with a plain ValueError, not a refusal of the input."""

    def encode(self, texts, instruction=None, **options):
        raise ValueError("operands could not be broadcast together")


def test_a_bug_in_the_model_is_a_server_error_not_the_clients(tiny):
    model = Buggy(tiny)
    model.gate.set()
    with running(ServerSettings(model="tiny"), model) as base:
        response = post(base, {"input": TEXTS[0]})
    assert response.status_code == 500 and "broadcast" not in response.text
    assert response.json()["error"]["code"] == "internal_error"  # OpenAI's shape, as every other error


def test_the_command_fixes_glibcs_mmap_threshold_unless_the_user_set_one(monkeypatch):
    """A rising threshold keeps freed tensors in a fragmenting heap: the server fixes it at start."""
    from inbedder.cli import serve as command

    calls = []

    class FakeLibc:
        def mallopt(self, parameter, value):
            calls.append((parameter, value))

    monkeypatch.setattr(command.ctypes, "CDLL", lambda name: FakeLibc())
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    command.fix_mmap_threshold()
    assert calls == [(-3, 128 * 1024)]
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    command.fix_mmap_threshold()
    assert calls == [(-3, 128 * 1024)]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--max-inputs", "0"], "--max-inputs must be at least 1, got 0"),
        (["--max-queue", "-3"], "--max-queue must be at least 1, got -3"),
        (["--max-batch-tokens", "0"], "--max-batch-tokens must be at least 1, got 0"),
        (["--max-body-mb", "0"], "--max-body-mb must be at least 1, got 0"),
        (["--limit-concurrency", "0"], "--limit-concurrency must be at least 1, got 0"),
        (["--request-timeout", "0"], "--request-timeout must be a positive number of seconds, got 0.0"),
        (["--dtype", "float8"], "--dtype must be one of auto, float32, bfloat16, float16, got 'float8'"),
        (["--api-key-env", "INBEDDER_NO_SUCH_KEY"], "INBEDDER_NO_SUCH_KEY: that environment variable is not set"),
    ],
)
def test_the_command_refuses_bad_settings_by_their_flag_before_loading(flags, message, monkeypatch, capsys):
    from inbedder import cli

    monkeypatch.delenv("INBEDDER_NO_SUCH_KEY", raising=False)
    monkeypatch.setattr("sys.argv", ["inbedder", "serve", "--model", "/no/such/model", *flags])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and err.count("\n") == 1, err


def test_server_settings_check_themselves():
    from inbedder.server_settings import ServerSettings

    with pytest.raises(ValueError, match="slice_texts must be at least 1, got 0"):
        ServerSettings(slice_texts=0)
    with pytest.raises(ValueError, match="max_wait must be a number of seconds"):
        ServerSettings(max_wait=-1)


def test_vectors_are_unit_length_cut_or_not_unless_asked_raw(url, tiny):
    base = {"input": TEXTS[:2], "instruction": QUESTION}
    cut = base | {"readout": "fst_head_rp", "dimensions": 64}
    for body in (base, cut):
        got = vectors(post(url, body))
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(
        vectors(post(url, base | {"normalize": False})), tiny.encode(TEXTS[:2], QUESTION), atol=1e-5
    )
    raw = vectors(post(url, cut | {"normalize": False}))
    np.testing.assert_allclose(raw, tiny.encode(TEXTS[:2], QUESTION, readout="fst_head_rp")[:, :64], atol=1e-5)


def test_the_openai_client_retrieves_the_served_model(url, tiny):
    from openai import NotFoundError, OpenAI

    client = OpenAI(base_url=f"{url}/v1", api_key="unused")
    assert client.models.retrieve("tiny").id == tiny.name
    with pytest.raises(NotFoundError, match="is not served here"):
        client.models.retrieve("gpt-4o")
    result = client.embeddings.create(
        model="tiny", input=TEXTS[:2], dimensions=None, extra_body={"instruction": QUESTION}
    )
    np.testing.assert_allclose(np.linalg.norm([d.embedding for d in result.data], axis=1), 1.0, atol=1e-5)
