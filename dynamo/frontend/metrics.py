"""The frontend's Prometheus metrics, in a registry of their own. With several frontend processes
(PROMETHEUS_MULTIPROC_DIR set before prometheus_client is imported) every process writes its
values to that directory and /metrics, from any process, adds them up."""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

PREFIX = "dynamo_frontend"
# Seconds, from sub-millisecond (the mocker) to a long prefill.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# Tokens, from a one-word answer to a long context.
LENGTH_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class ModelMetrics:
    """One model's series of the metrics every request touches, looked up once (labels() costs a lock
    and checks on every call). Rare events (disconnects, migrations) keep labels(): their series
    appear when they first happen."""
    __slots__ = ("inflight", "queued", "ttft", "itl", "duration", "output_tokens", "input_length", "output_length")

    def __init__(self, metrics: Metrics, model: str) -> None:
        for name in self.__slots__:
            setattr(self, name, getattr(metrics, name).labels(model))


class Metrics:
    def __init__(self) -> None:
        self._models: dict[str, ModelMetrics] = {}
        self._requests: dict[tuple[str, ...], Counter] = {}
        self.registry = CollectorRegistry()
        self.requests = Counter(f"{PREFIX}_requests", "HTTP requests answered",
                                ["model", "endpoint", "request_type", "status"], registry=self.registry)
        self.inflight = Gauge(f"{PREFIX}_inflight_requests", "Requests being answered now", ["model"],
                              registry=self.registry, multiprocess_mode="livesum")
        self.queued = Gauge(f"{PREFIX}_queued_requests", "Requests waiting for their first token", ["model"],
                            registry=self.registry, multiprocess_mode="livesum")
        self.ttft = Histogram(f"{PREFIX}_time_to_first_token_seconds", "From request to the first token",
                              ["model"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.itl = Histogram(f"{PREFIX}_inter_token_latency_seconds", "Between consecutive tokens",
                             ["model"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.duration = Histogram(f"{PREFIX}_request_duration_seconds", "From request to the last token",
                                  ["model"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.output_tokens = Counter(f"{PREFIX}_output_tokens", "Tokens generated", ["model"],
                                     registry=self.registry)
        self.input_length = Histogram(f"{PREFIX}_input_sequence_tokens", "Prompt length of each answer, in tokens",
                                      ["model"], buckets=LENGTH_BUCKETS, registry=self.registry)
        self.output_length = Histogram(f"{PREFIX}_output_sequence_tokens", "Length of each answer, in tokens",
                                       ["model"], buckets=LENGTH_BUCKETS, registry=self.registry)
        self.disconnects = Counter(f"{PREFIX}_client_disconnects", "Clients that left before their answer ended",
                                   ["model"], registry=self.registry)
        self.migrations = Counter(f"{PREFIX}_model_migrations", "Answers moved to another worker when theirs died",
                                  ["model"], registry=self.registry)
        self.worker_inflight = Gauge(f"{PREFIX}_worker_inflight_requests", "Requests each worker is answering now",
                                     ["worker", "model"], registry=self.registry, multiprocess_mode="livesum")
        self.worker_errors = Counter(f"{PREFIX}_worker_errors", "Requests a worker failed (status) or dropped (gone)",
                                     ["worker", "model", "kind"], registry=self.registry)

        # KV-aware routing (kv_index.py). A worker's cached fraction: cached_prompt_tokens / prompt_tokens.
        self.worker_prompt_tokens = Counter(f"{PREFIX}_worker_prompt_tokens", "Prompt tokens each worker answered",
                                            ["worker", "model"], registry=self.registry)
        self.worker_cached_tokens = Counter(f"{PREFIX}_worker_cached_prompt_tokens",
                                            "Prompt tokens each worker found in its KV cache", ["worker", "model"],
                                            registry=self.registry)
        self.kv_decisions = Counter(f"{PREFIX}_kv_routing_decisions", "Requests the KV router sent to each worker",
                                    ["worker", "model"], registry=self.registry)
        self.kv_overlap = Histogram(f"{PREFIX}_kv_routing_overlap_fraction",
                                    "Part of each request's prompt blocks the chosen worker held, as the router saw it",
                                    ["model"], buckets=(0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 1), registry=self.registry)

    def of(self, model: str) -> ModelMetrics:
        found = self._models.get(model)
        if found is None:
            found = self._models[model] = ModelMetrics(self, model)
        return found

    def count_request(self, model: str, endpoint: str, request_type: str, status: str) -> None:
        key = (model, endpoint, request_type, status)
        child = self._requests.get(key)
        if child is None:
            child = self._requests[key] = self.requests.labels(*key)
        child.inc()

    def exposition(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client.multiprocess import MultiProcessCollector

            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)

    def worker_inflight_totals(self) -> dict[str, int] | None:
        """Each worker's requests in flight from all the frontend's processes; None with one process
        (whose own counts are the whole truth)."""
        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            return None
        from prometheus_client.multiprocess import MultiProcessCollector

        name = f"{PREFIX}_worker_inflight_requests"
        for family in MultiProcessCollector(None).collect():
            if family.name == name:
                return {sample.labels["worker"]: int(sample.value) for sample in family.samples}
        return {}
