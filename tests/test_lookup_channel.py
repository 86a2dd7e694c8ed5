"""The store's lean lookup connection (`cachekit.backends.lookup_channel`) and the bounded
number of lookup batches in flight: real redis-server processes for what a connection must
reproduce (database, users, passwords, unix sockets, restarts), a scripted RESP server on
127.0.0.1 for what a real server never does (silence, garbage)."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import fakeredis
import hiredis
import pytest
import redis.asyncio

from cachekit import CacheSettings
from cachekit.backends import batched_lookups as batching
from cachekit.backends import lookup_channel, redis_internals
from cachekit.backends.base import StoreError
from cachekit.backends.lookup_channel import pack_command
from cachekit.backends.redis import RedisStore
from cachekit.backends.single_server import SingleServer
from cachekit.cache import Cache
from cachekit.entry import CachedResponse
from tests.conftest import require_binaries
from tests.redis_servers import HOST, MakeRedisServer, free_port

NAMESPACE = "chan"
Answer = Callable[[list[bytes]], bytes | None]


def entry(body: bytes) -> CachedResponse:
    return CachedResponse(200, (("Content-Type", "text/plain"),), body, time.time(), 60.0)


async def stored_then_read(url: str, key: str = "k", body: bytes = b"hello") -> RedisStore:
    """A store on `url` that must use the channel, with one entry written and read back."""
    store = RedisStore.from_url(url, NAMESPACE, 2.0)
    assert store.uses_lookup_channel
    await store.set(key, entry(body))
    found, _ = await store.get(key)
    assert found is not None and found.body == body
    return store


async def assert_lookup_fails(url: str, match: str) -> None:
    """A store on `url` looks up through the channel, and its lookup fails with `match`."""
    store = RedisStore.from_url(url, NAMESPACE, 2.0)
    try:
        assert store.uses_lookup_channel
        with pytest.raises(StoreError, match=match):
            await store.get("k")
    finally:
        await store.close()


class ScriptedRedis:
    """A RESP server on 127.0.0.1 answering each command with `answer(command)`: bytes to
    send, or None to stay silent. Records commands and connections."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.commands: list[list[bytes]] = []
        self.connections = 0
        self.writers: list[asyncio.StreamWriter] = []
        self.closed = 0  # connections the client closed
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> ScriptedRedis:
        self._server = await asyncio.start_server(self._client, HOST, 0)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"redis://{HOST}:{port}/0"

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        parser = hiredis.Reader()
        try:
            while data := await reader.read(65536):
                parser.feed(data)
                while (command := parser.gets()) is not False:
                    self.commands.append(command)
                    reply = self.answer(command)
                    if reply is not None:
                        writer.write(reply)
        except ConnectionError:
            pass
        finally:
            self.closed += 1
            writer.close()

    def push(self, payload: bytes) -> None:
        """Send `payload` to the newest client connection."""
        self.writers[-1].write(payload)


def nil_mget(command: list[bytes]) -> bytes:
    """A well-behaved answer: every key absent."""
    return b"*%d\r\n" % (len(command) - 1) + b"$-1\r\n" * (len(command) - 1)


def mgets(server: ScriptedRedis) -> list[list[bytes]]:
    return [command for command in server.commands if command[0] == b"MGET"]


# ---------------------------------------------------------------- real servers


@pytest.mark.real_redis
async def test_lookups_use_the_channel_and_see_the_stores_writes(real_redis_url: str) -> None:
    store = await stored_then_read(real_redis_url)
    try:
        missing, generation = await store.get("absent")
        assert missing is None and generation == (await store.get("k"))[1]
        await store.clear()  # the ticket is read through the channel too
        found, ticket = await store.get("k")
        assert found is None and ticket >> 32 and ticket != generation
    finally:
        await store.close()


@pytest.mark.real_redis
async def test_replies_larger_than_one_read_arrive_whole(real_redis_url: str) -> None:
    store = RedisStore.from_url(real_redis_url, NAMESPACE, 5.0)
    bodies = {f"k{i}": bytes([i]) * 20_000 for i in range(40)}  # one MGET of ~800 KB
    bodies["big"] = b"\x07" * (3 << 20)  # one value of 3 MB
    try:
        for key, body in bodies.items():
            await store.set(key, entry(body))
        for _ in range(3):  # the connection's buffers are reused across batches
            results = await asyncio.gather(*(store.get(key) for key in bodies))
            assert [found.body if found else None for found, _ in results] == list(bodies.values())
    finally:
        await store.close()


@pytest.mark.real_redis
async def test_the_channel_keeps_its_tcp_connection_alive(real_redis_url: str) -> None:
    store = await stored_then_read(real_redis_url)
    try:
        # The transport's socket, found through the one connection the channel opened.
        assert isinstance(store.topology, SingleServer)
        replies = store.topology.channel._replies  # type: ignore[union-attr]
        assert replies is not None and replies.transport is not None
        sock = replies.transport.get_extra_info("socket")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        if hasattr(socket, "TCP_KEEPIDLE"):
            idle = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)
            assert idle == lookup_channel.KEEPALIVE_IDLE
    finally:
        await store.close()


@pytest.mark.real_redis
async def test_the_channel_selects_the_urls_database(real_redis_url: str) -> None:
    url = real_redis_url.rsplit("/", 1)[0] + "/5"
    store = await stored_then_read(url)
    other = RedisStore.from_url(real_redis_url, NAMESPACE, 2.0)  # database 0
    try:
        assert (await other.get("k"))[0] is None
    finally:
        await store.close()
        await other.close()


@pytest.mark.real_redis
async def test_the_channel_carries_the_urls_client_name(real_redis_url: str) -> None:
    store = await stored_then_read(f"{real_redis_url}?client_name=shop-web")
    admin = redis.asyncio.Redis.from_url(real_redis_url)
    try:
        names = [client["name"] for client in await admin.client_list()]
        # The pool's connections and the lookup channel both carry it.
        assert names.count("shop-web") >= 2
    finally:
        await admin.aclose()
        await store.close()


@pytest.mark.real_redis
async def test_the_channel_authenticates_as_the_urls_user(
    make_redis_server: MakeRedisServer,
) -> None:
    server = make_redis_server(args=["--user", "alice", "on", ">s3cret", "~*", "+@all"])
    store = await stored_then_read(f"redis://alice:s3cret@{HOST}:{server.port}/0")
    await store.close()
    await assert_lookup_fails(f"redis://alice:nope@{HOST}:{server.port}/0", "WRONGPASS")


@pytest.mark.real_redis
async def test_the_channel_authenticates_with_a_password_alone(
    make_redis_server: MakeRedisServer,
) -> None:
    server = make_redis_server()
    admin = redis.asyncio.Redis(host=HOST, port=server.port)
    await admin.config_set("requirepass", "s3cret")
    await admin.aclose()
    store = await stored_then_read(f"redis://:s3cret@{HOST}:{server.port}/0")
    await store.close()


@pytest.mark.real_redis
async def test_the_channel_connects_over_a_unix_socket(
    make_redis_server: MakeRedisServer, tmp_path: Path
) -> None:
    socket_path = tmp_path / "redis.sock"
    make_redis_server(args=["--unixsocket", str(socket_path), "--unixsocketperm", "700"])
    store = await stored_then_read(f"unix://{socket_path}?db=2")
    await store.close()


def make_certificates(directory: Path) -> dict[str, Path]:
    """A throwaway CA and a certificate for 127.0.0.1 signed by it (openssl)."""
    paths = {name: directory / name for name in ("ca.key", "ca.crt", "server.key", "server.crt")}
    csr, ext = directory / "server.csr", directory / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    commands = [
        ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test",
         "-keyout", paths["ca.key"], "-out", paths["ca.crt"]],
        ["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
         "-keyout", paths["server.key"], "-out", csr],
        ["x509", "-req", "-in", csr, "-CA", paths["ca.crt"], "-CAkey", paths["ca.key"],
         "-CAcreateserial", "-days", "1", "-extfile", ext, "-out", paths["server.crt"]],
    ]  # fmt: skip
    for command in commands:
        subprocess.run(["openssl", *map(str, command)], check=True, capture_output=True)
    return paths


@pytest.mark.real_redis
async def test_the_channel_speaks_tls_and_checks_the_certificate(
    make_redis_server: MakeRedisServer, tmp_path: Path
) -> None:
    require_binaries("openssl")
    files = make_certificates(tmp_path)
    tls_port = free_port()
    make_redis_server(
        args=[
            "--tls-port", str(tls_port), "--tls-auth-clients", "no",
            "--tls-cert-file", str(files["server.crt"]),
            "--tls-key-file", str(files["server.key"]),
            "--tls-ca-cert-file", str(files["ca.crt"]),
        ]
    )  # fmt: skip
    url = f"rediss://{HOST}:{tls_port}/0"
    store = await stored_then_read(f"{url}?ssl_ca_certs={files['ca.crt']}")
    await store.close()
    # A server certificate the client does not trust: the lookup fails, it is not sent.
    await assert_lookup_fails(url, "CERTIFICATE_VERIFY_FAILED")


@pytest.mark.real_redis
async def test_the_channel_reconnects_after_the_server_restarts(
    make_redis_server: MakeRedisServer,
) -> None:
    server = make_redis_server()
    store = await stored_then_read(server.url)
    try:
        server.kill()
        with pytest.raises(StoreError):
            await store.get("k")
        server.restart()
        assert await store.get("k") == (None, 0)  # a new server: nothing stored, no error
    finally:
        await store.close()


def test_pools_the_channel_cannot_reproduce_keep_redis_py() -> None:
    assert not RedisStore(fakeredis.FakeAsyncRedis(), NAMESPACE, 0.5).uses_lookup_channel
    sentinel_pool = redis.asyncio.SentinelConnectionPool(
        "mymaster", redis.asyncio.Sentinel([(HOST, 1)])
    )
    assert redis_internals.channel_address(sentinel_pool) is None


# ---------------------------------------------------------------- a scripted server


@pytest.fixture
async def silent() -> AsyncIterator[ScriptedRedis]:
    """A server that accepts connections and never answers."""
    async with ScriptedRedis(lambda command: None) as server:
        yield server


async def test_a_silent_server_fails_lookups_within_the_timeout(silent: ScriptedRedis) -> None:
    store = RedisStore.from_url(silent.url, NAMESPACE, 0.2)
    loop = asyncio.get_running_loop()
    try:
        first = store.get("a")
        await asyncio.sleep(0.05)  # now one batch is in flight; later ones may wait for it
        later = [store.get("b"), store.get("c")]
        await asyncio.sleep(0.05)
        started = loop.time()
        last = store.get("d")  # issued last: must still fail within its own timeout
        for waiter in (first, *later, last):
            with pytest.raises(StoreError):
                await waiter
        assert loop.time() - started < 0.2 + 0.15
        # An abandoned MGET closes the connection (later replies could not be matched).
        await asyncio.sleep(0.05)
        assert silent.connections >= 1
        assert silent.closed == silent.connections
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("first_reply", "message", "connections"),
    [
        # Unparseable: the batch fails and the connection is closed; the next one reconnects.
        (b"%%% not RESP\r\n", "malformed", 2),
        # A Redis error: only that batch fails; the connection stays usable.
        (b"-ERR something odd\r\n", "something odd", 1),
    ],
)
async def test_a_bad_reply_fails_only_its_batch(
    first_reply: bytes, message: str, connections: int
) -> None:
    replies = iter([first_reply])

    def answer(command: list[bytes]) -> bytes:
        return next(replies, None) or nil_mget(command)

    async with ScriptedRedis(answer) as server:
        store = RedisStore.from_url(server.url, NAMESPACE, 1.0)
        try:
            with pytest.raises(StoreError, match=message):
                await store.get("a")
            assert await store.get("a") == (None, 0)
        finally:
            await store.close()
        assert server.connections == connections


async def test_lookups_wait_for_a_batch_in_flight_and_go_out_together() -> None:
    held: list[list[bytes]] = []

    def answer(command: list[bytes]) -> bytes | None:
        held.append(command)
        return None  # released by the test

    async with ScriptedRedis(answer) as server:
        store = RedisStore.from_url(server.url, NAMESPACE, 5.0)
        try:
            waiting = []
            for i in range(batching.MAX_BATCHES_IN_FLIGHT):  # one batch per loop turn
                waiting.append(store.get(f"a{i}"))
                await asyncio.sleep(0.02)
                assert len(mgets(server)) == i + 1
            for i in range(30):  # over many loop turns, while the bound is reached
                waiting.append(store.get(f"b{i % 20}"))
                await asyncio.sleep(0)
            await asyncio.sleep(0.05)
            assert len(mgets(server)) == batching.MAX_BATCHES_IN_FLIGHT
            server.answer = nil_mget
            # Answer the held batches (in order); the waiting lookups then go out as one.
            server.push(b"".join(nil_mget(command) for command in held))
            results = await asyncio.wait_for(asyncio.gather(*waiting), 2.0)
            assert all(result == (None, 0) for result in results)
            sent = mgets(server)
            assert len(sent) == batching.MAX_BATCHES_IN_FLIGHT + 1
            assert sorted(sent[-1][2:]) == sorted(
                f"{NAMESPACE}:e:{{b{i}}}".encode() for i in range(20)
            )
        finally:
            await store.close()


async def test_many_distinct_lookups_go_out_at_once_in_bounded_batches() -> None:
    async with ScriptedRedis(lambda command: None) as server:  # never answers
        store = RedisStore.from_url(server.url, NAMESPACE, 1.0)
        try:
            for i in range(batching.MAX_BATCHES_IN_FLIGHT):  # the bound is reached
                store.get(f"a{i}")
                await asyncio.sleep(0.02)
            count = batching.MAX_BATCH_KEYS * 2 + 10
            for i in range(count):
                store.get(f"b{i}")
            await asyncio.sleep(0.1)
            sizes = [len(command) - 2 for command in mgets(server)]  # minus MGET and gen
            bound = batching.MAX_BATCHES_IN_FLIGHT
            assert sizes[:bound] == [1] * bound
            later = sizes[bound:]
            assert sum(later) == count
            assert max(later) <= batching.MAX_BATCH_KEYS
        finally:
            await store.close()


async def test_stats_show_how_lookups_were_batched() -> None:
    async with ScriptedRedis(nil_mget) as server:
        store = RedisStore.from_url(server.url, NAMESPACE, 1.0)
        cache = Cache(CacheSettings(redis_url=server.url), store)
        try:
            await asyncio.gather(*(store.get(f"k{i % 10}") for i in range(40)))
            stats = cache.stats()
            assert (stats["lookup_batches"], stats["lookup_keys"]) == (1, 10)
            assert stats["lookups_waiting"] == 0
        finally:
            await store.close()


def test_pack_command_is_resp() -> None:
    assert pack_command("MGET", "a", b"\xff") == b"*3\r\n$4\r\nMGET\r\n$1\r\na\r\n$1\r\n\xff\r\n"


# ------------------------------------------- batches answered from the read callback


async def connected_store(server: ScriptedRedis, store_timeout: float = 0.3) -> RedisStore:
    """A store whose lookup connection to `server` is open (one lookup answered)."""
    store = RedisStore.from_url(server.url, NAMESPACE, store_timeout)
    assert await store.get("warm") == (None, 0)
    return store


async def test_a_connected_channel_answers_batches_without_a_task() -> None:
    async with ScriptedRedis(nil_mget) as server:
        store = await connected_store(server)
        try:
            waiters = [store.get("a"), store.get("b")]
            await asyncio.sleep(0)  # the batch goes out
            assert not store.lookups.tasks  # sent at once: no task, no future per batch
            assert await asyncio.gather(*waiters) == [(None, 0), (None, 0)]
            assert server.connections == 1
        finally:
            await store.close()


def answered_then(later: Answer) -> Answer:
    """Answers the first MGET (the warm-up), then `later` for the next one, then nil."""
    seen = 0

    def answer(command: list[bytes]) -> bytes | None:
        nonlocal seen
        if command[0] != b"MGET":
            return nil_mget(command)
        seen += 1
        return later(command) if seen == 2 else nil_mget(command)

    return answer


@pytest.mark.parametrize(
    ("later", "message"),
    [
        (lambda command: None, "TimeoutError"),  # silence
        (lambda command: b"*1\r\n$-1\r\n", "unexpected reply to MGET"),  # too few values
        (lambda command: b":7\r\n", "unexpected reply to MGET"),  # not an array
    ],
    ids=["silence", "too-few-values", "not-an-array"],
)
async def test_an_unusable_answer_on_an_open_channel_fails_its_batch_and_reconnects(
    later: Answer, message: str
) -> None:
    async with ScriptedRedis(answered_then(later)) as server:
        store = await connected_store(server, store_timeout=0.2)
        loop = asyncio.get_running_loop()
        try:
            started = loop.time()
            with pytest.raises(StoreError, match=message):
                await store.get("a")
            assert loop.time() - started < 0.2 + 0.15
            assert store.lookups.in_flight == 0
            await asyncio.sleep(0.05)
            assert server.closed == 1  # its later replies could no longer be matched
            assert await store.get("a") == (None, 0)  # a new connection
            assert server.connections == 2
        finally:
            await store.close()


async def test_a_connection_lost_under_a_batch_fails_it_and_the_next_reconnects() -> None:
    async with ScriptedRedis(answered_then(lambda command: None)) as server:
        store = await connected_store(server, store_timeout=2.0)
        try:
            waiter = store.get("a")
            await asyncio.sleep(0.05)
            server.writers[-1].close()
            with pytest.raises(StoreError, match="lost"):
                await asyncio.wait_for(waiter, 1.0)
            assert await store.get("a") == (None, 0)
            assert server.connections == 2
        finally:
            await store.close()


async def test_closing_the_store_waits_for_a_batch_in_flight() -> None:
    async with ScriptedRedis(answered_then(lambda command: None)) as server:
        store = await connected_store(server, store_timeout=2.0)
        waiter = store.get("a")
        await asyncio.sleep(0.02)
        loop = asyncio.get_running_loop()
        loop.call_later(0.1, lambda: server.push(b"*2\r\n$-1\r\n$-1\r\n"))
        await store.close()
        assert waiter.done() and waiter.result() == (None, 0)


async def test_a_lookup_that_cannot_be_sent_fails_open_and_the_next_ones_work() -> None:
    # Keys built by cachekit are ASCII; a store used directly with an unencodable key must
    # still fail only that batch (before, on the task path or the open channel alike).
    async with ScriptedRedis(nil_mget) as server:
        store = RedisStore.from_url(server.url, NAMESPACE, 1.0)
        try:
            for _ in range(2):  # connecting (task path), then on the open channel
                with pytest.raises(StoreError):
                    await asyncio.wait_for(store.get("bad\ud800"), 2.0)
                assert await asyncio.wait_for(store.get("a"), 2.0) == (None, 0)
            assert store.lookups.in_flight == 0
        finally:
            await store.close()
