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

from contract_helpers import KV_BLOCK, check_kv_relay, engine

from dynamo.runtime.engine_kv_events import relayed

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


def engine_hash(tokens: list[int]) -> bytes:
    """A block hash in vLLM's default form (bytes; an int with VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES)."""
    return repr(tokens).encode()


def stored(tokens: list[int], start: int, medium: str) -> BlockStored:
    ends = range(start + KV_BLOCK, len(tokens) + 1, KV_BLOCK)
    return BlockStored(block_hashes=[engine_hash(tokens[:end]) for end in ends],
                       parent_block_hash=engine_hash(tokens[:start]) if start else None,
                       token_ids=tokens[start:], block_size=KV_BLOCK, lora_id=None, medium=medium, lora_name=None)


@unittest.skipUnless(vllm, MISSING)
class VllmKvEventsContract(unittest.TestCase):
    def test_vllms_events_reach_the_frontends_index_in_its_hashes(self):
        asyncio.run(self.scenario())

    async def scenario(self) -> None:
        relay, flags = relayed(["--enforce-eager"], 16, KVEventBatch)
        args = argparse.Namespace(model="Qwen/Qwen3-0.6B", model_path=None, context_length=None)
        config = adapter.parse_engine_args(adapter.engine_argv(args, flags)).kv_events_config
        self.assertIsInstance(config, KVEventsConfig)
        self.assertTrue(config.enable_kv_cache_events)
        relay.start()
        publisher = EventPublisherFactory.create(config)  # vLLM's own ZmqEventPublisher, connected to the relay
        try:
            await check_kv_relay(
                self, relay, lambda events: publisher.publish(KVEventBatch(ts=time.time(), events=events)), stored,
                lambda tokens: BlockRemoved(block_hashes=[engine_hash(tokens)], medium="GPU"), AllBlocksCleared)
        finally:
            publisher.shutdown()
            relay.close()


if __name__ == "__main__":
    unittest.main()
