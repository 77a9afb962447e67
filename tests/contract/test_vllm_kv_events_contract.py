"""vLLM's own KV cache events, through the vLLM adapter's relay, into the frontend's KV index: the
--kv-events-config the adapter adds, parsed by vLLM's own argument parser, makes vLLM's own
ZmqEventPublisher (EventPublisherFactory.create, as vLLM's scheduler makes it), which sends real
KVEventBatch, BlockStored, BlockRemoved and AllBlocksCleared objects; the relay must name the blocks
exactly as the frontend hashes the prompt's token ids. Standard library only (it runs in the image)."""

from __future__ import annotations

import argparse
import asyncio
import time
import unittest

from contract_helpers import Frames, engine

from dynamo.frontend.kv_index import KvIndex
from dynamo.runtime.engine_kv_events import relayed
from dynamo.runtime.kv_events import block_hashes

vllm, MISSING = engine("vllm", "vllm")
if vllm is not None:
    from vllm.config.kv_events import KVEventsConfig
    from vllm.distributed.kv_events import (
        AllBlocksCleared,
        BlockRemoved,
        BlockStored,
        EventPublisherFactory,
        KVEventBatch,
    )

    from dynamo.vllm import engine as adapter

BLOCK = 4
PROMPT = list(range(100, 112))  # three blocks
OTHER = [*PROMPT[:4], 7, 7, 7, 7]  # shares the first block


def engine_hash(tokens: list[int]) -> bytes:
    """A block hash in vLLM's default form (bytes; an int with VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES)."""
    return repr(tokens).encode()


def stored(tokens: list[int], parent: list[int] | None, start: int = 0) -> BlockStored:
    blocks = [tokens[:end] for end in range(start + BLOCK, len(tokens) + 1, BLOCK)]
    return BlockStored(block_hashes=[engine_hash(block) for block in blocks],
                       parent_block_hash=None if parent is None else engine_hash(parent),
                       token_ids=tokens[start:], block_size=BLOCK, lora_id=None, medium="GPU", lora_name=None)


async def wait_for(frames: Frames, count: int) -> None:
    deadline = time.monotonic() + 10
    while len(frames.frames) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"{count - len(frames.frames)} KV event frames did not come: {frames.frames}")
        await asyncio.sleep(0.01)


@unittest.skipUnless(vllm, MISSING)
class VllmKvEventsContract(unittest.TestCase):
    def test_vllms_events_reach_the_frontends_index_in_its_hashes(self):
        asyncio.run(self.scenario())

    async def scenario(self) -> None:
        relay, flags = relayed(["--enforce-eager"], 16)
        args = argparse.Namespace(model="Qwen/Qwen3-0.6B", model_path=None, context_length=None)
        config = adapter.parse_engine_args(adapter.engine_argv(args, flags)).kv_events_config
        self.assertIsInstance(config, KVEventsConfig)
        self.assertTrue(config.enable_kv_cache_events)
        relay.start()
        publisher = EventPublisherFactory.create(config)  # vLLM's own ZmqEventPublisher, connected to the relay
        try:
            frames = Frames()
            relay.publisher.subscribe(frames)  # as a frontend's subscription does: all held now (nothing)
            self.assertEqual(frames.frames, [{"id": 0, "kv": {"block_size": 16, "clear": True}}])
            # A PUB socket drops what it sends before the connection stands: knock until it does.
            while len(frames.frames) == 1:
                publisher.publish(KVEventBatch(ts=time.time(), events=[AllBlocksCleared()]))
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.2)
            frames.frames.clear()

            publisher.publish(KVEventBatch(ts=time.time(), events=[stored(PROMPT, None)]))
            publisher.publish(KVEventBatch(ts=time.time(), events=[
                stored(OTHER, PROMPT[:4], start=4),
                BlockStored(block_hashes=[b"cpu copy"], parent_block_hash=None, token_ids=PROMPT[:4],
                            block_size=BLOCK, lora_id=None, medium="CPU", lora_name=None),
                BlockRemoved(block_hashes=[engine_hash(PROMPT[:12])], medium="GPU")]))
            await wait_for(frames, 3)
            index = KvIndex()
            for frame in frames.frames:
                self.assertEqual(frame["kv"]["block_size"], BLOCK)  # the worker now advertises vLLM's
                index.apply("worker", frame["kv"])
            ours, other = block_hashes(PROMPT, BLOCK), block_hashes(OTHER, BLOCK)
            self.assertEqual([frame["kv"].get("stored") for frame in frames.frames], [ours, other[1:], None])
            self.assertEqual(frames.frames[2]["kv"]["removed"], ours[2:])
            self.assertEqual(index.overlaps(ours), {"worker": 2})
            self.assertEqual(index.overlaps(other), {"worker": 2})
            self.assertEqual(sorted(relay.translator.held()), sorted([*ours[:2], other[1]]))

            publisher.publish(KVEventBatch(ts=time.time(), events=[AllBlocksCleared()]))
            await wait_for(frames, 4)
            index.apply("worker", frames.frames[3]["kv"])
            self.assertEqual(index.overlaps(ours), {})
        finally:
            publisher.shutdown()
            relay.close()


if __name__ == "__main__":
    unittest.main()
