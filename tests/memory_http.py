"""An aiohttp app served over an in-memory transport: the exact bytes aiohttp's server writes.

aiohttp's real server protocol (`web.AppRunner`, its request parser, keep-alive, HTTP/1.0,
pipelining, compression) runs unchanged; only the socket is replaced, so one exchange
takes about a millisecond and property tests can afford hundreds of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from aiohttp import web

#: Upper bound on one exchange (compression of large bodies runs in a thread).
EXCHANGE_SECONDS = 10.0


class MemoryTransport(asyncio.Transport):
    """Keeps what is written; closing it tells the protocol, as a socket's loop would."""

    def __init__(self, protocol: asyncio.Protocol) -> None:
        super().__init__()
        self.data = bytearray()
        self.closed = False
        self._protocol = protocol

    def write(self, data: Any) -> None:
        self.data += data

    def writelines(self, chunks: Iterable[Any]) -> None:
        for chunk in chunks:
            self.data += chunk

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            asyncio.get_running_loop().call_soon(self._protocol.connection_lost, None)

    def abort(self) -> None:
        self.close()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8080)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


async def exchange(runner: web.AppRunner, raw: bytes) -> bytes:
    """Feed `raw` (one or more requests) to a new connection; return everything the server
    wrote once it has answered them all and waits for more, or has closed."""
    server = runner.server
    assert server is not None
    protocol = server()
    transport = MemoryTransport(protocol)
    protocol.connection_made(transport)
    protocol.data_received(raw)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + EXCHANGE_SECONDS
    turns = 0
    while not transport.closed and not _idle(protocol):
        turns += 1
        await asyncio.sleep(0 if turns < 200 else 0.001)
        if loop.time() > deadline:
            raise TimeoutError(f"no complete answer; so far: {bytes(transport.data)[:300]!r}")
    transport.close()
    await asyncio.sleep(0)
    return bytes(transport.data)


def _idle(protocol: Any) -> bool:
    # Waiting for the next request with none queued: every request sent was answered.
    # (aiohttp's private state, read by this harness only.)
    return protocol._waiter is not None and not protocol._messages


async def serve(app: web.Application, raw: bytes) -> bytes:
    """`exchange` on a runner of its own for `app`."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        return await exchange(runner, raw)
    finally:
        await runner.cleanup()
