"""The Redis store (redis.asyncio), and the map of the Redis backend's parts.

A `RedisStore` is built from parts, each an object of its own module:

    layout.py           KeyLayout: every Redis key name of the namespace (and back)
    key_sketches.py     RedisKeySketches: per-handler key counts (HyperLogLogs) of every worker
    batched_lookups.py  LookupBatcher: the lookups of one loop turn in one MGET, one batch
                        in flight at a time; a LookupBatch per MGET
    topology.py         the Topology protocol: how commands reach Redis, implemented by
      single_server.py    SingleServer: one server, standalone or the primary Sentinel names
      cluster.py          ClusterTopology: a Redis Cluster (per-slot commands, 3-step fills)
    lookup_channel.py   LookupChannel: the lean pipelined connection (hiredis) on which a
                        SingleServer sends lookup MGETs
    near.py             NearCache (optional): per-process copies of fresh entries, kept
                        coherent by CLIENT TRACKING
    worker_board.py     WorkerBoard: each app process's figures, for the admin API's /stats
    redis_internals.py  every redis-py internal used, self-checked at import, with fallbacks
    scripts.py          the Lua scripts
    sentinel_url.py     Sentinel-mode URLs, parsed without redis-py (for the settings)
`ClusterStore` (cluster.py) and `SentinelStore` (sentinel.py) are RedisStores that only
build their topology. The key layout itself is documented in `layout.py`.

One lookup: `RedisStore.get` asks the near cache, then `LookupBatcher.get`, which queues the
key; at the end of the loop turn `_flush` makes a `LookupBatch` and hands it to the
topology's `send_now` (on an open lookup channel: the reply is handed to the batch from the
connection's read callback) or else awaits the topology's `read` in a task. The batch's
`answer` decodes each value (`LookupBatcher.resolve`), checks its generation and offers it
to the near cache.

Tag purges and racing fills (`tag_versions.py`). A purge of TAG (1) gives TAG a new
version and the ticket a new P, then (2) walks TAG's index in batches, deleting entries.
(1) is what makes the purge hold: an entry is served only while the versions it recorded
are current, so an entry the walk misses (its index evicted by Redis) is a miss anyway. (2)
frees the memory at once. A fill is stored only if the ticket its lookup read is unchanged
when it reads its tags' versions: a fill that raced a purge stores nothing, the first one
after it does. No clocks are compared.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Final

from redis.asyncio import Redis, RedisCluster

from cachekit.backends import scripts
from cachekit.backends.base import Answer, StoreError, WorkerReport
from cachekit.backends.batched_lookups import LookupBatcher
from cachekit.backends.key_sketches import RedisKeySketches
from cachekit.backends.layout import KeyLayout
from cachekit.backends.near import NearCache
from cachekit.backends.single_server import SingleServer, client_for_url
from cachekit.backends.soft_purge import cardinalities, soften
from cachekit.backends.tag_versions import (
    PURGE_BITS,
    fresh_ticket,
    new_generation,
    new_purge,
    parse_ticket,
    ticket_text,
)
from cachekit.backends.topology import REDIS_ERRORS, Fill, Topology
from cachekit.backends.worker_board import WorkerBoard
from cachekit.entry import CachedResponse
from cachekit.entry_format import encode

log = logging.getLogger("cachekit.redis")

#: Members read from a tag index, and entries deleted, per round trip of a purge.
TAG_BATCH: Final = 500
#: Index members are trimmed this long after their entry expired: a margin for fills still
#: in flight and for clocks of different cluster nodes that disagree slightly.
TRIM_SLACK_MS: Final = 30_000
#: Most expired members trimmed from one tag index per store (bounded work per call).
TRIM_LIMIT: Final = 8

#: Builds the topology of a store from its client and key layout.
TopologyFactory = Callable[[Any, KeyLayout], Topology]


class RedisStore:
    """A `Store` on Redis: one server unless `topology` says otherwise (see the module
    docstring for its parts).

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
        near_max_bytes: int = 0,
        near_max_age: float = 10.0,
        topology: TopologyFactory = SingleServer,
    ) -> None:
        self.layout = layout = KeyLayout(namespace)
        #: How commands reach Redis (`SingleServer` or `ClusterTopology`).
        self.topology = topology(client, layout)
        self._redis = self.topology.client
        self._timeout = timeout
        self._max_variants = max_variants
        # The ticket this process wrote where it was missing: its later fills that looked
        # up before it existed may store under it while it is current (no purge since).
        self._created_ticket: str | None = None
        self._ticket_lock = asyncio.Lock()
        self.trim_slack_ms = TRIM_SLACK_MS
        self._compare_and_delete = client.register_script(scripts.COMPARE_AND_DELETE)
        self._compare_and_set = client.register_script(scripts.COMPARE_AND_SET)
        self._near = self._near_cache(near_max_bytes, near_max_age) if near_max_bytes > 0 else None
        self._lookups = LookupBatcher(self.topology, timeout, self._drop_damaged, self._near)
        # Every name of the layout on the store too (it used to be its own layout): tests
        # and tools address Redis keys through them.
        self.namespace, self.generation_key = layout.namespace, layout.generation_key
        self.entry_prefix, self.stats_key = layout.entry_prefix, layout.stats_key
        self.entry_key, self.lock_key = layout.entry_key, layout.lock_key
        self.variants_key, self.version_key = layout.variants_key, layout.version_key
        self.tag_key = layout.tag_key
        self.key_of_entry = layout.key_of_entry
        self._workers = WorkerBoard(client, layout, self.topology.run)

    def _near_cache(self, max_bytes: int, max_age: float) -> NearCache | None:
        connect = self.topology.near_cache_listener(self.layout.namespace)
        if connect is None:
            log.warning("near cache off: the redis-py internals it needs have changed")
            return None
        return NearCache(connect, self.layout, max_bytes, max_age, self._timeout)

    @classmethod
    def from_url(
        cls, url: str, namespace: str, timeout: float, max_variants: int = 32, **options: Any
    ) -> RedisStore:
        """Connect lazily to `url`; no retries, since every call is bounded by `timeout`.
        `options` are the keyword-only arguments of the constructor."""
        return cls(client_for_url(url, timeout), namespace, timeout, max_variants, **options)

    @property
    def client(self) -> Any:
        """The redis-py client (for operator tooling; the app never needs it)."""
        return self._redis

    @property
    def uses_lookup_channel(self) -> bool:
        """Whether lookups go through the lean pipelined connection (`lookup_channel.py`)."""
        return self.topology.uses_lookup_channel

    @property
    def key_sketches(self) -> RedisKeySketches:
        """The per-handler key counts kept in Redis (`key_census.py`)."""
        return RedisKeySketches(self._redis, self.layout, self.topology.run)

    @property
    def near_cache(self) -> NearCache | None:
        """The near cache in front of Redis, if one is configured."""
        return self._near

    @property
    def lookups(self) -> LookupBatcher:
        """The lookup batcher."""
        return self._lookups

    # ------------------------------------------------------------------ lookups

    def peek(self, key: str, now: float) -> Answer | None:
        """See `Store.peek`: the near cache's fresh copy, if there is one."""
        near = self._near
        return None if near is None else near.lookup(key, now)

    def get(self, key: str) -> asyncio.Future[Answer]:
        """See `Store.get`. Resolves within the store timeout (or with `StoreError`);
        a near-cache hit returns a future already done (awaiting it does not yield)."""
        near = self._near
        if near is not None:
            found = near.lookup(key, time.time())
            if found is not None:
                answered: asyncio.Future[Answer] = asyncio.Future(loop=asyncio.get_running_loop())
                answered.set_result(found)
                return answered
        return self._lookups.get(key)

    async def startup_warnings(self) -> list[str]:
        """See `Store.startup_warnings`: Redis's eviction policy, when it cannot be read.
        Purges hold under every policy; an evicting one only makes purged entries linger
        in memory (never served) until they expire."""
        try:
            reply = await self.topology.run(self.client.config_get("maxmemory-policy"))
        except StoreError as exc:
            return [
                f"could not read Redis's maxmemory-policy ({exc}): cachekit works under every"
                " policy, but check that Redis is not configured to refuse CONFIG"
                " (see README, Invalidation)"
            ]
        if not _policies(reply):
            return ["Redis did not report its maxmemory-policy (see README, Invalidation)"]
        return []

    def stats(self) -> dict[str, Any]:
        """See `Store.stats`: lookup batching, and the near cache's figures."""
        result: dict[str, Any] = {"store": "redis", **self._lookups.stats()}
        if self._near is not None:
            result.update(self._near.stats())
        return result

    async def _drop_damaged(self, key: str, raw: bytes) -> None:
        """Delete the entry of `key` if it still holds these (undecodable) bytes."""
        try:
            async with asyncio.timeout(self._timeout):
                await self._compare_and_delete(keys=[self.layout.entry_key(key)], args=[raw])
        except (*REDIS_ERRORS, TimeoutError) as exc:
            log.debug("could not delete damaged entry %r: %r", key, exc)

    # ------------------------------------------------------------------ writes

    async def set(self, key: str, entry: CachedResponse, conditional: bool = False) -> bool:
        """See `Store.set`. A tagged entry records its tags' versions (see the module
        docstring). Unconditional: stored under the current ticket, whatever `generation`
        the entry says."""
        keep_ms = max(1, int(entry.keep_for() * 1000))
        versions: tuple[str, ...] = ()
        try:
            if not conditional:
                entry = replace(entry, generation=await self._current_ticket())
            elif not entry.generation >> PURGE_BITS:
                # Looked up while the ticket key was missing (a new Redis, or evicted): the
                # fill that creates it goes on under it; if a purge or another fill created
                # it first, this one may have raced a purge and stores nothing.
                ticket = await self._create_ticket()
                if ticket is None:
                    return False
                entry = replace(entry, generation=parse_ticket(ticket.encode()))
            if entry.tags:
                found = await self.topology.prepare(
                    ticket_text(entry.generation), entry.tags, keep_ms
                )
                if found is None:
                    return False
                versions = tuple(found)
            fill = Fill(
                key=key,
                data=encode(entry, versions),
                keep_ms=keep_ms,
                tags=entry.tags,
                max_variants=self._max_variants,
                trim_slack_ms=self.trim_slack_ms,
                trim_limit=TRIM_LIMIT,
            )
            return await self.topology.store(fill)
        finally:
            self._forget((key,))  # even on failure: the write may have happened

    async def _create_ticket(self) -> str | None:
        """Create the missing ticket, or adopt the one this store created (checked by
        PREPARE if the entry is tagged); None when another process or a purge made it.
        Serialized: concurrent fills of one process would otherwise see their own
        creation as someone else's before its reply is read."""
        async with self._ticket_lock:
            ticket = fresh_ticket()
            gen_key = self.layout.generation_key
            if await self.topology.run(self._redis.set(gen_key, ticket, nx=True)):
                self._created_ticket = ticket
                return ticket
            return self._created_ticket

    async def _current_ticket(self) -> int:
        """The ticket now, created first when the key is missing."""
        gen_key = self.layout.generation_key
        await self.topology.run(self._redis.set(gen_key, fresh_ticket(), nx=True))
        return parse_ticket(await self.topology.run(self._redis.get(gen_key)))

    async def delete(self, keys: Sequence[str]) -> int:
        """See `Store.delete`."""
        try:
            return await self.topology.unlink([self.layout.entry_key(key) for key in keys])
        finally:
            self._forget(keys)

    def _forget(self, keys: Iterable[str]) -> None:
        """Drop keys this process just wrote from the near cache, without waiting for
        Redis's invalidation message (so the process reads its own writes)."""
        if self._near is not None:
            for key in keys:
                self._near.invalidate(key)

    async def delete_variants(self, bases: Sequence[str], soft: bool = False) -> int:
        """See `Store.delete_variants`. The ticket first, so that no fill which looked up
        before the purge stores its (maybe older) response after it."""
        if not bases:
            return 0
        await self._mark_purged(())
        layout = self.layout
        async with self._redis.pipeline(transaction=False) as pipe:
            for base in bases:
                pipe.smembers(layout.variants_key(base))
            found = await self.topology.run(pipe.execute())
        keys: list[str] = []
        for base, variants in zip(bases, found, strict=True):
            keys.append(base)
            keys.extend(base + member.decode() for member in variants)
        if soft:
            try:
                return await soften(
                    self._redis,
                    self.topology.run,
                    [layout.entry_key(key) for key in keys],
                    time.time(),
                    delete_if=self._compare_and_delete,
                    replace_if=self._compare_and_set,
                )
            finally:
                self._forget(keys)
        removed = await self.delete(keys)
        await self.topology.unlink([layout.variants_key(base) for base in bases])
        return removed

    async def invalidate_tags(self, tags: Iterable[str], soft: bool = False) -> int:
        """See `Store.invalidate_tags`. New versions and a new ticket first (what makes the
        purge hold), then the entries found in the tag indexes are deleted, batch by batch
        (index members before entries: a fill re-storing a key meanwhile re-indexes it).
        A soft purge only writes soft versions; it reports the entries its tags index."""
        names = list(dict.fromkeys(tags))
        if not names:
            return 0
        await self._mark_purged(names, soft)
        run, layout = self.topology.run, self.layout
        if soft:
            cards = await run(cardinalities(self._redis, map(layout.tag_key, names)))
            return sum(int(card) for card in cards)
        removed = 0
        for tag in names:
            tag_key = layout.tag_key(tag)
            cursor: int = 0
            while True:
                cursor, found = await run(self._redis.zscan(tag_key, cursor, count=TAG_BATCH))
                if found:
                    members = [member for member, _ in found]
                    try:
                        removed += await self.topology.purge_batch(tag_key, members)
                    finally:
                        self._forget(member.decode() for member in members)
                if not cursor:
                    break
        return removed

    async def _mark_purged(self, tags: Sequence[str], soft: bool = False) -> None:
        soft_at_ms = str(int(time.time() * 1000)) if soft else ""
        try:
            await self.topology.mark_purged(tags, new_purge(), new_generation(), soft_at_ms)
        finally:
            if self._near is not None:
                self._near.flush()  # the ticket changed: this process reads its own purge

    async def clear(self) -> None:
        """See `Store.clear`: a new random generation (O(1)); old entries expire on their
        own."""
        try:
            await self.topology.run(self._redis.set(self.layout.generation_key, fresh_ticket()))
        finally:
            if self._near is not None:
                self._near.flush()

    async def acquire_lock(self, key: str, token: str, ttl: float) -> bool:
        """See `Store.acquire_lock` (SET NX PX)."""
        ttl_ms = max(1, int(ttl * 1000))
        lock = self._redis.set(self.layout.lock_key(key), token, nx=True, px=ttl_ms)
        return bool(await self.topology.run(lock))

    async def lock_held(self, key: str) -> bool:
        """See `Store.lock_held`."""
        return bool(await self.topology.run(self._redis.exists(self.layout.lock_key(key))))

    async def release_lock(self, key: str, token: str) -> None:
        """See `Store.release_lock` (compare-and-delete by token)."""
        release = self._compare_and_delete(keys=[self.layout.lock_key(key)], args=[token])
        await self.topology.run(release)

    async def add_counters(self, counts: Mapping[str, int]) -> None:
        """Add these per-process counter increments to the namespace-wide totals."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for name, count in counts.items():
                pipe.hincrby(self.layout.stats_key, name, count)
            await self.topology.run(pipe.execute())

    async def publish_worker(self, worker: str, report: bytes, keep: float, most: int) -> None:
        """See `SharedWorkers.publish_worker` (`worker_board.py`)."""
        await self._workers.publish(worker, report, keep, most)

    async def withdraw_worker(self, worker: str) -> None:
        """See `SharedWorkers.withdraw_worker`."""
        await self._workers.withdraw(worker)

    async def worker_reports(self, most: int) -> list[WorkerReport]:
        """See `SharedWorkers.worker_reports`."""
        return await self._workers.reports(most)

    async def close(self) -> None:
        """Wait briefly for lookups in flight, stop the near cache's listener, then close
        the connections."""
        await self._lookups.close()
        if self._near is not None:
            await self._near.close()
        await self.topology.close()


def _policies(reply: Any) -> list[str]:
    """The maxmemory-policy values of a CONFIG GET reply (one server, or one per node)."""
    if isinstance(reply, dict) and "maxmemory-policy" in reply:
        return [str(reply["maxmemory-policy"])]
    if isinstance(reply, dict):
        return [policy for node in reply.values() for policy in _policies(node)]
    return []
