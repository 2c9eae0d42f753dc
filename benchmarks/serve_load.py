"""The server under load: N concurrent clients against calling ``encode`` directly, in one run.

A server on 127.0.0.1 (in this process, as ``inbedder serve`` runs it) and the model it serves;
the bundled reviews are cut into small requests that 1, 4 and 16 client threads send as fast as
answers come back. Each client count is measured between two direct ``encode`` runs over the
same texts, and its texts/s is given as a ratio to their mean. Every answer is checked against
the direct vectors.

    python benchmarks/serve_load.py [--model NAME] [--texts-per-request 4] [--clients 1 4 16]
"""

from __future__ import annotations

import argparse
import base64
import statistics
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import uvicorn

from inbedder import InBedder
from inbedder.serving import ServerSettings, create_app

REVIEWS = Path(__file__).resolve().parent.parent / "examples" / "reviews-240.csv"
QUESTION = "Is the reviewer satisfied or dissatisfied?"


def direct(model: InBedder, texts: list[str], batch_size: int) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    vectors = model.encode(texts, QUESTION, batch_size=batch_size)
    return len(texts) / (time.perf_counter() - start), vectors


def load(url: str, requests: list[list[int]], texts: list[str], clients: int) -> tuple[float, list[float], dict]:
    """Send every request once over ``clients`` threads; texts/s, latencies and the vectors by text index."""
    latencies: list[float] = []
    got: dict[int, np.ndarray] = {}
    lock = threading.Lock()
    shares = [requests[k::clients] for k in range(clients)]

    def client(share: list[list[int]]) -> None:
        with httpx.Client(base_url=url, timeout=120) as http:
            for rows in share:
                body = {"input": [texts[i] for i in rows], "instruction": QUESTION, "encoding_format": "base64"}
                start = time.perf_counter()
                response = http.post("/v1/embeddings", json=body)
                elapsed = time.perf_counter() - start
                response.raise_for_status()
                data = response.json()["data"]
                with lock:
                    latencies.append(elapsed)
                    for i, item in zip(rows, data):
                        got[i] = np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4")

    threads = [threading.Thread(target=client, args=(share,)) for share in shares]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(len(r) for r in requests) / (time.perf_counter() - start), latencies, got


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--texts-per-request", type=int, default=4)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()

    texts = pd.read_csv(REVIEWS)["text"].astype(str).tolist()
    model = InBedder(args.model)
    step = args.texts_per_request
    requests = [list(range(i, min(i + step, len(texts)))) for i in range(0, len(texts), step)]
    settings = ServerSettings(model=model.name, max_batch_texts=256)
    app = create_app(settings, load=lambda: model)
    server = uvicorn.Server(uvicorn.Config(app, port=args.port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{args.port}"
    while httpx.get(f"{url}/health").status_code != 200:
        time.sleep(0.1)

    model.encode(texts[:16], QUESTION)  # warm-up
    load(url, requests[:4], texts, 2)
    before, expected = direct(model, texts, args.batch_size)
    rows = []
    for clients in args.clients:
        served, latencies, got = load(url, requests, texts, clients)
        after, _ = direct(model, texts, args.batch_size)
        reference = (before + after) / 2
        worst = max(float(np.abs(got[i] - expected[i]).max()) for i in range(len(texts)))
        correct = len(got) == len(texts) and worst < 1e-4
        p50, p95 = statistics.quantiles(latencies, n=20)[9], statistics.quantiles(latencies, n=20)[18]
        rows.append((clients, served, reference, served / reference, p50, p95, correct, worst))
        before = after
    server.should_exit = True
    thread.join()

    print(f"\n{model.name}, {len(texts)} texts in requests of {step}, instruction {QUESTION!r}, base64")
    print("| clients | server texts/s | direct encode texts/s | ratio | p50 latency | p95 latency | all correct |")
    print("|---|---|---|---|---|---|---|")
    for clients, served, reference, ratio, p50, p95, correct, worst in rows:
        print(
            f"| {clients} | {served:.1f} | {reference:.1f} | {ratio:.2f} | {p50 * 1000:.0f} ms | {p95 * 1000:.0f} ms "
            f"| {'yes' if correct else 'NO'} (max diff {worst:.1e}) |"
        )


if __name__ == "__main__":
    main()
