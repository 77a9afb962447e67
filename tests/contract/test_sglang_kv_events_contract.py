"""SGLang's own KV cache events, through the SGLang adapter's relay, into the frontend's KV index: the
--kv-events-config the adapter adds, read by SGLang's own EventPublisherFactory (as its scheduler
reads it), makes SGLang's own ZmqEventPublisher, which sends real KVEventBatch, BlockStored,
BlockRemoved and AllBlocksCleared objects; the relay must name the blocks exactly as the frontend
hashes the prompt's token ids. Standard library only (it runs in the image). It needs only SGLang's
kv_events module (msgspec, pyzmq, pydantic), not the whole engine."""

from __future__ import annotations

import asyncio
import time
import unittest

from contract_helpers import KV_BLOCK, check_kv_relay, engine

from dynamo.runtime.engine_kv_events import relayed

kv_events, MISSING = engine("sglang", "sglang.srt.disaggregation.kv_events")
if kv_events is not None:
    from sglang.srt.disaggregation.kv_events import (
        AllBlocksCleared,
        BlockRemoved,
        BlockStored,
        EventPublisherFactory,
        KVEventBatch,
        StorageMedium,
    )


def engine_hash(tokens: list[int]) -> int:
    """A block hash as SGLang's radix cache gives one (an int of its own)."""
    return hash(repr(tokens)) & 0x7FFFFFFFFFFFFFFF


def stored(tokens: list[int], start: int, medium: str) -> BlockStored:
    ends = range(start + KV_BLOCK, len(tokens) + 1, KV_BLOCK)
    return BlockStored(block_hashes=[engine_hash(tokens[:end]) for end in ends],
                       parent_block_hash=engine_hash(tokens[:start]) if start else None,
                       token_ids=tokens[start:], block_size=KV_BLOCK, lora_id=None,
                       medium=StorageMedium.GPU.value if medium == "GPU" else StorageMedium.CPU.value)


@unittest.skipUnless(kv_events, MISSING)
class SglangKvEventsContract(unittest.TestCase):
    def test_sglangs_events_reach_the_frontends_index_in_its_hashes(self):
        asyncio.run(self.scenario())

    async def scenario(self) -> None:
        relay, flags = relayed(["--page-size", "16"], 16, KVEventBatch)
        config = flags[flags.index("--kv-events-config") + 1]  # the JSON string SGLang's scheduler is given
        relay.start()
        publisher = EventPublisherFactory.create(config)  # SGLang's own ZmqEventPublisher, connected to the relay
        try:
            self.assertIsInstance(publisher, kv_events.ZmqEventPublisher)
            await check_kv_relay(
                self, relay, lambda events: publisher.publish(KVEventBatch(ts=time.time(), events=events)), stored,
                lambda tokens: BlockRemoved(block_hashes=[engine_hash(tokens)], medium=StorageMedium.GPU.value),
                AllBlocksCleared)
        finally:
            publisher.shutdown()
            relay.close()


if __name__ == "__main__":
    unittest.main()
