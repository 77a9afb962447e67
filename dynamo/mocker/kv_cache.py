"""The mocker's paged KV cache: a fixed number of blocks, each holding `block_size` prompt tokens
named by its chained hash (kv_events.block_hashes), shared by every request with that prefix.

A request holds its prompt's blocks while it runs; blocks nobody holds stay cached until room is
needed, and then the least recently used go first. When every block is held, a request's further
blocks are computed but not kept (a real engine would make it wait; the mocker only loses the
reuse). Every block stored or evicted is published to the subscribed frontends.
"""

from __future__ import annotations

from collections import OrderedDict

from dynamo.runtime.kv_events import KvPublisher


class KvCache:
    def __init__(self, block_size: int, capacity: int) -> None:
        self.block_size = block_size
        self.capacity = capacity
        self.events = KvPublisher(block_size, self.blocks)
        self.held: dict[int, int] = {}  # block → requests holding it
        self.free: OrderedDict[int, None] = OrderedDict()  # blocks nobody holds, least recently used first

    def blocks(self) -> list[int]:
        return [*self.held, *self.free]

    def cached_prefix(self, hashes: list[int]) -> int:
        """How many of the leading blocks are in the cache."""
        count = 0
        for block in hashes:
            if block not in self.held and block not in self.free:
                break
            count += 1
        return count

    def acquire(self, hashes: list[int]) -> tuple[int, list[int]]:
        """Hold the request's blocks: (how many leading blocks were cached, the blocks now held,
        which `release` gives back)."""
        cached = self.cached_prefix(hashes)
        taken: list[int] = []
        stored: list[int] = []
        removed: list[int] = []
        for block in hashes:
            if block in self.held:
                self.held[block] += 1
            elif block in self.free:
                del self.free[block]
                self.held[block] = 1
            else:
                if len(self.held) + len(self.free) >= self.capacity:
                    if not self.free:
                        break  # all held: the rest of this prompt is not kept
                    removed.append(self.free.popitem(last=False)[0])
                self.held[block] = 1
                stored.append(block)
            taken.append(block)
        self.events.publish(stored, removed)
        return cached, taken

    def release(self, taken: list[int]) -> None:
        """The request ended: its blocks stay cached, most recently used last (a prompt's last
        block is evicted before its first, which other prompts are likelier to share)."""
        for block in reversed(taken):
            self.held[block] -= 1
            if not self.held[block]:
                del self.held[block]
                self.free[block] = None
