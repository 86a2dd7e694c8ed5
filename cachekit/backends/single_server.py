"""The topology of one Redis server: a standalone server, or the primary a Sentinel names."""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Any, Final

from redis.asyncio import BlockingConnectionPool, Redis

from cachekit.backends import redis_internals, scripts
from cachekit.backends.batched_lookups import LookupBatch, RawValues, SentBatch
from cachekit.backends.layout import KeyLayout
from cachekit.backends.lookup_channel import LookupChannel, pack_command
from cachekit.backends.near import ListenerFactory
from cachekit.backends.tag_versions import fresh_ticket, new_version
from cachekit.backends.topology import Fill, as_store_error, connection_options, store_atomically

#: Connections per worker process; lookups are batched, so few are busy at once.
MAX_CONNECTIONS: Final = 64


def client_for_url(url: str, timeout: float) -> Redis:
    """A client of the server at `url`, connecting lazily and never retrying, since every
    call is bounded by `timeout`."""
    # A blocking pool: under a burst of misses, stores queue for a connection (bounded by
    # the store timeout) instead of failing with MaxConnectionsError.
    pool = BlockingConnectionPool.from_url(
        url, max_connections=MAX_CONNECTIONS, timeout=timeout, **connection_options(timeout)
    )
    return Redis.from_pool(pool)


class SingleServer:
    """A `Topology` of one server. Lookups go through the lean lookup connection
    (`lookup_channel.py`) when the pool's connections can be reproduced, else through
    redis-py; everything else goes through redis-py. `also_close`: clients closed with it
    (the Sentinels that named the primary)."""

    def __init__(
        self, client: Redis, layout: KeyLayout, *, also_close: Sequence[Redis] = ()
    ) -> None:
        # Typed loosely, as in `Topology`: redis-py types command results as awaitable or not.
        self.client: Any = client
        self._layout = layout
        self._also_close = tuple(also_close)
        self._store_script = client.register_script(scripts.STORE)
        self._prepare_script = client.register_script(scripts.PREPARE)
        self._bump_ticket = client.register_script(scripts.BUMP_TICKET)
        self._replace_versions = client.register_script(scripts.REPLACE_VERSIONS)
        address = redis_internals.channel_address(client.connection_pool)
        self.channel = LookupChannel.for_address(address) if address is not None else None

    @property
    def uses_lookup_channel(self) -> bool:
        """Whether lookups go through the lean pipelined connection (`lookup_channel.py`)
        rather than through redis-py (a pool it cannot reproduce, e.g. Sentinel)."""
        return self.channel is not None

    def run(self, awaitable: Awaitable[Any]) -> Awaitable[Any]:
        """See `Topology.run`."""
        return as_store_error(awaitable)

    # ------------------------------------------------------------------ lookups

    async def read(self, keys: list[str]) -> RawValues:
        """The generation and these entries, in one round trip (one MGET)."""
        values: list[bytes | None]
        if self.channel is not None:
            values = await self.channel.mget_packed(self._packed_mget(keys), len(keys) + 1)
        else:
            layout = self._layout
            values = await self.client.mget([layout.generation_key, *map(layout.entry_key, keys)])
        return values[0], values[1:]

    def send_now(self, keys: list[str], batch: LookupBatch) -> SentBatch | None:
        """See `MgetReads.send_now`: on the lookup channel, when it is connected."""
        channel = self.channel
        if channel is None:
            return None
        return channel.send_now(self._packed_mget(keys), batch)

    def _packed_mget(self, keys: list[str]) -> bytes:
        """`MGET gen-key entry-key...` in RESP."""
        return pack_command("MGET", self._layout.generation_key, *self._layout.entry_keys(keys))

    async def read_versions(self, tags: list[str]) -> RawValues:
        """See `MgetReads.read_versions`: one MGET (atomic on one server)."""
        layout = self._layout
        found = await self.run(
            self.client.mget([layout.generation_key, *map(layout.version_key, tags)])
        )
        return found[0], list(found[1:])

    # ------------------------------------------------------------------ writes

    async def prepare(self, ticket: str, tags: Sequence[str], keep_ms: int) -> list[str] | None:
        """See `Topology.prepare`: one script."""
        layout = self._layout
        versions = await self.run(
            self._prepare_script(
                keys=[layout.generation_key, *map(layout.version_key, tags)],
                args=[ticket, keep_ms, fresh_ticket(), *(new_version() for _ in tags)],
            )
        )
        if versions is None:
            return None
        return [version.decode() for version in versions]

    async def mark_purged(
        self, tags: Sequence[str], purge: str, generation: str, soft_at_ms: str = ""
    ) -> None:
        """See `Topology.mark_purged`: both in one transaction."""
        layout = self._layout
        async with self.client.pipeline(transaction=True) as pipe:
            if tags:
                await self._replace_versions(
                    keys=list(map(layout.version_key, tags)),
                    args=[soft_at_ms, *(new_version() for _ in tags)],
                    client=pipe,
                )
            await self._bump_ticket(
                keys=[layout.generation_key], args=[purge, generation], client=pipe
            )
            await self.run(pipe.execute())

    async def store(self, fill: Fill) -> bool:
        """See `Topology.store`: one atomic script."""
        stored = await self.run(store_atomically(self._store_script, self._layout, fill))
        return int(stored) == 1

    async def unlink(self, redis_keys: Sequence[str]) -> int:
        """See `Topology.unlink`."""
        if not redis_keys:
            return 0
        return int(await self.run(self.client.unlink(*redis_keys)))

    async def purge_batch(self, tag_key: str, members: list[bytes]) -> int:
        """See `Topology.purge_batch`: in this order, in one round trip (a pipeline runs in
        order on one server)."""
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.zrem(tag_key, *members)
            pipe.unlink(*(self._layout.entry_key(member.decode()) for member in members))
            _, removed = await self.run(pipe.execute())
        return int(removed)

    # ------------------------------------------------------------------ the rest

    def near_cache_listener(self, namespace: str) -> ListenerFactory | None:
        """See `Topology.near_cache_listener`: connections made like the pool's."""
        pool = self.client.connection_pool
        return redis_internals.listener_factory(pool, f"cachekit-near:{namespace}")

    async def used_memory(self) -> int:
        """See `Topology.used_memory`."""
        return int((await self.run(self.client.info("memory")))["used_memory"])

    async def close(self) -> None:
        """Close the lookup connection, the pool, and the clients in `also_close`."""
        if self.channel is not None:
            self.channel.close()
        await self.client.aclose()
        for client in self._also_close:
            await client.aclose()
