"""The `Cache` facade: guarded store access, statistics, invalidation and clearing."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any, Final

from aiohttp.web import UrlDispatcher

from cachekit.backends.base import Store, StoreError
from cachekit.backends.memory import MemoryStore
from cachekit.entry import CachedResponse, CorruptEntry
from cachekit.flight import Flights
from cachekit.guard import CircuitBreaker, RateLimitedLog
from cachekit.invalidation import handler_base_key
from cachekit.settings import CacheSettings

log = logging.getLogger("cachekit")

#: Generation value meaning "the lookup failed; do not store what the handler produces".
UNKNOWN_GENERATION: Final = -1
#: What a store lookup raises when it fails: a damaged entry, an unreachable store.
LOOKUP_FAILURES: Final = (CorruptEntry, StoreError, TimeoutError)
#: Bound on explicit operations (invalidate, purge by tag, clear), which may touch many keys.
ADMIN_TIMEOUT: Final = 30.0
#: Counters published to a shared store for `python -m cachekit stats`.
PUBLISHED_COUNTERS: Final = ("hits", "stale_hits", "misses", "stores", "bypasses", "errors")


@dataclass(slots=True)
class CacheStats:
    """Counters since startup, for this process."""

    hits: int = 0
    stale_hits: int = 0
    misses: int = 0
    stores: int = 0
    bypasses: int = 0
    errors: int = 0
    skipped: int = 0
    coalesced: int = 0
    lock_waits: int = 0
    lock_timeouts: int = 0
    refreshes: int = 0
    refresh_errors: int = 0
    stale_if_error: int = 0


class Cache:
    """One app's cache: its settings, its store and its counters.

    Every store call goes through `lookup`/`save`/`_guarded`, which bound it by the store
    timeout, feed the circuit breaker and turn failures into "not cached".
    """

    def __init__(
        self,
        settings: CacheSettings,
        store: Store | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store: Store = (
            store
            if store is not None
            else MemoryStore(settings.memory_max_bytes, max_variants=settings.max_variants)
        )
        self.clock = clock
        self.counters = CacheStats()
        self.breaker = CircuitBreaker(settings.failure_threshold, settings.failure_cooldown)
        self._damage_log = RateLimitedLog()
        self.flights = Flights()
        #: Fill locks whose holder stopped answering, until when (loop time) they may remain.
        self.stuck_locks: dict[str, float] = {}
        #: Request headers each handler's responses were seen to vary on (by handler name).
        self.learned_vary: dict[str, tuple[str, ...]] = {}
        #: The app's router, set by `setup_cache`, to find a handler's route for purges.
        self.router: UrlDispatcher | None = None
        self._published: dict[str, int] = {}

    def stats(self) -> dict[str, Any]:
        """Counters (hits, misses, stores, bypasses, errors, ...) plus store facts; on Redis,
        `lookup_batches` and `lookup_keys` (MGETs sent and the keys they carried: their
        ratio is the batching) and `lookups_waiting`; with a near cache, its `near_*`
        figures (`near_hits` counts hits it answered, a subset of `hits`)."""
        result: dict[str, Any] = asdict(self.counters)
        result["breaker_open"] = self.breaker.is_open
        result.update(self.store.stats())
        return result

    async def lookup(self, key: str) -> tuple[CachedResponse | None, int]:
        """The entry for `key`, or None; never raises. A failed lookup reports
        `UNKNOWN_GENERATION` so the caller does not try to store afterwards."""
        answer = self.store.peek(key, self.clock())
        if answer is not None:
            return answer
        looking = self.start_lookup(key)
        if looking is None:
            return None, UNKNOWN_GENERATION
        try:
            result = await looking
        except LOOKUP_FAILURES as exc:
            return self.lookup_failed(key, exc)
        self.breaker.record_success()
        return result

    def start_lookup(self, key: str) -> Awaitable[tuple[CachedResponse | None, int]] | None:
        """The store's lookup of `key`, under way, for callers that await it themselves
        (the Redis hit path, one coroutine fewer than `lookup`) and then report how it went
        as `lookup` does: `breaker.record_success()`, or `lookup_failed` for one of
        `LOOKUP_FAILURES`. None when the circuit breaker skips the store (counted)."""
        if not self.breaker.allow():
            self.counters.skipped += 1
            return None
        return self.store.get(key)

    def lookup_failed(self, key: str, exc: Exception) -> tuple[None, int]:
        """Count and log a lookup that raised one of `LOOKUP_FAILURES`; its result."""
        if isinstance(exc, CorruptEntry):
            self.counters.errors += 1
            self._damage_log.warning("damaged cache entry %r dropped: %s", key, exc)
        else:
            self._failed(exc)
        return None, UNKNOWN_GENERATION

    async def save(self, key: str, entry: CachedResponse, started_at: float) -> bool:
        """Store an entry; False (after counting and logging) when the store failed.

        `started_at`: wall-clock time (`time.time()`) taken before the handler ran. If one
        of the entry's tags was purged since, nothing is stored (False): the response may
        predate the purge.
        """
        if entry.generation == UNKNOWN_GENERATION:
            return False
        try:
            stored = await self._guarded(self.store.set(key, entry, started_at))
        except ValueError as exc:  # e.g. a NUL byte in a header: cannot be kept faithfully
            log.debug("response for %r not storable: %s", key, exc)
            return False
        if stored:
            self.counters.stores += 1
        return stored

    async def invalidate(self, *targets: str | Callable[..., Any], **params: str) -> int:
        """Remove entries, with all their Vary variants; returns how many existed.

        A target is a logical key (`"product:7"`) or a `@cached` handler: then the entries
        a GET of its route with `params` would hit (`invalidate(get_product, id="7")`).
        Raises `StoreError` when the store cannot be reached: an invalidation that silently
        did nothing would leave stale data in place.
        """
        bases = [
            target
            if isinstance(target, str)
            else handler_base_key(target, self.router, {k: str(v) for k, v in params.items()})
            for target in targets
        ]
        if params and all(isinstance(target, str) for target in targets):
            raise TypeError("parameters are only meaningful with a @cached handler")
        return int(await self._strict(self.store.delete_variants(bases)))

    async def invalidate_tags(self, *tags: str) -> int:
        """Remove every entry stored under any of these tags; raises `StoreError` on failure."""
        return int(await self._strict(self.store.invalidate_tags(tags)))

    async def clear(self) -> None:
        """Drop every entry of this namespace; raises `StoreError` on failure."""
        await self._strict(self.store.clear())

    async def publish_counters(self) -> None:
        """Add this process's counters since the last call to the store's shared totals
        (a shared store only; failures are counted, never raised)."""
        if not self.store.remote:
            return
        current = {name: int(getattr(self.counters, name)) for name in PUBLISHED_COUNTERS}
        delta = {
            name: value - self._published.get(name, 0)
            for name, value in current.items()
            if value != self._published.get(name, 0)
        }
        if delta and await self._guarded(self.store.add_counters(delta)):
            self._published = current

    async def publish_counters_every(self, interval: float) -> None:
        """Publish counters every `interval` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            await self.publish_counters()

    async def close(self) -> None:
        """Finish (or cancel) fills and refreshes, then release the store's connections."""
        await self.flights.close(grace=self.settings.redis_timeout + 1.0)
        await self.store.close()

    async def try_lock(self, key: str, token: str) -> bool | None:
        """Take the cross-process fill lock of `key`: True if ours, False if held by
        someone else, None if the store could not say (the caller then fills unlocked)."""
        if not self.store.remote:
            return True
        if not self.breaker.allow():
            return None
        try:
            async with asyncio.timeout(self.settings.redis_timeout):
                acquired = await self.store.acquire_lock(key, token, self.settings.lock_ttl)
        except (StoreError, TimeoutError) as exc:
            self._failed(exc)
            return None
        self.breaker.record_success()
        return acquired

    async def unlock(self, key: str, token: str) -> None:
        """Release our fill lock; a failure only means it expires after `lock_ttl`."""
        if self.store.remote:
            await self._guarded(self.store.release_lock(key, token))

    async def lock_held(self, key: str) -> bool | None:
        """Whether someone holds the fill lock of `key`; None if the store cannot say."""
        if not self.breaker.allow():
            return None
        try:
            async with asyncio.timeout(self.settings.redis_timeout):
                held = await self.store.lock_held(key)
        except (StoreError, TimeoutError) as exc:
            self._failed(exc)
            return None
        self.breaker.record_success()
        return held

    async def _guarded(self, operation: Any) -> bool:
        if not self.store.remote:
            return await operation is not False
        if not self.breaker.allow():
            operation.close()
            self.counters.skipped += 1
            return False
        try:
            async with asyncio.timeout(self.settings.redis_timeout):
                result = await operation
        except (StoreError, TimeoutError) as exc:
            self._failed(exc)
            return False
        self.breaker.record_success()
        return result is not False

    async def _strict(self, operation: Any) -> Any:
        try:
            async with asyncio.timeout(max(self.settings.redis_timeout, ADMIN_TIMEOUT)):
                return await operation
        except TimeoutError:
            raise StoreError("cache store timed out") from None

    def _failed(self, exc: BaseException) -> None:
        self.counters.errors += 1
        self.breaker.record_failure(exc)

    def vary_names(self, handler: str, declared: tuple[str, ...]) -> tuple[str, ...]:
        """The request headers a handler's keys vary on: declared, then learned ones."""
        return self.learned_vary.get(handler, declared)

    def learn_vary(
        self, handler: str, declared: tuple[str, ...], names: Iterable[str]
    ) -> tuple[str, ...]:
        """Remember that a handler's responses vary on `names` (Django's learn step).

        Learned names follow the declared ones in sorted order, so every process that
        learns the same set builds the same keys.
        """
        current = self.vary_names(handler, declared)
        learned = set(current[len(declared) :]) | (set(names) - set(declared))
        result = declared + tuple(sorted(learned))
        if result != current:
            self.learned_vary[handler] = result
        return result

    def tag_names(self, tags: Iterable[str]) -> tuple[str, ...]:
        """Validated tag names: non-empty strings without NUL bytes."""
        names = tuple(dict.fromkeys(tags))
        for name in names:
            if not isinstance(name, str) or not name or "\x00" in name:
                raise ValueError(f"invalid cache tag {name!r}")
        return names
