"""A lean, pipelined Redis connection for the store's batched lookups (MGET only).

redis-py spends most of a lookup's CPU in its own layers: a pool checkout, an async stream
reader that copies every reply into a buffer and out again, a parser loop in Python, the
release. An asyncio protocol that hands the socket's bytes straight to hiredis and
resolves one future per MGET does the same work for a fraction of it (bench/README.md,
"Redis lookups through a lean pipelined connection"; `python -m bench.lookups`).

The channel only reads. It connects like the store's redis-py pool (host and port, TLS or
a unix socket, username and password or a credential provider, database, client name),
which `redis_internals.channel_address` reads from the pool as a `ChannelAddress`, and
speaks RESP2. It is used only for pools whose connections it can reproduce exactly;
otherwise, e.g. behind Sentinel or with a test double, the store keeps using redis-py. A
failed, timed-out or cancelled MGET closes the connection (its replies can no longer be
matched to requests); the next batch reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol, cast

import hiredis

#: Bytes received per read, into one buffer kept for the connection's lifetime.
RECEIVE_BYTES: Final = 256 * 1024
#: hiredis frees its parse buffer whenever it is empty and holds more than this (default
#: 16 KB, less than one 13 KB entry plus framing); it is kept up to this size instead.
PARSE_BUFFER_BYTES: Final = 4 * 1024 * 1024


#: TCP keepalive: first probe after this many idle seconds, then every KEEPALIVE_INTERVAL
#: seconds; the connection is dropped after KEEPALIVE_PROBES unanswered probes.
KEEPALIVE_IDLE: Final = 30
KEEPALIVE_INTERVAL: Final = 10
KEEPALIVE_PROBES: Final = 3


@dataclass(frozen=True, slots=True)
class ChannelAddress:
    """Where and how the lookup channel connects: what a pool's connections would do."""

    host: str
    port: int
    unix_path: str | None
    #: Builds the TLS context of a `rediss://` pool (None: plain TCP or a unix socket).
    tls_context: Callable[[], ssl.SSLContext] | None
    #: The AUTH arguments (user and password, or password), None without credentials.
    credentials: Callable[[], Awaitable[Sequence[str | bytes]]] | None
    db: int
    client_name: str | None
    connect_timeout: float | None


#: hiredis's packer of commands (hiredis >= 2.1), in C; else `pack_command` does it itself.
HIREDIS_PACK: Final[Callable[[tuple[str | bytes, ...]], bytes] | None] = getattr(
    hiredis, "pack_command", None
)


class ChannelError(ConnectionError):
    """The lookup connection failed, closed, or Redis answered with an error."""


class ReplyWaiter(Protocol):
    """Who receives one reply: an `asyncio.Future`, or anything with these three methods
    (a lookup batch resolved straight from the connection's callback, `send_now`)."""

    def done(self) -> bool:
        """True once it needs no reply (answered, failed or given up)."""
        ...

    def set_result(self, result: Any, /) -> None:
        """The reply (never a Redis error: those go to `set_exception`)."""
        ...

    def set_exception(self, exception: BaseException, /) -> None:
        """The connection failed or Redis answered with an error."""
        ...


class ChannelConnection(asyncio.BufferedProtocol):
    """The socket side: requests are written in order and replies matched in order.

    Buffered: the event loop reads into one buffer of this connection and hiredis parses
    from it, so a batch allocates nothing but the values themselves. (Allocating and
    freeing a fresh 256 KB read buffer and a regrown parse buffer per batch made glibc
    return and re-fault heap pages: bench/README.md, "lookup channel reads into one
    buffer per connection".)
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiting: deque[ReplyWaiter] = deque()
        self.lost: BaseException | None = None
        self._reader = hiredis.Reader()
        self._reader.setmaxbuf(PARSE_BUFFER_BYTES)
        self._received = bytearray(RECEIVE_BYTES)
        self._view = memoryview(self._received)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not an isinstance check: other event loops' transports (uvloop's) are not
        # subclasses of asyncio.Transport, though they implement it.
        self.transport = cast(asyncio.Transport, transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._view

    def buffer_updated(self, nbytes: int) -> None:
        reader = self._reader
        reader.feed(self._received, 0, nbytes)  # type: ignore[arg-type]  # any buffer
        waiting = self.waiting
        while self.lost is None:  # a waiter's callback may have closed the connection
            try:
                reply = reader.gets()
            except hiredis.ProtocolError as exc:
                self.fail(ChannelError(f"malformed reply from Redis: {exc}"))
                return
            if reply is False:
                return
            if not waiting:
                self.fail(ChannelError("a reply from Redis nobody asked for"))
                return
            waiter = waiting.popleft()
            if waiter.done():
                continue  # its caller gave up (the connection is being closed anyway)
            if isinstance(reply, hiredis.ReplyError):
                waiter.set_exception(ChannelError(f"Redis answered: {reply}"))
            else:
                waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail_waiting(ChannelError(f"connection to Redis lost: {exc!r}"))

    def abandon(self) -> None:
        """Give up on the requests in flight (see `LookupChannel.send_now`): the connection
        is closed, since its later replies could no longer be matched to requests."""
        self.fail(ChannelError("an MGET was abandoned"))

    def fail(self, error: BaseException) -> None:
        """Close the connection and fail every request in flight with `error`."""
        self._fail_waiting(error)
        if self.transport is not None:
            self.transport.abort()

    def _fail_waiting(self, error: BaseException) -> None:
        if self.lost is None:
            self.lost = error
        while self.waiting:
            waiter = self.waiting.popleft()
            if not waiter.done():
                waiter.set_exception(error)

    def send(self, payload: bytes) -> asyncio.Future[Any]:
        """Write one command; the future resolves with its reply."""
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.send_to(payload, waiter)
        return waiter

    def closing(self) -> bool:
        """Whether the transport is gone or on its way out (nothing can be sent)."""
        return self.transport is None or self.transport.is_closing()

    def send_to(self, payload: bytes, waiter: ReplyWaiter) -> None:
        """Write one command; its reply goes to `waiter` (from the read callback)."""
        transport = self.transport
        if self.lost is not None or transport is None or transport.is_closing():
            raise ChannelError(f"connection to Redis closed: {self.lost!r}")
        self.waiting.append(waiter)
        transport.write(payload)


def keep_alive(sock: socket.socket | None) -> None:
    """TCP keepalive probes after `KEEPALIVE_IDLE` quiet seconds: a connection idle between
    bursts of traffic is not dropped by a NAT or firewall idle timeout, and a dead peer is
    noticed within about a minute instead of by the next batch's timeout."""
    if sock is None:
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (
        ("TCP_KEEPIDLE", KEEPALIVE_IDLE),
        ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
        ("TCP_KEEPCNT", KEEPALIVE_PROBES),
    ):
        if hasattr(socket, option):  # Linux; other systems keep their defaults
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


def pack_command(*args: str | bytes) -> bytes:
    """One command in RESP (an array of bulk strings; text in UTF-8)."""
    if HIREDIS_PACK is not None:
        return HIREDIS_PACK(args)
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        parts.append(bulk_string(arg.encode() if isinstance(arg, str) else arg))
    return b"".join(parts)


def bulk_string(raw: bytes) -> bytes:
    """`raw` as a RESP bulk string (one argument of a command)."""
    return b"$%d\r\n%s\r\n" % (len(raw), raw)


class LookupChannel:
    """One pipelined connection answering MGETs, (re)connected on demand.

    `connect` opens the transport with the `ChannelConnection` protocol; `handshake` are the
    commands (AUTH, SELECT) sent first, each of which must not answer with an error.
    """

    def __init__(
        self,
        connect: Callable[[], Awaitable[ChannelConnection]],
        handshake: Callable[[], Awaitable[list[bytes]]],
    ) -> None:
        self._connect = connect
        self._handshake = handshake
        self._replies: ChannelConnection | None = None
        self._connecting: asyncio.Future[ChannelConnection] | None = None

    @classmethod
    def for_address(cls, address: ChannelAddress) -> LookupChannel:
        """A channel connecting to `address` as a redis-py connection would."""
        timeout = address.connect_timeout

        async def connect() -> ChannelConnection:
            loop = asyncio.get_running_loop()
            async with asyncio.timeout(timeout):
                if address.unix_path is not None:
                    path = address.unix_path
                    _, replies = await loop.create_unix_connection(ChannelConnection, path)
                else:
                    context = address.tls_context() if address.tls_context is not None else None
                    transport, replies = await loop.create_connection(
                        ChannelConnection, address.host, address.port, ssl=context
                    )
                    keep_alive(transport.get_extra_info("socket"))
            return replies

        async def handshake() -> list[bytes]:
            commands: list[bytes] = []
            if address.credentials is not None:
                commands.append(pack_command("AUTH", *await address.credentials()))
            if address.db:
                commands.append(pack_command("SELECT", str(address.db)))
            if address.client_name:
                commands.append(pack_command("CLIENT", "SETNAME", address.client_name))
            return commands

        return cls(connect, handshake)

    async def mget(self, keys: Sequence[str]) -> list[bytes | None]:
        """The values of `keys` (None where absent), in one round trip. Raises
        `ChannelError`; a caller that stops waiting (timeout, cancel) closes the channel."""
        return await self.mget_packed(pack_command("MGET", *keys), len(keys))

    async def mget_packed(self, command: bytes, count: int) -> list[bytes | None]:
        """`mget` of an MGET of `count` keys already packed in RESP (`command`)."""
        replies = self._replies
        if replies is None or replies.lost is not None:
            replies = await self._open()
        waiter = replies.send(command)
        try:
            values: list[bytes | None] = await waiter
        except asyncio.CancelledError:
            self._drop(replies, ChannelError("an MGET was abandoned"))
            raise
        if not isinstance(values, list) or len(values) != count:
            self._drop(replies, ChannelError(f"unexpected reply to MGET: {values!r:.80}"))
            raise ChannelError("unexpected reply to MGET")
        return values

    def send_now(self, command: bytes, waiter: ReplyWaiter) -> ChannelConnection | None:
        """Write `command` at once if the connection is open, its reply going to `waiter`
        from the read callback (no task, no future): the connection it went out on (whose
        `abandon` gives up on it), or None when none is open (then use `mget_packed`,
        which connects). The caller bounds the wait itself and abandons it when it gives
        up."""
        replies = self._replies
        if replies is None or replies.lost is not None or replies.closing():
            return None
        replies.send_to(command, waiter)
        return replies

    async def _open(self) -> ChannelConnection:
        """The connection, opened once for all batches that need it at the same time."""
        if self._connecting is None:
            future: asyncio.Future[ChannelConnection] = asyncio.get_running_loop().create_future()
            self._connecting = future
            try:
                replies = await self._connect()
                try:
                    for command in await self._handshake():
                        await replies.send(command)
                except BaseException:
                    replies.fail(ChannelError("handshake failed"))
                    raise
            except BaseException as exc:
                error = exc if isinstance(exc, ChannelError | OSError | TimeoutError) else None
                future.set_exception(error or ChannelError(f"could not connect: {exc!r}"))
                future.exception()  # retrieved: other batches may not be waiting
                raise
            finally:
                self._connecting = None
            self._replies = replies
            future.set_result(replies)
            return replies
        return await asyncio.shield(self._connecting)

    def _drop(self, replies: ChannelConnection, error: BaseException) -> None:
        replies.fail(error)
        if self._replies is replies:
            self._replies = None

    def close(self) -> None:
        """Close the connection (batches in flight fail)."""
        replies, self._replies = self._replies, None
        if replies is not None:
            with contextlib.suppress(RuntimeError):  # the loop may already be closed
                replies.fail(ChannelError("lookup channel closed"))
