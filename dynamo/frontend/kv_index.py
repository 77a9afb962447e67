"""KV-aware routing: which worker already holds a request's prompt in its KV cache, and how busy
each worker is, weighed into one choice.

The index maps each block hash (kv_events.block_hashes: a hash names a whole prefix) to the
workers holding it; following a prompt's hashes until a worker no longer holds one gives that
worker's cached prefix, so the table is the prefix tree of every worker's blocks. Two modes:

- kv: the workers' own events fill it (kv_events.py), so it knows what each cache really holds,
  evictions included; a worker's blocks leave it when its connection breaks or it leaves discovery.
- kv-approx: no events; each routing decision predicts that the chosen worker now holds the
  request's blocks, for `ttl` seconds. Works with any engine.

The choice: the worker with the lowest cost, in blocks,

    cost = weight × (request blocks not cached there + blocks queued for prefill there)
           + blocks held by the requests running there

`weight` (--kv-overlap-weight) prices a block of prefill against a block of running work: higher
favours cache hits (time to first token), lower spreads the load (time between tokens). Ties go to
the next in turn. The default, 2.0, is measured (benchmarks/kv_routing.py, tight cache, 2 workers,
2026-12-03): weight 1.0 (upstream's default) cached 74 % of the prompt tokens, 1.5 85 %, 2.0 86 %,
3.0 96 % but with a longer TTFT tail (p99 656 ms against 378 ms at 2.0), as one worker takes most
of the load. A shared block counts once in a worker's running work, as it does in its memory.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from dynamo.runtime.kv_events import DEFAULT_BLOCK_SIZE, block_hashes, prompt_tokens

if TYPE_CHECKING:
    from dynamo.frontend.metrics import Metrics
    from dynamo.runtime.discovery import Instance
    from dynamo.runtime.protocol import GenerateRequest


class Client(Protocol):
    """What choosing needs of a worker's connection (router.WorkerClient): the worker it reaches."""

    @property
    def instance(self) -> Instance: ...


AnyClient = TypeVar("AnyClient", bound=Client)

DEFAULT_WEIGHT = 2.0
DEFAULT_TTL = 120.0  # seconds a kv-approx prediction lasts, as upstream's


class KvIndex:
    """Block hash → {worker: when the entry expires}; for events, never (infinity)."""

    def __init__(self, ttl: float | None = None) -> None:
        self.ttl = ttl
        self.blocks: dict[int, dict[str, float]] = {}
        self.of_worker: dict[str, set[int]] = {}
        self._next_purge = 0.0

    def store(self, worker: str, hashes: list[int], now: float = 0.0) -> None:
        expiry = now + self.ttl if self.ttl is not None else math.inf
        held = self.of_worker.setdefault(worker, set())
        for block in hashes:
            self.blocks.setdefault(block, {})[worker] = expiry
            held.add(block)
        if self.ttl is not None and now >= self._next_purge:
            self._purge(now)

    def remove(self, worker: str, hashes: list[int]) -> None:
        held = self.of_worker.get(worker, set())
        for block in hashes:
            holders = self.blocks.get(block)
            if holders is not None and holders.pop(worker, None) is not None and not holders:
                del self.blocks[block]
            held.discard(block)

    def drop(self, worker: str) -> None:
        """The worker is gone, or starts over: none of its blocks count any more."""
        self.remove(worker, list(self.of_worker.pop(worker, ())))

    def apply(self, worker: str, event: dict[str, Any]) -> None:
        """A worker's event (kv_events.kv_frame's body)."""
        if event.get("clear"):
            self.drop(worker)
        self.remove(worker, event.get("removed", ()))
        self.store(worker, event.get("stored", ()))

    def overlaps(self, hashes: list[int], now: float = 0.0) -> dict[str, int]:
        """Each worker's cached prefix of `hashes`, in blocks (workers with none left out)."""
        found: dict[str, int] = {}
        matching: set[str] | None = None
        for depth, block in enumerate(hashes, 1):
            holders = self.blocks.get(block)
            if not holders:
                break
            here = {worker for worker, expiry in holders.items() if expiry > now}
            matching = here if matching is None else matching & here
            if not matching:
                break
            for worker in matching:
                found[worker] = depth
        return found

    def _purge(self, now: float) -> None:
        for worker, held in self.of_worker.items():
            self.remove(worker, [block for block in held if self.blocks[block][worker] <= now])
        self._next_purge = now + self.ttl / 4


@dataclass
class Load:
    """A worker's work routed from here and not finished: its blocks (shared ones once) and the
    blocks still to prefill."""
    held: Counter = field(default_factory=Counter)
    prefill_blocks: int = 0


class Ticket:
    """One routed request's place in its worker's load, until `done`."""

    def __init__(self, load: Load, hashes: list[int], prefill_blocks: int) -> None:
        self.load, self.hashes, self.prefill_blocks = load, hashes, prefill_blocks
        load.held.update(hashes)
        load.prefill_blocks += prefill_blocks

    def prefilled(self) -> None:
        """The first token came: the prompt is computed."""
        self.load.prefill_blocks -= self.prefill_blocks
        self.prefill_blocks = 0

    def done(self) -> None:
        self.prefilled()
        self.load.held.subtract(self.hashes)
        for block in self.hashes:
            if self.load.held[block] <= 0:
                del self.load.held[block]
        self.hashes = []


class KvRouting:
    """The choice of a worker for each request, by KV cache overlap and load (the module's docstring)."""

    def __init__(self, approximate: bool = False, weight: float = DEFAULT_WEIGHT, ttl: float = DEFAULT_TTL,
                 block_size: int = DEFAULT_BLOCK_SIZE, metrics: Metrics | None = None) -> None:
        self.approximate = approximate
        self.weight = weight
        self.ttl = ttl
        self.metrics = metrics
        self.block_size = block_size
        self.block_sizes: dict[str, int] = {}  # model → its workers' block size, as they announce it
        self.indexes: dict[str, KvIndex] = {}  # model → its workers' blocks
        self.loads: dict[str, Load] = {}
        self._turn = itertools.count()

    def index(self, model: str) -> KvIndex:
        found = self.indexes.get(model)
        if found is None:
            found = self.indexes[model] = KvIndex(self.ttl if self.approximate else None)
        return found

    def on_event(self, worker: str, model: str, event: dict[str, Any]) -> None:
        self.block_sizes[model] = event.get("block_size", self.block_size)
        self.index(model).apply(worker, event)

    def forget(self, worker: str, model: str) -> None:
        """The worker left: its blocks and load go."""
        self.index(model).drop(worker)
        self.loads.pop(worker, None)

    def choose(self, request: GenerateRequest, choices: list[AnyClient]) -> tuple[AnyClient, Ticket]:
        hashes = block_hashes(prompt_tokens(request), self.block_sizes.get(request.model, self.block_size))
        now = time.monotonic()
        index = self.index(request.model)
        overlaps = index.overlaps(hashes, now)
        turn = next(self._turn)
        best: tuple[float, int] | None = None
        chosen = choices[0]
        for position, client in enumerate(choices):
            worker = client.instance.id
            load = self.loads.get(worker) or Load()
            cost = (self.weight * (len(hashes) - overlaps.get(worker, 0) + load.prefill_blocks)
                    + len(load.held))
            key = (cost, (position - turn) % len(choices))
            if best is None or key < best:
                best, chosen = key, client
        worker = chosen.instance.id
        overlap = overlaps.get(worker, 0)
        if self.approximate:
            index.store(worker, hashes, now)
        if self.metrics:
            self.metrics.kv_decisions.labels(worker, request.model).inc()
            self.metrics.kv_overlap.labels(request.model).observe(overlap / len(hashes) if hashes else 0.0)
        load = self.loads.get(worker)
        if load is None:
            load = self.loads[worker] = Load()
        return chosen, Ticket(load, hashes, len(hashes) - overlap)
