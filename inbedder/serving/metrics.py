"""The server's Prometheus metrics, in a registry of their own (one per app)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    """Requests by route and status, texts embedded, merged batch sizes, queue depth, request latency."""

    def __init__(self, queue_depth: Callable[[], float]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "inbedder_requests", "HTTP requests by route and status", ["route", "status"], registry=self.registry
        )
        self.texts = Counter("inbedder_texts", "Texts embedded", registry=self.registry)
        self.batch_texts = Histogram(
            "inbedder_batch_texts", "Texts per merged encode call", buckets=BATCH_BUCKETS, registry=self.registry
        )
        self.latency = Histogram(
            "inbedder_request_seconds",
            "Embedding request latency, from arrival to response",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        depth = Gauge("inbedder_queue_texts", "Texts waiting for the model", registry=self.registry)
        depth.set_function(queue_depth)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
