"""The Redis store (redis.asyncio): batched lookups, generations, tags and fill locks.

Key layout, for namespace `ns` and logical key `k`:
    ns:gen        the namespace generation; clear() increments it (O(1))
    ns:e:{k}      an encoded entry, expiring when its last stale window ends
    ns:l:{k}      the fill lock of k (shares k's cluster hash slot with the entry)
    ns:t:TAG      the set of logical keys stored under TAG
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from typing import Any, Final, cast

from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from cachekit.backends.base import StoreError
from cachekit.entry import CachedResponse, CorruptEntry, decode, encode

log = logging.getLogger("cachekit.redis")

# KEYS[1]: a key; ARGV[1]: the value it must still hold. Deletes the key only if it does.
# Returns 1 when deleted, else 0. Used for lock release and for damaged entries, so a value
# written by someone else in the meantime is never removed.
COMPARE_AND_DELETE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""
TAG_BATCH: Final = 500


class RedisStore:
    """A `Store` on one Redis server. Lookups issued in the same event-loop turn share one
    MGET (together with the generation), so a hit costs a fraction of a round trip."""

    remote = True

    def __init__(self, client: Redis, namespace: str, timeout: float) -> None:
        self._redis = client
        self._namespace = namespace
        self._timeout = timeout
        self._gen_key = f"{namespace}:gen"
        self._pending: dict[str, list[asyncio.Future[tuple[CachedResponse | None, int]]]] = {}
        self._batches: set[asyncio.Task[None]] = set()
        self._compare_and_delete = client.register_script(COMPARE_AND_DELETE)

    @classmethod
    def from_url(cls, url: str, namespace: str, timeout: float) -> RedisStore:
        """Connect lazily to `url`; no retries, since every call is bounded by `timeout`."""
        client = Redis.from_url(
            url,
            socket_connect_timeout=timeout,
            socket_timeout=max(timeout, 1.0),
            retry=Retry(NoBackoff(), 0),
            health_check_interval=30,
        )
        return cls(client, namespace, timeout)

    def entry_key(self, key: str) -> str:
        """The Redis key holding the entry of logical key `key`."""
        return f"{self._namespace}:e:{{{key}}}"

    def lock_key(self, key: str) -> str:
        """The Redis key holding the fill lock of logical key `key`."""
        return f"{self._namespace}:l:{{{key}}}"

    def tag_key(self, tag: str) -> str:
        """The Redis key of the set indexing the entries stored under `tag`."""
        return f"{self._namespace}:t:{tag}"

    def get(self, key: str) -> asyncio.Future[tuple[CachedResponse | None, int]]:
        """See `Store.get`. Resolves within the store timeout (or with `StoreError`)."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[tuple[CachedResponse | None, int]] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.setdefault(key, []).append(waiter)
        return waiter

    def _flush(self) -> None:
        pending, self._pending = self._pending, {}
        task = asyncio.get_running_loop().create_task(self._fetch(pending))
        self._batches.add(task)
        task.add_done_callback(self._batches.discard)

    async def _fetch(
        self, pending: dict[str, list[asyncio.Future[tuple[CachedResponse | None, int]]]]
    ) -> None:
        keys = list(pending)
        try:
            async with asyncio.timeout(self._timeout):
                values = cast(
                    list[bytes | None],
                    await self._redis.mget([self._gen_key, *map(self.entry_key, keys)]),
                )
        except (RedisError, OSError, TimeoutError) as exc:
            error = StoreError(f"redis lookup failed: {exc!r}")
            for waiters in pending.values():
                _fail_all(waiters, error)
            return
        except asyncio.CancelledError:
            for waiters in pending.values():
                _fail_all(waiters, StoreError("redis lookup cancelled"))
            raise
        generation = _as_int(values[0])
        for key, raw in zip(keys, values[1:], strict=True):
            self._resolve(key, raw, generation, pending[key])

    def _resolve(
        self,
        key: str,
        raw: bytes | None,
        generation: int,
        waiters: list[asyncio.Future[tuple[CachedResponse | None, int]]],
    ) -> None:
        result: tuple[CachedResponse | None, int] = (None, generation)
        if raw is not None:
            try:
                entry = decode(raw)
            except CorruptEntry as exc:
                self._spawn(self._drop_damaged(key, raw))
                _fail_all(waiters, exc)
                return
            if entry.generation == generation:
                result = (entry, generation)
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(result)

    async def _drop_damaged(self, key: str, raw: bytes) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                await self._compare_and_delete(keys=[self.entry_key(key)], args=[raw])
        except (RedisError, OSError, TimeoutError) as exc:
            log.debug("could not delete damaged entry %r: %r", key, exc)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._batches.add(task)
        task.add_done_callback(self._batches.discard)

    async def set(self, key: str, entry: CachedResponse) -> None:
        """See `Store.set`. Tag sets live at least as long as their longest member."""
        keep_ms = max(1, int(entry.keep_for() * 1000))
        try:
            data = encode(entry)
        except ValueError as exc:
            raise StoreError(f"entry cannot be encoded: {exc}") from None
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.set(self.entry_key(key), data, px=keep_ms)
            for tag in entry.tags:
                tag_key = self.tag_key(tag)
                pipe.sadd(tag_key, key)
                pipe.pexpire(tag_key, keep_ms, gt=True)
                pipe.pexpire(tag_key, keep_ms, nx=True)
            await self._run(pipe.execute())

    async def delete(self, keys: Sequence[str]) -> int:
        """See `Store.delete`."""
        if not keys:
            return 0
        return int(await self._run(self._redis.unlink(*map(self.entry_key, keys))))

    async def invalidate_tags(self, tags: Iterable[str]) -> int:
        """See `Store.invalidate_tags`: entries in batches, then the tag sets themselves."""
        removed = 0
        for tag in tags:
            tag_key = self.tag_key(tag)
            members: list[bytes] = []
            async for member in self._redis.sscan_iter(tag_key, count=TAG_BATCH):
                members.append(member)
                if len(members) >= TAG_BATCH:
                    removed += await self.delete([m.decode() for m in members])
                    members = []
            removed += await self.delete([m.decode() for m in members])
            await self._run(self._redis.unlink(tag_key))
        return removed

    async def clear(self) -> None:
        """See `Store.clear`: bump the generation; old entries expire on their own."""
        await self._run(self._redis.incr(self._gen_key))

    async def acquire_lock(self, key: str, token: str, ttl: float) -> bool:
        """See `Store.acquire_lock` (SET NX PX)."""
        ttl_ms = max(1, int(ttl * 1000))
        return bool(await self._run(self._redis.set(self.lock_key(key), token, nx=True, px=ttl_ms)))

    async def release_lock(self, key: str, token: str) -> None:
        """See `Store.release_lock` (compare-and-delete by token)."""
        await self._run(self._compare_and_delete(keys=[self.lock_key(key)], args=[token]))

    async def close(self) -> None:
        """Wait briefly for lookups in flight, then close the connection pool."""
        if self._batches:
            await asyncio.wait(set(self._batches), timeout=self._timeout)
        await self._redis.aclose()

    async def _run(self, awaitable: Any) -> Any:
        try:
            return await awaitable
        except (RedisError, OSError) as exc:
            raise StoreError(f"redis call failed: {exc!r}") from None


def _fail_all(waiters: Iterable[asyncio.Future[Any]], error: BaseException) -> None:
    for waiter in waiters:
        if not waiter.done():
            waiter.set_exception(error)


def _as_int(raw: bytes | None) -> int:
    try:
        return int(raw) if raw is not None else 0
    except ValueError:
        return 0
