"""`inbedder serve` under a large request and under a long soak: latency of small requests, and memory.

Starts the real command (`inbedder serve`, its default limits) on 127.0.0.1 and measures:

- **fairness**: one client sends the largest request the limits allow (texts of about 1,800
  characters, as many as ``--max-request-tokens`` admits) in a loop; a second client sends
  1-text requests one after another. Their latencies (p50, p95, max) show whether a small
  request waits behind the large one.
- **soak**: ``--clients`` threads send requests of 1 to 8 reviews (random lengths, so batches
  take many shapes) for ``--soak`` seconds; the server's resident memory is sampled every 10 s.

    python benchmarks/serve_fairness.py [--model NAME] [--fairness 120] [--soak 600] [--clients 16]
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pandas as pd

REVIEWS = Path(__file__).resolve().parent.parent / "examples" / "reviews-240.csv"
QUESTION = "Is the reviewer satisfied or dissatisfied?"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def start_server(model: str | None, port: int) -> subprocess.Popen:
    command = [str(Path(sys.executable).with_name("inbedder")), "serve", "--port", str(port)]
    command += ["--model", model] if model else []
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).json().get("status") == "ok":
                return server
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.5)
    server.kill()
    raise RuntimeError("the server did not come up")


def quantiles(values: list[float]) -> str:
    cuts = statistics.quantiles(values, n=20)
    return f"{len(values)} | {cuts[9] * 1000:.0f} ms | {cuts[18] * 1000:.0f} ms | {max(values) * 1000:.0f} ms"


def fairness(url: str, texts: list[str], seconds: float, limit: int) -> tuple[str, int, list[float], int]:
    """The large request in a loop beside 1-text requests; (a table row, large texts, large latencies, tokens)."""
    long_text = " ".join(texts)[:1_800]
    with httpx.Client(base_url=url, timeout=600) as http:
        per_text = http.post("/v1/embeddings", json={"input": [long_text], "instruction": QUESTION}).json()
        tokens = per_text["usage"]["prompt_tokens"]
    count = limit // (tokens + 4)  # each text gets its number in front, a few tokens more
    large = {"input": [f"{i}: {long_text}" for i in range(count)], "instruction": QUESTION, "encoding_format": "base64"}
    stop = time.monotonic() + seconds
    small_latencies: list[float] = []
    large_latencies: list[float] = []

    def big() -> None:
        with httpx.Client(base_url=url, timeout=3600) as http:
            while time.monotonic() < stop:
                started = time.perf_counter()
                response = http.post("/v1/embeddings", json=large)
                if response.status_code != 200:
                    raise RuntimeError(f"the large request was refused: {response.text[:300]}")
                large_latencies.append(time.perf_counter() - started)

    thread = threading.Thread(target=big)
    thread.start()
    time.sleep(2)  # the large request is in and running
    with httpx.Client(base_url=url, timeout=600) as http:
        rng = random.Random(0)
        while time.monotonic() < stop:
            body = {"input": [rng.choice(texts)], "instruction": QUESTION}
            started = time.perf_counter()
            http.post("/v1/embeddings", json=body).raise_for_status()
            small_latencies.append(time.perf_counter() - started)
    thread.join()
    return quantiles(small_latencies), count, large_latencies, tokens * count


def soak(url: str, pid: int, texts: list[str], seconds: float, clients: int) -> list[tuple[float, float]]:
    """``clients`` threads of small requests for ``seconds``; (elapsed, RSS MiB) every 10 s."""
    stop = time.monotonic() + seconds
    questions = [QUESTION, "What kind of product is being reviewed?", "What does the reviewer complain about?"]
    failures: list[str] = []

    def client(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=url, timeout=600) as http:
            while time.monotonic() < stop:
                body = {"input": rng.sample(texts, rng.randint(1, 8)), "instruction": rng.choice(questions)}
                response = http.post("/v1/embeddings", json=body)
                if response.status_code != 200:
                    failures.append(response.text[:200])

    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    samples = [(0.0, rss_mib(pid))]
    while time.monotonic() < stop:
        time.sleep(10)
        samples.append((time.monotonic() - started, rss_mib(pid)))
    for thread in threads:
        thread.join()
    if failures:
        raise RuntimeError(f"{len(failures)} requests failed, first: {failures[0]}")
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--fairness", type=float, default=120, help="seconds of the large-request run (0: skip)")
    parser.add_argument("--soak", type=float, default=600, help="seconds of the soak (0: skip)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--max-request-tokens", type=int, default=262_144, help="the server's default limit")
    args = parser.parse_args()
    texts = pd.read_csv(REVIEWS)["text"].astype(str).tolist()
    server = start_server(args.model, args.port)
    url = f"http://127.0.0.1:{args.port}"
    try:
        print(f"server up: {rss_mib(server.pid):.0f} MiB resident")
        if args.fairness:
            row, count, large, tokens = fairness(url, texts, args.fairness, args.max_request_tokens)
            print(
                f"\nlarge request: {count} texts of 1,800 characters, {tokens:,} prompt tokens; sent {len(large)} "
                f"times, {statistics.mean(large):.1f} s each"
                if large
                else "large request never finished"
            )
            print("| 1-text requests beside it | p50 | p95 | max |\n|---|---|---|---|")
            print(f"| {row} |")
        if args.soak:
            samples = soak(url, server.pid, texts, args.soak, args.clients)
            print(f"\nsoak, {args.clients} clients, {args.soak:.0f} s: resident MiB every 10 s")
            print(", ".join(f"{mib:.0f}" for _, mib in samples))
            first, warm, last = samples[0][1], samples[min(3, len(samples) - 1)][1], samples[-1][1]
            print(
                f"start {first:.0f} MiB, after 30 s {warm:.0f} MiB, end {last:.0f} MiB: "
                f"{(last / warm - 1) * 100:+.1f}% from 30 s, peak {max(m for _, m in samples):.0f} MiB"
            )
    finally:
        server.terminate()
        server.wait(timeout=120)


if __name__ == "__main__":
    main()
