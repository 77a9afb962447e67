"""vLLM's and SGLang's own KV cache events, relayed to the frontend as ours (kv_events.py).

Both engines publish their block changes over ZMQ when given a `--kv-events-config` (vLLM's
KVEventsConfig, SGLang's as JSON): multipart messages (topic, sequence number, payload), the payload
a msgpack KVEventBatch of events BlockStored {block_hashes, parent_block_hash, token_ids, block_size,
medium, ...}, BlockRemoved {block_hashes, medium, ...} and AllBlocksCleared. Their wire layout differs
between versions (SGLang 0.5.11 sends each event as an array, SGLang 0.5.21 and vLLM as a map), so the
engine's own KVEventBatch class decodes them. The adapter binds a SUB socket on a free port of the
loopback interface and gives the engine that address: the engine's PUB socket connects to it.

The engine names a block by its own hash (vLLM's covers LoRA, multimodal inputs and cache salt too,
as bytes or an int; SGLang's is its own); the frontend names it by kv_events.block_hashes of the
prompt's token ids. So each stored block is hashed again from its token_ids, chained on our hash of
its parent, as upstream Dynamo's relay does, and the engine's hash is remembered so that its
removal can be told in our names. Engine blocks that share one of our hashes (the same tokens in two
KV cache groups of a hybrid model) count once: ours is stored with the first and removed with the
last. Left out, as no request of the frontend's could reuse them: blocks computed under a LoRA
adapter, a cache salt or multimodal inputs (which the engine's hash covers and ours does not), and
those of another tier than the GPU's (a CPU or disk copy is not what a prefill reuses without a
transfer); a block whose parent was left out is left out too.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from typing import Any

from dynamo.runtime.kv_events import ROOT, KvPublisher, chained_hash

log = logging.getLogger("dynamo.worker")

LOOPBACK = "127.0.0.1"
GPU_MEDIA = (None, "GPU")  # vLLM's MEDIUM_GPU, SGLang's StorageMedium.GPU; None: unspecified


class BlockTranslator:
    """An engine's block events as ours, published on `events` (whose block size follows the engine's)."""

    def __init__(self, events: KvPublisher) -> None:
        self.events = events
        self.ours: dict[Any, int] = {}  # engine block hash → ours
        self.holders: Counter[int] = Counter()  # our hash → engine blocks named by it

    def held(self) -> list[int]:
        return list(self.holders)

    def apply(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "AllBlocksCleared":
            self.ours.clear()
            self.holders.clear()
            self.events.publish([], [], clear=True)
        elif event.get("medium") not in GPU_MEDIA or _keyed(event):
            return
        elif kind == "BlockStored":
            self.events.publish(self._stored(event), [])
        elif kind == "BlockRemoved":
            self.events.publish([], self._removed(event["block_hashes"]))

    def _stored(self, event: dict[str, Any]) -> list[int]:
        parent_hash = event.get("parent_block_hash")
        parent = ROOT if parent_hash is None else self.ours.get(parent_hash)
        if parent is None:  # its parent was never told (events lost): the frontend could not reach it either
            log.debug("KV event: a block stored after an unknown parent; skipped")
            return []
        size = event["block_size"]
        self.events.block_size = size
        tokens = event["token_ids"]
        stored = []
        for number, engine_hash in enumerate(event["block_hashes"]):
            if engine_hash in self.ours:
                parent = self.ours[engine_hash]
                continue
            parent = self.ours[engine_hash] = chained_hash(parent, tokens[number * size:(number + 1) * size])
            self.holders[parent] += 1
            if self.holders[parent] == 1:
                stored.append(parent)
        return stored

    def _removed(self, engine_hashes: list[Any]) -> list[int]:
        removed = []
        for engine_hash in engine_hashes:
            ours = self.ours.pop(engine_hash, None)
            if ours is None:
                continue
            self.holders[ours] -= 1
            if not self.holders[ours]:
                del self.holders[ours]
                removed.append(ours)
        return removed


def _keyed(event: dict[str, Any]) -> bool:
    """Whether the engine's hash of these blocks covers more than their tokens (vLLM: lora_id,
    lora_name, extra_keys; SGLang: lora_id, cache_salt)."""
    return any(event.get(key) is not None for key in ("lora_id", "lora_name", "cache_salt")) \
        or any(keys for keys in event.get("extra_keys") or ())


class EngineKvEvents:
    """The SUB socket an engine's KV event publisher connects to (`endpoint`), and the relay of its
    events into `publisher` (the engine adapter's `kv_events`), started by `start()` on the running loop."""

    def __init__(self, block_size: int, batch: type) -> None:
        """`batch`: the engine's own KVEventBatch class, which decodes its batches."""
        import zmq
        import zmq.asyncio

        self.batch = batch
        self.publisher = KvPublisher(block_size, lambda: self.translator.held())
        self.translator = BlockTranslator(self.publisher)
        self.socket = zmq.asyncio.Context.instance().socket(zmq.SUB)
        self.socket.setsockopt(zmq.SUBSCRIBE, b"")
        self.endpoint = f"tcp://{LOOPBACK}:{self.socket.bind_to_random_port(f'tcp://{LOOPBACK}')}"
        self.task: Any = None

    def engine_config(self) -> dict[str, Any]:
        """The engine's --kv-events-config (the same fields in vLLM and SGLang)."""
        return {"enable_kv_cache_events": True, "publisher": "zmq", "endpoint": self.endpoint, "topic": "kv"}

    def start(self) -> None:
        import asyncio

        self.task = asyncio.get_running_loop().create_task(self.relay())

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        self.socket.close(linger=0)

    async def relay(self) -> None:
        import msgspec

        decoder = msgspec.msgpack.Decoder(self.batch)
        while True:
            *_, payload = await self.socket.recv_multipart()
            try:
                for event in decoder.decode(payload).events:
                    self.translator.apply({"type": type(event).__name__, **msgspec.structs.asdict(event)})
            except Exception as error:  # noqa: BLE001 - one unreadable batch must not end the relay
                log.warning("a KV event batch the worker cannot read (%s: %s); skipped", type(error).__name__, error)


def relayed(engine_flags: list[str], block_size: int, batch: type) -> tuple[EngineKvEvents | None, list[str]]:
    """The engine's flags with its KV event publisher pointed at a relay of ours, and the relay; no
    relay when the flags configure the publisher already (the user's wins, and the frontend then
    gets no events from this worker: route it with --router-mode kv-approx)."""
    if any(flag == "--kv-events-config" or flag.startswith("--kv-events-config=") for flag in engine_flags):
        log.info("--kv-events-config given: the engine publishes its KV events there, not to the frontend")
        return None, engine_flags
    relay = EngineKvEvents(block_size, batch)
    return relay, [*engine_flags, "--kv-events-config", json.dumps(relay.engine_config())]
