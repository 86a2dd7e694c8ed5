"""The Redis Cluster store: the Redis store's features with every command kept in one slot.

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
"""

from __future__ import annotations

import asyncio
import secrets
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, Final

from redis.asyncio import RedisCluster
from redis.crc import key_slot

from cachekit.backends import scripts
from cachekit.backends.base import StoreError
from cachekit.backends.batched_lookups import REDIS_ERRORS
from cachekit.backends.redis import TRIM_LIMIT, RedisStore, connection_options

#: Lifetime of a parked entry: the longest a fill may take between steps (1) and (3).
PENDING_MS: Final = 5_000
#: Most commands per cluster pipeline when deleting many keys (see `_unlink_groups`).
PIPELINE_COMMANDS: Final = 100
#: Most store calls in flight at once (each holds at most one connection per node).
MAX_CALLS: Final = 64


class ClusterStore(RedisStore):
    """A `Store` on a Redis Cluster (`redis.asyncio.cluster.RedisCluster`)."""

    def __init__(
        self,
        client: RedisCluster,
        namespace: str,
        timeout: float,
        max_variants: int = 32,
        **options: Any,
    ) -> None:
        super().__init__(client, namespace, timeout, max_variants, **options)
        self._discovering = asyncio.Lock()
        # redis-py's cluster pool fails (MaxConnectionsError) instead of queueing past 100
        # connections per node; queue here instead, bounded by the callers' timeouts.
        self._calls = asyncio.Semaphore(MAX_CALLS)
        self._park = client.register_script(scripts.PENDING)
        self._publish = client.register_script(scripts.PROMOTE)

    @classmethod
    def from_url(
        cls, url: str, namespace: str, timeout: float, max_variants: int = 32, **options: Any
    ) -> ClusterStore:
        """Discover the cluster from the startup node in `url` on first use; never retry."""
        client = RedisCluster.from_url(url, **connection_options(timeout))
        return cls(client, namespace, timeout, max_variants, **options)

    async def _ready(self) -> None:
        """Discover the cluster before sending commands, one caller at a time.

        redis-py 8's cluster client breaks connections of concurrent callers when many
        commands arrive while it (re)discovers the topology (at startup, after a node
        failure); so callers wait here until discovery is done. Reads a private flag of
        redis-py: if it disappears, this merely stops guarding.
        """
        if getattr(self._redis, "_initialize", False):
            async with self._discovering:
                await self._redis.initialize()

    async def _run(self, awaitable: Any) -> Any:
        """Run one store call once the cluster is discovered, at most `MAX_CALLS` at once."""
        started = False
        try:
            async with self._calls:
                try:
                    await self._ready()
                except REDIS_ERRORS as exc:
                    raise StoreError(f"redis cluster unreachable: {exc!r}") from None
                started = True
                return await super()._run(awaitable)
        finally:
            if not started and hasattr(awaitable, "close"):
                awaitable.close()  # never awaited: say so quietly

    async def _read(self, keys: list[str]) -> tuple[bytes | None, list[bytes | None]]:
        """The generation and these entries: one pipeline of a GET and per-slot MGETs."""
        groups = _by_slot([self.entry_key(key) for key in keys])
        async with self._calls:
            await self._ready()
            pipe = self._redis.pipeline(transaction=False)
            pipe.execute_command("GET", self._gen_key)
            for slot_keys in groups.values():
                pipe.execute_command("MGET", *(key for _, key in slot_keys))
            replies = await pipe.execute()
        values: list[bytes | None] = [None] * len(keys)
        for slot_keys, found in zip(groups.values(), replies[1:], strict=True):
            for (index, _), value in zip(slot_keys, found, strict=True):
                values[index] = value
        return replies[0], values

    async def _unlink(self, redis_keys: Sequence[str]) -> int:
        """One UNLINK per slot; how many keys existed."""
        groups = _by_slot(redis_keys).values()
        return await self._unlink_groups([[key for _, key in slot_keys] for slot_keys in groups])

    async def _unlink_groups(self, groups: list[list[str]]) -> int:
        """UNLINK each group (keys of one slot), `PIPELINE_COMMANDS` groups per pipeline.

        Pipelines are sent one after the other: redis-py spends some 50 us of CPU per
        cluster pipeline command, so one pipeline of a whole purge batch would hold the
        event loop for tens of milliseconds.
        """
        removed = 0
        for start in range(0, len(groups), PIPELINE_COMMANDS):
            pipe = self._redis.pipeline(transaction=False)
            for keys in groups[start : start + PIPELINE_COMMANDS]:
                pipe.execute_command("UNLINK", *keys)
            removed += sum(int(count) for count in await self._run(pipe.execute()))
        return removed

    async def _purge_batch(self, tag_key: str, members: list[bytes]) -> int:
        """Remove members from the index (awaited: the UNLINKs go to other nodes, and must
        come after), then delete their entries and parked fills, one UNLINK per slot.
        The count includes parked fills (rare: fills in flight), which are entries too."""
        await self._run(self._redis.zrem(tag_key, *members))
        keys = [member.decode() for member in members]
        groups = _by_slot([self.entry_key(key) for key in keys]).values()
        return await self._unlink_groups(
            [
                [k for i, entry in slot_keys for k in (entry, self.pending_key(keys[i]))]
                for slot_keys in groups
            ]
        )

    async def _store(
        self, key: str, tags: Sequence[str], data: bytes, keep_ms: int, since: int | None
    ) -> bool:
        """Untagged entries: the atomic script (all its keys share the slot of `{b}`).
        Tagged entries: park, check and index per tag, publish (see the module docstring)."""
        if not tags:
            return await super()._store(key, tags, data, keep_ms, since)
        base, mark, variant = key.partition("#")
        token = secrets.token_hex(8).encode()
        pending = self.pending_key(key)
        parked = await self._run(
            self._park(
                keys=[pending, self.variants_key(base)],
                args=[
                    token + data,
                    PENDING_MS,
                    mark + variant,
                    self._max_variants,
                    self.entry_key(base),
                    self.pending_key(base),
                    keep_ms,
                ],
            )
        )
        if not int(parked):
            return False
        pipe = self._redis.pipeline(transaction=False)
        for tag in tags:
            # EVAL, not EVALSHA: a cluster pipeline cannot load missing scripts on the fly.
            pipe.execute_command(
                "EVAL",
                scripts.TAG_ADD,
                2,
                self.tag_key(tag),
                self.purge_marker_key(tag),
                key,
                keep_ms,
                "" if since is None else since,
                self.trim_slack_ms,
                TRIM_LIMIT,
            )
        indexed = await self._run(pipe.execute())
        publish = all(int(flag) == 1 for flag in indexed)
        published = await self._run(
            self._publish(keys=[pending, self.entry_key(key)], args=[token, keep_ms, int(publish)])
        )
        return publish and int(published) == 1


def _by_slot(redis_keys: Sequence[str]) -> dict[int, list[tuple[int, str]]]:
    """Keys grouped by cluster slot, each with its position in `redis_keys`."""
    groups: defaultdict[int, list[tuple[int, str]]] = defaultdict(list)
    for index, key in enumerate(redis_keys):
        groups[key_slot(key.encode())].append((index, key))
    return groups
