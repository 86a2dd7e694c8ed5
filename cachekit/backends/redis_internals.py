"""Every use of redis-py internals in cachekit, self-checked at import, with its fallback.

Everywhere else cachekit calls redis-py's public client API only. What this module touches
underneath it, and what happens when a redis-py release changes it:

Lookup channel (`lookup_channel.py` connects exactly like a client's connection pool):
  - `ConnectionPool.connection_class` and `ConnectionPool.connection_kwargs`;
  - `redis.asyncio.connection.Connection`, `SSLConnection` and `UnixDomainSocketConnection`,
    built from those kwargs without connecting, and their attributes `host`, `port`,
    `path`, `ssl_context` (a `RedisSSLContext`: its `get()`), `credential_provider`,
    `username`, `password`, `db`, `client_name` and `socket_connect_timeout`.
  Fallback: `channel_address` gives None and lookups use redis-py's MGET, as behind Sentinel.
Near-cache listener (`near.py` needs a RESP2 connection of its own, made like the pool's):
  - `connection_class` and `connection_kwargs` again, overriding `protocol`,
    `health_check_interval`, `decode_responses` and `client_name`;
  - `AbstractConnection.connect`, `send_command`, `read_response(timeout=...)` (None when
    that timeout passes), `disconnect`, `host` and `port`;
  - `SentinelConnectionPool.master_address` (the primary the pool connected to last).
  Fallback: `listener_factory` gives None and the store runs without a near cache (with a
  warning): every lookup then reads Redis.
Cluster discovery guard (`cluster.py`):
  - `RedisCluster._initialize`, True while the client has to (re)discover the cluster.
  Fallback: `cluster_needs_discovery` says False: calls are no longer held back while
  redis-py discovers the cluster (which works, with more failed calls during a change).
No longer used: `redis.crc.key_slot` (`cluster.py` computes slots from the Cluster spec).

`check_internals` builds pools, connections, a Sentinel pool and a cluster client the way
the code below uses them, without any I/O, and `INTERNALS` records which of the three
features still find what they expect.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from redis.asyncio import ConnectionPool, RedisCluster, Sentinel, SentinelConnectionPool
from redis.asyncio.connection import (
    AbstractConnection,
    Connection,
    SSLConnection,
    UnixDomainSocketConnection,
)
from redis.credentials import UsernamePasswordCredentialProvider
from redis.exceptions import RedisError

from cachekit.backends.lookup_channel import ChannelAddress

log = logging.getLogger("cachekit.redis")

#: The connection classes the lookup channel can reproduce.
CHANNEL_CONNECTIONS: Final = (Connection, SSLConnection, UnixDomainSocketConnection)


class InternalsChanged(Exception):
    """redis-py no longer has what this module relies on (see the module docstring)."""


@dataclass(frozen=True, slots=True)
class Internals:
    """Which features found the redis-py internals they rely on (see `check_internals`)."""

    lookup_channel: bool
    near_cache: bool
    cluster_discovery: bool
    problems: tuple[str, ...] = ()


# ------------------------------------------------------------------ the lookup channel


def channel_address(pool: Any) -> ChannelAddress | None:
    """How a lookup channel reproduces the connections of a redis-py asyncio `pool`; None
    for connections of another kind (Sentinel's, a test double's) or when the internals it
    reads have changed (then lookups go through redis-py)."""
    if not INTERNALS.lookup_channel:
        return None
    try:
        return _read_channel_address(pool)
    except (AttributeError, TypeError, ValueError):
        return None


def _read_channel_address(pool: Any) -> ChannelAddress | None:
    kind = getattr(pool, "connection_class", None)
    if kind not in CHANNEL_CONNECTIONS:
        return None
    template = kind(**pool.connection_kwargs)
    provider = template.credential_provider
    if provider is None and (template.username or template.password):
        provider = UsernamePasswordCredentialProvider(template.username, template.password)
    unix = isinstance(template, UnixDomainSocketConnection)
    return ChannelAddress(
        host="" if unix else template.host,
        port=0 if unix else int(template.port),
        unix_path=template.path if unix else None,
        tls_context=template.ssl_context.get if isinstance(template, SSLConnection) else None,
        credentials=provider.get_credentials_async if provider is not None else None,
        db=int(template.db or 0),
        client_name=template.client_name or None,
        connect_timeout=template.socket_connect_timeout or None,
    )


# ------------------------------------------------------------------ the near-cache listener


class ListenerConnection:
    """One RESP2 connection of the near cache's listener; raises `ConnectionError` (or
    `TimeoutError`) for anything that goes wrong on it, never a redis-py exception."""

    def __init__(self, connection: AbstractConnection, pool: Any) -> None:
        self._connection = connection
        self._pool = pool

    async def open(self) -> None:
        """Connect (and authenticate, select the database, name the client)."""
        try:
            await self._connection.connect()  # type: ignore[no-untyped-call]  # untyped
        except RedisError as exc:
            raise ConnectionError(f"near cache listener: {exc!r}") from exc

    async def send(self, *args: str | bytes | int) -> None:
        """Send one command (its reply comes from `reply`)."""
        try:
            await self._connection.send_command(*args)
        except RedisError as exc:
            raise ConnectionError(f"near cache listener: {exc!r}") from exc

    async def reply(self, within: float | None = None) -> Any:
        """The next reply or message. With `within`: None when none arrives within that
        many seconds; without, the connection's socket timeout raises `ConnectionError`."""
        try:
            return await self._connection.read_response(timeout=within)
        except RedisError as exc:
            raise ConnectionError(f"near cache listener: {exc!r}") from exc

    def moved(self) -> bool:
        """Whether a Sentinel pool moved to another primary than this connection's."""
        primary = getattr(self._pool, "master_address", None)
        where = (getattr(self._connection, "host", None), getattr(self._connection, "port", None))
        return primary is not None and tuple(primary) != where

    async def close(self) -> None:
        """Disconnect (never raises a redis-py error)."""
        try:
            await self._connection.disconnect()
        except RedisError as exc:
            raise ConnectionError(f"near cache listener: {exc!r}") from exc


def listener_factory(pool: Any, client_name: str) -> Callable[[], ListenerConnection] | None:
    """Makes connections like those of `pool` (plain, Sentinel-managed, TLS, unix socket)
    but in RESP2, so that invalidations are ordinary Pub/Sub messages, and without redis-py
    health checks (a subscribed connection answers PING differently; the near cache pings
    itself). None when the internals this relies on have changed."""
    if not INTERNALS.near_cache:
        return None
    return _listener_factory(pool, client_name)


def _listener_factory(pool: Any, client_name: str) -> Callable[[], ListenerConnection]:
    kind = pool.connection_class
    options = {
        **pool.connection_kwargs,
        "protocol": 2,
        "health_check_interval": 0,
        "decode_responses": False,
        "client_name": client_name,
    }

    def connect() -> ListenerConnection:
        return ListenerConnection(kind(**options), pool)

    return connect


# ------------------------------------------------------------------ the cluster client


def cluster_needs_discovery(client: RedisCluster) -> bool:
    """Whether `client` will (re)discover the cluster before its next command."""
    return INTERNALS.cluster_discovery and bool(getattr(client, "_initialize", False))


# ------------------------------------------------------------------ the self-check


def check_internals() -> Internals:
    """Which features find the internals they use, tried without I/O on throwaway objects;
    logs a warning naming whatever changed."""
    problems: list[str] = []
    channel = _passes(_check_channel, problems)
    listener = _passes(_check_listener, problems)
    cluster = _passes(_check_cluster, problems)
    if problems:
        log.warning(
            "redis-py internals changed, falling back to plain redis-py: %s", "; ".join(problems)
        )
    return Internals(channel, listener, cluster, tuple(problems))


def _passes(check: Callable[[], None], problems: list[str]) -> bool:
    try:
        check()
    except Exception as exc:  # any surprise means: the internals changed
        problems.append(f"{check.__name__.removeprefix('_check_')}: {exc!r}")
        return False
    return True


def _check_channel() -> None:
    url = "redis://someone:secret@self-check.invalid:7001/3?client_name=check"
    address = _read_channel_address(ConnectionPool.from_url(url))
    if address is None or address.credentials is None:
        raise InternalsChanged(f"connection kwargs not understood: {address}")
    seen = (address.host, address.port, address.db, address.client_name)
    _expect(seen == ("self-check.invalid", 7001, 3, "check"), f"read {seen}")
    unix = _read_channel_address(ConnectionPool.from_url("unix:///self-check.sock?db=2"))
    _expect(unix is not None and unix.unix_path == "/self-check.sock", "no unix socket path")
    tls = _read_channel_address(ConnectionPool.from_url("rediss://self-check.invalid:7002"))
    _expect(tls is not None and callable(tls.tls_context), "no TLS context")


def _check_listener() -> None:
    pool = ConnectionPool.from_url("redis://self-check.invalid")
    connection = _listener_factory(pool, "check")()._connection
    for method in ("connect", "send_command", "read_response", "disconnect"):
        _expect(callable(getattr(connection, method, None)), f"no {method}")
    parameters = inspect.signature(connection.read_response).parameters
    _expect("timeout" in parameters, "read_response takes no timeout")
    _expect(connection.protocol in (2, "2"), "the RESP version is not taken from kwargs")
    address = (getattr(connection, "host", None), getattr(connection, "port", None))
    _expect(address == ("self-check.invalid", 6379), "no host and port")
    sentinels = Sentinel([("self-check.invalid", 1)])  # type: ignore[no-untyped-call,unused-ignore]
    sentinel_pool = SentinelConnectionPool("check", sentinels)  # type: ignore[no-untyped-call]
    _expect(hasattr(sentinel_pool, "master_address"), "no master_address on Sentinel pools")


def _check_cluster() -> None:
    client = RedisCluster(host="self-check.invalid", port=7003)  # connects on first use only
    _expect(getattr(client, "_initialize", None) is True, "no _initialize flag")


def _expect(condition: bool, problem: str) -> None:
    if not condition:
        raise InternalsChanged(problem)


#: What the self-check found when this module was imported.
INTERNALS: Internals = check_internals()
