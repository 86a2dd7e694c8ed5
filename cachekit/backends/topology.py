"""What the Redis store asks of its topology (one server, or a Cluster), and what they share.

A topology is how commands reach Redis: `SingleServer` (`single_server.py`: a standalone
server, or the primary a Sentinel names) and `ClusterTopology` (`cluster.py`: keys spread
over slots, so multi-key work is split per slot and runs in a stated order). The
store (`redis.py`) says what to do with the key layout; the topology says how.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import OutOfMemoryError, ReadOnlyError, RedisClusterException, RedisError

from cachekit.backends.base import StoreError, WriteRefused
from cachekit.backends.batched_lookups import LookupBatch, RawValues, SentBatch
from cachekit.backends.layout import KeyLayout
from cachekit.backends.near import ListenerFactory

#: Everything redis-py (and the lookup channel) raises for an unreachable or misbehaving
#: server.
REDIS_ERRORS: Final = (RedisError, RedisClusterException, OSError)


@dataclass(frozen=True, slots=True)
class Fill:
    """One entry to store, with what the fill's scripts check."""

    key: str  # the logical key, `base` or `base#variant`
    data: bytes  # the encoded entry
    keep_ms: int  # its lifetime in Redis
    tags: Sequence[str]  # indexed under these
    max_variants: int
    #: How long after its entry expired an index member is trimmed (ms), and the most
    #: expired members trimmed from one tag index by this fill.
    trim_slack_ms: int
    trim_limit: int


class Topology(Protocol):
    """How a `RedisStore` reaches Redis (see the module docstring)."""

    #: The redis-py client (`Redis` or `RedisCluster`), typed loosely: the store uses the
    #: commands the two have in common.
    client: Any

    @property
    def uses_lookup_channel(self) -> bool:
        """Whether lookups go through the lean pipelined connection (`lookup_channel.py`)."""
        ...

    def run(self, awaitable: Awaitable[Any]) -> Awaitable[Any]:
        """The result of one redis-py call; `StoreError` when Redis fails."""
        ...

    def read(self, keys: list[str]) -> Awaitable[RawValues]:
        """The generation and the entries of these logical keys, in one round trip."""
        ...

    def send_now(self, keys: list[str], batch: LookupBatch) -> SentBatch | None:
        """See `MgetReads.send_now`."""
        ...

    def read_versions(self, tags: list[str]) -> Awaitable[RawValues]:
        """See `MgetReads.read_versions`."""
        ...

    async def prepare(self, ticket: str, tags: Sequence[str], keep_ms: int) -> list[str] | None:
        """The versions of `tags` (creating missing ones, kept at least `keep_ms`), or None
        when the ticket (`ns:gen`) is no longer `ticket`: a purge or a clear since. The
        versions are read before the ticket is compared (see `tag_versions.py`)."""
        ...

    async def mark_purged(
        self, tags: Sequence[str], purge: str, generation: str, soft_at_ms: str = ""
    ) -> None:
        """Give each of `tags` that has a version a new one (soft, `NEW~MS~OLD`, when
        `soft_at_ms` is the purge's time in ms) and the ticket the new P `purge` (G
        `generation` if the ticket is missing), so that no process reads a replaced
        version under the new ticket. No tags: only the ticket (a purge of keys)."""
        ...

    async def store(self, fill: Fill) -> bool:
        """Store the entry unless its variant cap forbids it; index its tags."""
        ...

    async def unlink(self, redis_keys: Sequence[str]) -> int:
        """UNLINK these keys; how many existed."""
        ...

    async def purge_batch(self, tag_key: str, members: list[bytes]) -> int:
        """Remove members from the tag index, then their entries; how many entries existed."""
        ...

    def near_cache_listener(self, namespace: str) -> ListenerFactory | None:
        """The near cache's invalidation connections; None when redis-py's internals
        changed. Raises ValueError where a near cache cannot be kept coherent."""
        ...

    async def used_memory(self) -> int:
        """Bytes Redis uses (on every primary of a cluster), for the operator CLI."""
        ...

    async def close(self) -> None:
        """Close every connection."""
        ...


def connection_options(timeout: float) -> dict[str, Any]:
    """redis-py client options for a store bounded by `timeout`: fail fast, never retry."""
    return {
        "socket_connect_timeout": timeout,
        "socket_timeout": max(timeout, 1.0),
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 30,
    }


async def as_store_error(awaitable: Awaitable[Any]) -> Any:
    """The result of `awaitable`, with redis-py's (and sockets') errors as `StoreError`."""
    try:
        return await awaitable
    except (OutOfMemoryError, ReadOnlyError) as exc:
        # Redis is up and still answers reads: the cache keeps looking up (see WriteRefused).
        raise WriteRefused(f"redis refused a write: {exc}") from None
    except REDIS_ERRORS as exc:
        raise StoreError(f"redis call failed: {exc!r}") from None


def store_atomically(
    script: AsyncScript, layout: KeyLayout, fill: Fill, *, index: bool = True
) -> Awaitable[Any]:
    """The call of `scripts.STORE` for `fill`: store, cap variants and (with `index`) index
    its tags in one step (all keys on one server; on a cluster, without `index`)."""
    base, mark, variant = fill.key.partition("#")
    tag_keys = [layout.tag_key(tag) for tag in fill.tags] if index else []
    return script(
        keys=[layout.entry_key(fill.key), layout.variants_key(base), *tag_keys],
        args=[
            fill.data,
            fill.keep_ms,
            mark + variant,
            fill.max_variants,
            layout.entry_key(base),
            fill.key,
            fill.trim_slack_ms,
            fill.trim_limit,
        ],
    )
