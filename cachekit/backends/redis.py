"""The Redis store (redis.asyncio): batched lookups, generations, tags and fill locks.

The key layout is documented in `layout.py`.

Tag purges and racing fills. A purge of TAG (1) writes the marker `ns:tp:{=TAG}` = now,
then (2) walks the index in batches, removing each batch from the index and then deleting
its entries. A fill that began at time S stores its entry and indexes it atomically, but
only if no marker of its tags is later than S minus the clock-skew margin. So either the
fill ran after (1) and saw the marker (it stores nothing), or it ran before (1), its member
was in the index for the whole walk, and (2) deleted the entry. No entry of a purged tag is
served afterwards, for fills shorter than the marker's lifetime (`lock_ttl` + 60 s). Redis
Cluster keeps the same guarantee with a three-step fill (see `cluster.py`).

Near cache (optional): fresh entries are also kept decoded in the process and answered
without a round trip while Redis's invalidations say they are unchanged (see `near.py`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, cast

from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.backoff import NoBackoff
from redis.retry import Retry

from cachekit.backends import scripts
from cachekit.backends.base import StoreError
from cachekit.backends.batched_lookups import REDIS_ERRORS, BatchedLookups
from cachekit.backends.lookup_channel import LookupChannel, ReplyWaiter, bulk_string
from cachekit.backends.near import NearCache
from cachekit.entry import CachedResponse, encode

log = logging.getLogger("cachekit.redis")

#: Members read from a tag index, and entries deleted, per round trip of a purge.
TAG_BATCH: Final = 500
#: Connections per worker process; lookups are batched, so few are busy at once.
MAX_CONNECTIONS: Final = 64
#: Index members are trimmed this long after their entry expired: a margin for fills still
#: in flight and for clocks of different cluster nodes that disagree slightly.
TRIM_SLACK_MS: Final = 30_000
#: Most expired members trimmed from one tag index per store (bounded work per call).
TRIM_LIMIT: Final = 8
#: Logical keys whose part of a lookup's MGET is kept packed: at most this many keys of at
#: most PACKED_KEY_MAX characters (about 2 MB at worst); cleared when full.
PACKED_KEYS_KEPT: Final = 4096
PACKED_KEY_MAX: Final = 400


class RedisStore(BatchedLookups):
    """A `Store` on one Redis server (or a Sentinel-managed primary). Lookups are batched
    (`batched_lookups.py`) and, when the pool's connections can be reproduced, sent on the
    lean lookup connection (`lookup_channel.py`); everything else goes through redis-py.

    `purge_window`: seconds a tag's purge marker is kept, the longest fill it protects
    against. `clock_skew`: seconds the clocks of purging and filling processes may disagree.
    `near_max_bytes` > 0 adds a near cache of that size whose entries live at most
    `near_max_age` seconds (not on a Redis Cluster: tracking would be needed per node).
    """

    remote = True

    def __init__(
        self,
        client: Redis | RedisCluster,
        namespace: str,
        timeout: float,
        max_variants: int = 32,
        *,
        purge_window: float = 90.0,
        clock_skew: float = 1.0,
        near_max_bytes: int = 0,
        near_max_age: float = 10.0,
    ) -> None:
        # Typed loosely: the commands used here are common to Redis and RedisCluster.
        super().__init__(namespace, timeout)  # key layout and lookup batching
        self._redis: Any = client
        self._max_variants = max_variants
        self._purge_window_ms = max(1, int(purge_window * 1000))
        self._clock_skew = clock_skew
        self.trim_slack_ms = TRIM_SLACK_MS
        self._compare_and_delete = client.register_script(scripts.COMPARE_AND_DELETE)
        self._store_script = client.register_script(scripts.STORE)
        # Lookups go through a lean pipelined connection when the pool's can be reproduced.
        pool = getattr(client, "connection_pool", None)
        self._channel = LookupChannel.for_pool(pool) if pool is not None else None
        # Each key's part of an MGET, packed once (`_packed_mget`).
        self._packed_gen_key = bulk_string(self._gen_key.encode())
        self._packed_keys: dict[str, bytes] = {}
        if near_max_bytes > 0:
            if isinstance(client, RedisCluster):
                raise ValueError("the near cache is not supported on a Redis Cluster")
            pool = client.connection_pool
            self._near = NearCache.for_pool(pool, self, near_max_bytes, near_max_age, timeout)

    @classmethod
    def from_url(
        cls, url: str, namespace: str, timeout: float, max_variants: int = 32, **options: Any
    ) -> RedisStore:
        """Connect lazily to `url`; no retries, since every call is bounded by `timeout`.
        `options` are the keyword-only arguments of the constructor."""
        # A blocking pool: under a burst of misses, stores queue for a connection (bounded
        # by the store timeout) instead of failing with MaxConnectionsError.
        pool = BlockingConnectionPool.from_url(
            url, max_connections=MAX_CONNECTIONS, timeout=timeout, **connection_options(timeout)
        )
        return cls(Redis.from_pool(pool), namespace, timeout, max_variants, **options)

    @property
    def client(self) -> Any:
        """The redis-py client (for operator tooling; the app never needs it)."""
        return self._redis

    @property
    def uses_lookup_channel(self) -> bool:
        """Whether lookups go through the lean pipelined connection (`lookup_channel.py`)
        rather than through redis-py (a pool it cannot reproduce, e.g. Sentinel)."""
        return self._channel is not None

    @property
    def near_cache(self) -> NearCache | None:
        """The near cache in front of Redis, if one is configured."""
        return self._near

    # ------------------------------------------------------------------ lookups

    async def _read(self, keys: list[str]) -> tuple[bytes | None, list[bytes | None]]:
        """The generation and these entries, in one round trip (one MGET)."""
        if self._channel is not None:
            values = await self._channel.mget_packed(self._packed_mget(keys), len(keys) + 1)
        else:
            entry_keys = [self.entry_key(key) for key in keys]
            values = cast(list[bytes | None], await self._redis.mget([self._gen_key, *entry_keys]))
        return values[0], values[1:]

    def _send_now(self, keys: list[str], batch: ReplyWaiter) -> object | None:
        """See `BatchedLookups._send_now`: on the lookup channel, when it is connected."""
        channel = self._channel
        if channel is None:
            return None
        return channel.send_now(self._packed_mget(keys), batch)

    def _abandon(self, sent_on: object) -> None:
        if self._channel is not None:
            self._channel.abandon(cast(Any, sent_on), "an MGET was abandoned")

    def _packed_mget(self, keys: list[str]) -> bytes:
        """`MGET gen-key entry-key...` in RESP, each key's part packed once (memoised)."""
        packed = self._packed_keys
        parts = [b"*%d\r\n$4\r\nMGET\r\n" % (len(keys) + 2), self._packed_gen_key]
        for key in keys:
            part = packed.get(key)
            if part is None:
                part = bulk_string(self.entry_key(key).encode())
                if len(key) <= PACKED_KEY_MAX:
                    if len(packed) >= PACKED_KEYS_KEPT:
                        packed.clear()
                    packed[key] = part
            parts.append(part)
        return b"".join(parts)

    async def _drop_damaged(self, key: str, raw: bytes) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                await self._compare_and_delete(keys=[self.entry_key(key)], args=[raw])
        except (*REDIS_ERRORS, TimeoutError) as exc:
            log.debug("could not delete damaged entry %r: %r", key, exc)

    # ------------------------------------------------------------------ writes

    async def set(self, key: str, entry: CachedResponse, started_at: float | None = None) -> bool:
        """See `Store.set`. With `started_at` (wall-clock time the fill began), the entry is
        not stored if one of its tags was purged since (minus the clock-skew margin)."""
        keep_ms = max(1, int(entry.keep_for() * 1000))
        data = encode(entry)
        since = None if started_at is None else int((started_at - self._clock_skew) * 1000)
        try:
            return await self._store(key, entry.tags, data, keep_ms, since)
        finally:
            self._forget((key,))  # even on failure: the write may have happened

    async def _store(
        self, key: str, tags: Sequence[str], data: bytes, keep_ms: int, since: int | None
    ) -> bool:
        """Store, cap variants, check purge markers and index tags in one atomic script."""
        base, mark, variant = key.partition("#")
        tag_keys = [k for tag in tags for k in (self.tag_key(tag), self.purge_marker_key(tag))]
        stored = await self._run(
            self._store_script(
                keys=[self.entry_key(key), self.variants_key(base), *tag_keys],
                args=[
                    data,
                    keep_ms,
                    mark + variant,
                    self._max_variants,
                    self.entry_key(base),
                    key,
                    "" if since is None else since,
                    self.trim_slack_ms,
                    TRIM_LIMIT,
                ],
            )
        )
        return int(stored) == 1

    async def delete(self, keys: Sequence[str]) -> int:
        """See `Store.delete`."""
        try:
            return await self._unlink([self.entry_key(key) for key in keys])
        finally:
            self._forget(keys)

    def _forget(self, keys: Iterable[str]) -> None:
        """Drop keys this process just wrote from the near cache, without waiting for
        Redis's invalidation message (so the process reads its own writes)."""
        if self._near is not None:
            for key in keys:
                self._near.invalidate(key)

    async def _unlink(self, redis_keys: Sequence[str]) -> int:
        """UNLINK these keys; how many existed."""
        if not redis_keys:
            return 0
        return int(await self._run(self._redis.unlink(*redis_keys)))

    async def delete_variants(self, bases: Sequence[str]) -> int:
        """See `Store.delete_variants`."""
        if not bases:
            return 0
        async with self._redis.pipeline(transaction=False) as pipe:
            for base in bases:
                pipe.smembers(self.variants_key(base))
            found = await self._run(pipe.execute())
        keys: list[str] = []
        for base, variants in zip(bases, found, strict=True):
            keys.append(base)
            keys.extend(base + member.decode() for member in variants)
        removed = await self.delete(keys)
        await self._unlink([self.variants_key(base) for base in bases])
        return removed

    async def invalidate_tags(self, tags: Iterable[str]) -> int:
        """See `Store.invalidate_tags`. Marks the tags purged first, then removes their
        entries batch by batch (index members before entries: a fill re-storing a key
        meanwhile re-indexes it, so a live entry never loses its index member)."""
        names = list(dict.fromkeys(tags))
        if not names:
            return 0
        now_ms = int(time.time() * 1000)
        async with self._redis.pipeline(transaction=False) as pipe:
            for tag in names:
                pipe.set(self.purge_marker_key(tag), now_ms, px=self._purge_window_ms)
            await self._run(pipe.execute())
        removed = 0
        for tag in names:
            tag_key = self.tag_key(tag)
            cursor: int = 0
            while True:
                cursor, found = await self._run(self._redis.zscan(tag_key, cursor, count=TAG_BATCH))
                if found:
                    members = [member for member, _ in found]
                    try:
                        removed += await self._purge_batch(tag_key, members)
                    finally:
                        self._forget(member.decode() for member in members)
                if not cursor:
                    break
        return removed

    async def _purge_batch(self, tag_key: str, members: list[bytes]) -> int:
        """Remove members from the index, then their entries (in this order, one round
        trip: a pipeline runs in order on one server). Returns how many entries existed."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zrem(tag_key, *members)
            pipe.unlink(*(self.entry_key(member.decode()) for member in members))
            _, removed = await self._run(pipe.execute())
        return int(removed)

    async def clear(self) -> None:
        """See `Store.clear`: bump the generation; old entries expire on their own."""
        try:
            await self._run(self._redis.incr(self._gen_key))
        finally:
            if self._near is not None:
                self._near.flush()

    async def acquire_lock(self, key: str, token: str, ttl: float) -> bool:
        """See `Store.acquire_lock` (SET NX PX)."""
        ttl_ms = max(1, int(ttl * 1000))
        return bool(await self._run(self._redis.set(self.lock_key(key), token, nx=True, px=ttl_ms)))

    async def lock_held(self, key: str) -> bool:
        """See `Store.lock_held`."""
        return bool(await self._run(self._redis.exists(self.lock_key(key))))

    async def release_lock(self, key: str, token: str) -> None:
        """See `Store.release_lock` (compare-and-delete by token)."""
        await self._run(self._compare_and_delete(keys=[self.lock_key(key)], args=[token]))

    async def add_counters(self, counts: Mapping[str, int]) -> None:
        """Add these per-process counter increments to the namespace-wide totals."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for name, count in counts.items():
                pipe.hincrby(self.stats_key, name, count)
            await self._run(pipe.execute())

    async def close(self) -> None:
        """Wait briefly for lookups in flight, stop the near cache's listener, then close
        the connection pool."""
        await self._drain()
        if self._batches:
            await asyncio.wait(set(self._batches), timeout=self._timeout)
        if self._near is not None:
            await self._near.close()
        if self._channel is not None:
            self._channel.close()
        await self._redis.aclose()

    async def _run(self, awaitable: Any) -> Any:
        try:
            return await awaitable
        except REDIS_ERRORS as exc:
            raise StoreError(f"redis call failed: {exc!r}") from None


def connection_options(timeout: float) -> dict[str, Any]:
    """redis-py client options for a store bounded by `timeout`: fail fast, never retry."""
    return {
        "socket_connect_timeout": timeout,
        "socket_timeout": max(timeout, 1.0),
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 30,
    }
