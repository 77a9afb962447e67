"""The frontend's Prometheus metrics, in a registry of their own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

PREFIX = "dynamo_frontend"
# Seconds, from sub-millisecond (the mocker) to a long prefill.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(f"{PREFIX}_requests", "HTTP requests answered",
                                ["model", "endpoint", "request_type", "status"], registry=self.registry)
        self.inflight = Gauge(f"{PREFIX}_inflight_requests", "Requests being answered now", ["model"],
                              registry=self.registry)
        self.ttft = Histogram(f"{PREFIX}_time_to_first_token_seconds", "From request to the first token",
                              ["model"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.itl = Histogram(f"{PREFIX}_inter_token_latency_seconds", "Between consecutive tokens",
                             ["model"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.duration = Histogram(f"{PREFIX}_request_duration_seconds", "From request to the last token",
                                  ["model"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.output_tokens = Counter(f"{PREFIX}_output_tokens", "Tokens generated", ["model"],
                                     registry=self.registry)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
