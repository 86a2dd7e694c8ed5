"""The Redis Cluster topology, and `ClusterStore`: the Redis store with commands kept per slot.

What changes on a cluster, and why:

- Lookups: the generation key and the entries live in different slots, so one batch is a
  pipeline of `GET ns:gen` plus one MGET per slot; redis-py sends each node its share in
  one round trip, all nodes in parallel.
- Deletes (tag purges, variants, keys): one UNLINK per slot, pipelined the same way.
- Fills of tagged entries: an entry and its tag indexes live in different slots, so the
  single atomic script of the standalone store cannot run. A fill takes three steps:
  (1) park the entry under `ns:p:{b}#v` (never read by lookups) with a fill token;
  (2) per tag, atomically check the purge marker and add the index member;
  (3) publish the parked entry if it still carries the token (else nothing).
  A purge writes its markers first, then per index batch removes the members and deletes
  both the entries and the parked copies. A fill that reaches (2) after the marker stores
  nothing; one that passed (2) before it had its member in the index during the purge's
  walk, so the purge deletes the parked copy (then (3) publishes nothing) or, if (3) came
  first, the published entry. Either way no entry of a purged tag is served afterwards.
  Parked copies live `PENDING_MS`, less than the index trim slack, so a published entry
  always expires before its index member may be trimmed.
- No near cache: tracking is per server; it would need one listener per node.
"""

from __future__ import annotations

import asyncio
import secrets
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
from cachekit.backends.topology import (
    REDIS_ERRORS,
    Fill,
    as_store_error,
    connection_options,
    store_atomically,
)

#: Lifetime of a parked entry: the longest a fill may take between steps (1) and (3).
PENDING_MS: Final = 5_000
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
        self._park = client.register_script(scripts.PENDING)
        self._publish = client.register_script(scripts.PROMOTE)

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
        """Remove members from the index (awaited: the UNLINKs go to other nodes, and must
        come after), then delete their entries and parked fills, one UNLINK per slot.
        The count includes parked fills (rare: fills in flight), which are entries too."""
        await self.run(self.client.zrem(tag_key, *members))
        keys = [member.decode() for member in members]
        layout = self._layout
        groups = by_slot([layout.entry_key(key) for key in keys]).values()
        return await self._unlink_groups(
            [
                [k for i, entry in slot_keys for k in (entry, layout.pending_key(keys[i]))]
                for slot_keys in groups
            ]
        )

    async def store(self, fill: Fill) -> bool:
        """Untagged entries: the atomic script (all its keys share the slot of `{b}`).
        Tagged entries: park, check and index per tag, publish (see the module docstring)."""
        layout = self._layout
        if not fill.tags:
            stored = await self.run(store_atomically(self._store_script, layout, fill))
            return int(stored) == 1
        key = fill.key
        base, mark, variant = key.partition("#")
        token = secrets.token_hex(8).encode()
        pending = layout.pending_key(key)
        parked = await self.run(
            self._park(
                keys=[pending, layout.variants_key(base)],
                args=[
                    token + fill.data,
                    PENDING_MS,
                    mark + variant,
                    fill.max_variants,
                    layout.entry_key(base),
                    layout.pending_key(base),
                    fill.keep_ms,
                ],
            )
        )
        if not int(parked):
            return False
        pipe = self.client.pipeline(transaction=False)
        for tag in fill.tags:
            # EVAL, not EVALSHA: a cluster pipeline cannot load missing scripts on the fly.
            pipe.execute_command(
                "EVAL",
                scripts.TAG_ADD,
                2,
                layout.tag_key(tag),
                layout.purge_marker_key(tag),
                key,
                fill.keep_ms,
                "" if fill.since is None else fill.since,
                fill.trim_slack_ms,
                fill.trim_limit,
            )
        indexed = await self.run(pipe.execute())
        publish = all(int(flag) == 1 for flag in indexed)
        published = await self.run(
            self._publish(
                keys=[pending, layout.entry_key(key)], args=[token, fill.keep_ms, int(publish)]
            )
        )
        return publish and int(published) == 1

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
