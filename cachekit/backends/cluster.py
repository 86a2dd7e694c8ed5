"""The Redis Cluster topology, and `ClusterStore`: the Redis store with commands kept per slot.

What changes on a cluster, and why:

- Lookups: the generation key and the entries live in different slots, so one batch is a
  pipeline of `GET ns:gen` plus one MGET per slot; redis-py sends each node its share in
  one round trip, all nodes in parallel.
- Deletes (tag purges, variants, keys): one UNLINK per slot, pipelined the same way.
- Tag versions and the ticket (`tag_versions.py`) live in different slots, so what one
  script does on a single server takes ordered steps here:
  a fill reads (or creates) its tags' versions first and compares the ticket afterwards;
  a purge gives the ticket a new P, then the tags new versions, then the ticket another P;
  a lookup that fetches versions reads the ticket first. So a fill that read a replaced
  version also sees a changed ticket (and stores nothing), and a process never keeps a
  replaced version under the final ticket. An entry is stored (entry and variant set
  share its slot) and then indexed per tag, best effort: purges rely on the versions.
- No near cache: tracking is per server; it would need one listener per node.
"""

from __future__ import annotations

import asyncio
from binascii import crc_hqx
from collections import defaultdict
from collections.abc import Awaitable, Sequence
from typing import Any, Final

from redis.asyncio import RedisCluster

from cachekit.backends import redis_internals, scripts
from cachekit.backends.base import StoreError
from cachekit.backends.batched_lookups import LookupBatch, RawValues, SentBatch
from cachekit.backends.layout import KeyLayout
from cachekit.backends.near import ListenerFactory
from cachekit.backends.redis import RedisStore
from cachekit.backends.tag_versions import fresh_ticket, new_purge, new_version
from cachekit.backends.topology import (
    REDIS_ERRORS,
    Fill,
    as_store_error,
    connection_options,
    store_atomically,
)

#: Most commands per cluster pipeline when deleting many keys (see `_unlink_groups`).
PIPELINE_COMMANDS: Final = 100
#: Most store calls in flight at once (each holds at most one connection per node).
MAX_CALLS: Final = 64
#: Hash slots of a Redis Cluster.
SLOTS: Final = 16384


class ClusterStore(RedisStore):
    """A `RedisStore` on a Redis Cluster (`redis.asyncio.cluster.RedisCluster`), through a
    `ClusterTopology`."""

    def __init__(
        self,
        client: RedisCluster,
        namespace: str,
        timeout: float,
        max_variants: int = 32,
        **options: Any,
    ) -> None:
        super().__init__(
            client, namespace, timeout, max_variants, topology=ClusterTopology, **options
        )

    @classmethod
    def from_url(
        cls, url: str, namespace: str, timeout: float, max_variants: int = 32, **options: Any
    ) -> ClusterStore:
        """Discover the cluster from the startup node in `url` on first use; never retry."""
        client = RedisCluster.from_url(url, **connection_options(timeout))
        return cls(client, namespace, timeout, max_variants, **options)


class ClusterTopology:
    """A `Topology` of a Redis Cluster (see the module docstring)."""

    uses_lookup_channel = False

    def __init__(self, client: RedisCluster, layout: KeyLayout) -> None:
        # Typed loosely, as in `Topology`: redis-py types command results as awaitable or not.
        self.client: Any = client
        self._layout = layout
        self._discovering = asyncio.Lock()
        # redis-py's cluster pool fails (MaxConnectionsError) instead of queueing past 100
        # connections per node; queue here instead, bounded by the callers' timeouts.
        self._calls = asyncio.Semaphore(MAX_CALLS)
        self._store_script = client.register_script(scripts.STORE)

    async def _ready(self) -> None:
        """Discover the cluster before sending commands, one caller at a time: redis-py
        8's cluster client breaks connections of concurrent callers when many commands
        arrive while it (re)discovers the topology (at startup, after a node failure)."""
        if redis_internals.cluster_needs_discovery(self.client):
            async with self._discovering:
                await self.client.initialize()

    async def run(self, awaitable: Awaitable[Any]) -> Any:
        """See `Topology.run`: once the cluster is discovered, at most `MAX_CALLS` at once."""
        started = False
        try:
            async with self._calls:
                try:
                    await self._ready()
                except REDIS_ERRORS as exc:
                    raise StoreError(f"redis cluster unreachable: {exc!r}") from None
                started = True
                return await as_store_error(awaitable)
        finally:
            if not started and hasattr(awaitable, "close"):
                awaitable.close()  # never awaited: say so quietly

    # ------------------------------------------------------------------ lookups

    async def read(self, keys: list[str]) -> RawValues:
        """The generation and these entries: one pipeline of a GET and per-slot MGETs."""
        groups = by_slot([self._layout.entry_key(key) for key in keys])
        async with self._calls:
            await self._ready()
            pipe = self.client.pipeline(transaction=False)
            pipe.execute_command("GET", self._layout.generation_key)
            for slot_keys in groups.values():
                pipe.execute_command("MGET", *(key for _, key in slot_keys))
            replies = await pipe.execute()
        values: list[bytes | None] = [None] * len(keys)
        for slot_keys, found in zip(groups.values(), replies[1:], strict=True):
            for (index, _), value in zip(slot_keys, found, strict=True):
                values[index] = value
        return replies[0], values

    def send_now(self, keys: list[str], batch: LookupBatch) -> SentBatch | None:
        """Never: a cluster batch is read in a task (`read`)."""
        return None

    async def read_versions(self, tags: list[str]) -> RawValues:
        """See `MgetReads.read_versions`: the ticket first, then the versions."""
        ticket = await self.run(self.client.get(self._layout.generation_key))
        pipe = self.client.pipeline(transaction=False)
        for tag in tags:
            pipe.execute_command("GET", self._layout.version_key(tag))
        return ticket, list(await self.run(pipe.execute()))

    # ------------------------------------------------------------------ writes

    async def unlink(self, redis_keys: Sequence[str]) -> int:
        """One UNLINK per slot; how many keys existed."""
        groups = by_slot(redis_keys).values()
        return await self._unlink_groups([[key for _, key in slot_keys] for slot_keys in groups])

    async def _unlink_groups(self, groups: list[list[str]]) -> int:
        """UNLINK each group (keys of one slot), `PIPELINE_COMMANDS` groups per pipeline.

        Pipelines are sent one after the other: redis-py spends a lot of CPU per cluster
        pipeline command, so one pipeline of a whole purge batch would hold the event loop
        for tens of milliseconds.
        """
        removed = 0
        for start in range(0, len(groups), PIPELINE_COMMANDS):
            pipe = self.client.pipeline(transaction=False)
            for keys in groups[start : start + PIPELINE_COMMANDS]:
                pipe.execute_command("UNLINK", *keys)
            removed += sum(int(count) for count in await self.run(pipe.execute()))
        return removed

    async def purge_batch(self, tag_key: str, members: list[bytes]) -> int:
        """Remove members from the index, then delete their entries, one UNLINK per slot."""
        await self.run(self.client.zrem(tag_key, *members))
        return await self.unlink([self._layout.entry_key(member.decode()) for member in members])

    async def prepare(self, ticket: str, tags: Sequence[str], keep_ms: int) -> list[str] | None:
        """See `Topology.prepare`: the versions (one script call per tag's slot), then the
        ticket."""
        layout = self._layout
        pipe = self.client.pipeline(transaction=False)
        for tag in tags:
            # EVAL, not EVALSHA: a cluster pipeline cannot load missing scripts on the fly.
            pipe.execute_command(
                "EVAL", scripts.TAG_VERSION, 1, layout.version_key(tag), new_version(), keep_ms
            )
        versions = [version.decode() for version in await self.run(pipe.execute())]
        current = await self.run(self.client.get(layout.generation_key))
        if current is None:
            await self.run(self.client.set(layout.generation_key, fresh_ticket(), nx=True))
            return None
        if current.decode() not in (ticket, ticket.removesuffix(":0")):
            return None
        return versions

    async def mark_purged(
        self, tags: Sequence[str], purge: str, generation: str, soft_at_ms: str = ""
    ) -> None:
        """See `Topology.mark_purged`: ticket, versions, ticket (see the module docstring)."""
        layout = self._layout

        async def bump(value: str) -> None:
            await self.run(
                self.client.execute_command(
                    "EVAL", scripts.BUMP_TICKET, 1, layout.generation_key, value, generation
                )
            )

        await bump(purge)
        if not tags:
            return
        pipe = self.client.pipeline(transaction=False)
        for tag in tags:
            pipe.execute_command(
                "EVAL",
                scripts.REPLACE_VERSIONS,
                1,
                layout.version_key(tag),
                soft_at_ms,
                new_version(),
            )
        await self.run(pipe.execute())
        await bump(new_purge())

    async def store(self, fill: Fill) -> bool:
        """The entry and its variant set (one slot) in one script, then one index member
        per tag (in each tag's slot)."""
        layout = self._layout
        stored = await self.run(store_atomically(self._store_script, layout, fill, index=False))
        if int(stored) != 1:
            return False
        if fill.tags:
            pipe = self.client.pipeline(transaction=False)
            for tag in fill.tags:
                pipe.execute_command(
                    "EVAL",
                    scripts.TAG_ADD,
                    1,
                    layout.tag_key(tag),
                    fill.key,
                    fill.keep_ms,
                    fill.trim_slack_ms,
                    fill.trim_limit,
                )
            await self.run(pipe.execute())
        return True

    # ------------------------------------------------------------------ the rest

    def near_cache_listener(self, namespace: str) -> ListenerFactory | None:
        """Refused: see the module docstring."""
        raise ValueError("the near cache is not supported on a Redis Cluster")

    async def used_memory(self) -> int:
        """See `Topology.used_memory`: summed over the primaries."""
        info = self.client.info("memory", target_nodes=self.client.PRIMARIES)
        per_node = await self.run(info)
        return sum(int(node["used_memory"]) for node in per_node.values())

    async def close(self) -> None:
        """Close the connections to every node."""
        await self.client.aclose()


def key_slot(redis_key: bytes) -> int:
    """The cluster slot of `redis_key` (the Redis Cluster spec: CRC16 of its hash tag)."""
    start = redis_key.find(b"{")
    if start > -1:
        end = redis_key.find(b"}", start + 1)
        if end > start + 1:
            redis_key = redis_key[start + 1 : end]
    return crc_hqx(redis_key, 0) % SLOTS


def by_slot(redis_keys: Sequence[str]) -> dict[int, list[tuple[int, str]]]:
    """Keys grouped by cluster slot, each with its position in `redis_keys`."""
    groups: defaultdict[int, list[tuple[int, str]]] = defaultdict(list)
    for index, key in enumerate(redis_keys):
        groups[key_slot(key.encode())].append((index, key))
    return groups
