"""Several async streams read as one, each item as it comes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TypeVar

Item = TypeVar("Item")


async def interleave(streams: list[AsyncIterator[Item]]) -> AsyncIterator[tuple[int, Item]]:
    """(the stream's position in `streams`, its item), in the order the items come, until every
    stream has ended. A stream's error is raised here; closing this closes the streams."""
    queue: asyncio.Queue = asyncio.Queue()
    end = object()

    async def pump(number: int, stream: AsyncIterator[Item]) -> None:
        try:
            async for item in stream:
                queue.put_nowait((number, item))
        except Exception as error:  # handed to the reader, raised there
            queue.put_nowait((number, error))
        queue.put_nowait((number, end))

    tasks = [asyncio.create_task(pump(number, stream)) for number, stream in enumerate(streams)]
    try:
        running = len(tasks)
        while running:
            number, item = await queue.get()
            if item is end:
                running -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield number, item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
