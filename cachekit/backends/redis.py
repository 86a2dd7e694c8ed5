"""The Redis store (redis.asyncio): batched lookups, generations, tags and fill locks.

Key layout, for namespace `ns` and logical key `k` = base `b` + optional `#variant`:
    ns:gen          the namespace generation; clear() increments it (O(1))
    ns:e:{b}#v      an encoded entry, expiring when its last stale window ends
    ns:l:{b}#v      the fill lock of that entry
    ns:v:{b}        the set of variant suffixes stored for base b (Vary), capped
    ns:t:TAG        the set of logical keys stored under TAG
Everything about one base key shares the hash tag `{b}`, hence one Redis Cluster slot.
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
# KEYS[1]: the entry key; KEYS[2]: the variant set of its base key.
# ARGV[1]: encoded entry; ARGV[2]: lifetime in ms; ARGV[3]: the variant suffix;
# ARGV[4]: most variants per base; ARGV[5]: the entry-key prefix of the base.
# Stores the entry and records the variant unless the base already has ARGV[4] live variants
# and this one is new (variants whose entries expired are trimmed first). Returns 1 if stored.
SET_VARIANT: Final = """
if redis.call('SISMEMBER', KEYS[2], ARGV[3]) == 0 then
    if redis.call('SCARD', KEYS[2]) >= tonumber(ARGV[4]) then
        for _, member in ipairs(redis.call('SMEMBERS', KEYS[2])) do
            if redis.call('EXISTS', ARGV[5] .. member) == 0 then
                redis.call('SREM', KEYS[2], member)
            end
        end
        if redis.call('SCARD', KEYS[2]) >= tonumber(ARGV[4]) then
            return 0
        end
    end
    redis.call('SADD', KEYS[2], ARGV[3])
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[2]) then
    redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
return 1
"""
TAG_BATCH: Final = 500


class RedisStore:
    """A `Store` on one Redis server. Lookups issued in the same event-loop turn share one
    MGET (together with the generation), so a hit costs a fraction of a round trip."""

    remote = True

    def __init__(
        self, client: Redis, namespace: str, timeout: float, max_variants: int = 32
    ) -> None:
        self._redis = client
        self._namespace = namespace
        self._timeout = timeout
        self._max_variants = max_variants
        self._gen_key = f"{namespace}:gen"
        self._pending: dict[str, list[asyncio.Future[tuple[CachedResponse | None, int]]]] = {}
        self._batches: set[asyncio.Task[None]] = set()
        self._compare_and_delete = client.register_script(COMPARE_AND_DELETE)
        self._set_variant = client.register_script(SET_VARIANT)

    @classmethod
    def from_url(
        cls, url: str, namespace: str, timeout: float, max_variants: int = 32
    ) -> RedisStore:
        """Connect lazily to `url`; no retries, since every call is bounded by `timeout`."""
        client = Redis.from_url(
            url,
            socket_connect_timeout=timeout,
            socket_timeout=max(timeout, 1.0),
            retry=Retry(NoBackoff(), 0),
            health_check_interval=30,
        )
        return cls(client, namespace, timeout, max_variants)

    def entry_key(self, key: str) -> str:
        """The Redis key holding the entry of logical key `key`."""
        base, mark, variant = key.partition("#")
        return f"{self._namespace}:e:{{{base}}}{mark}{variant}"

    def lock_key(self, key: str) -> str:
        """The Redis key holding the fill lock of logical key `key`."""
        base, mark, variant = key.partition("#")
        return f"{self._namespace}:l:{{{base}}}{mark}{variant}"

    def variants_key(self, base: str) -> str:
        """The Redis key of the set of variant suffixes stored for base key `base`."""
        return f"{self._namespace}:v:{{{base}}}"

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

    async def set(self, key: str, entry: CachedResponse) -> bool:
        """See `Store.set`. Tag sets live at least as long as their longest member."""
        keep_ms = max(1, int(entry.keep_for() * 1000))
        data = encode(entry)
        base, mark, variant = key.partition("#")
        if mark:
            stored = await self._run(
                self._set_variant(
                    keys=[self.entry_key(key), self.variants_key(base)],
                    args=[data, keep_ms, mark + variant, self._max_variants, self.entry_key(base)],
                )
            )
            if not stored:
                return False
        async with self._redis.pipeline(transaction=False) as pipe:
            if not mark:
                pipe.set(self.entry_key(key), data, px=keep_ms)
            for tag in entry.tags:
                tag_key = self.tag_key(tag)
                pipe.sadd(tag_key, key)
                pipe.pexpire(tag_key, keep_ms, gt=True)
                pipe.pexpire(tag_key, keep_ms, nx=True)
            await self._run(pipe.execute())
        return True

    async def delete(self, keys: Sequence[str]) -> int:
        """See `Store.delete`."""
        if not keys:
            return 0
        return int(await self._run(self._redis.unlink(*map(self.entry_key, keys))))

    async def delete_variants(self, bases: Sequence[str]) -> int:
        """See `Store.delete_variants`."""
        keys: list[str] = []
        for base in bases:
            variants = await self._run(self._redis.smembers(self.variants_key(base)))
            keys.append(base)
            keys.extend(base + member.decode() for member in variants)
        removed = await self.delete(keys)
        if bases:
            await self._run(self._redis.unlink(*map(self.variants_key, bases)))
        return removed

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
