"""The frontend's server-sent events leave together: the headers with the first events, what one turn
of the event loop sends as one HTTP chunk in one write, in order; a client that left is
ConnectionResetError to the sender."""

from __future__ import annotations

import asyncio
import socket

from aiohttp import web

from dynamo.frontend.events import EventResponse, EventStream


async def serve(handler) -> tuple[web.AppRunner, int]:
    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


async def chunks(port: int) -> list[bytes]:
    """The response's HTTP chunks as they came, read raw."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    await reader.readuntil(b"\r\n\r\n")
    found = []
    while size := int((await reader.readline()).strip(), 16):
        found.append(await reader.readexactly(size))
        await reader.readline()
    writer.close()
    return found


def test_a_turns_events_leave_in_one_write_with_the_headers_in_order():
    writes = []

    async def handler(request: web.Request) -> web.StreamResponse:
        transport = request.transport
        send = transport.write
        transport.write = lambda data: writes.append(bytes(data)) or send(data)  # asyncio's own loop: a Python class
        transport.writelines = lambda chunks: transport.write(b"".join(chunks))
        stream = EventResponse()
        await stream.prepare(request)
        events = EventStream(stream)
        for number in range(3):
            events.send(b"data: %d\n\n" % number)
        await asyncio.sleep(0.05)  # the next turns
        events.send(b"data: 3\n\n")
        events.send(b"data: 4\n\n")
        await events.close(b"data: [DONE]\n\n")
        return stream

    async def main() -> list[bytes]:
        runner, port = await serve(handler)
        try:
            return await chunks(port)
        finally:
            await runner.cleanup()

    assert asyncio.run(main()) == [b"data: 0\n\ndata: 1\n\ndata: 2\n\n", b"data: 3\n\ndata: 4\n\ndata: [DONE]\n\n"]
    assert len(writes) == 2 and writes[0].startswith(b"HTTP/1.1 200") and writes[1].endswith(b"0\r\n\r\n")


def test_a_client_that_left_is_a_connection_reset_for_the_sender():
    outcome: list[str] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        stream = EventResponse()
        await stream.prepare(request)
        events = EventStream(stream)
        try:
            for _ in range(200):
                events.send(b"data: x\n\n")
                await asyncio.sleep(0.01)
            await events.close()
            outcome.append("closed")
        except ConnectionResetError:
            outcome.append("reset")
        return stream

    async def main() -> None:
        runner, port = await serve(handler)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            await reader.readuntil(b"data: x")
            writer.transport.abort()
            for _ in range(300):
                if outcome:
                    return
                await asyncio.sleep(0.01)
        finally:
            await runner.cleanup()

    asyncio.run(main())
    assert outcome == ["reset"]
