"""The `Cache`: one app's store behind the breaker and timeouts, its fills in flight, the
Vary it learned, its counters; invalidation and clearing for the app."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, Final

from aiohttp.web import UrlDispatcher

from cachekit import overrides, policy, tracing
from cachekit.backends.base import UNKNOWN_GENERATION, Answer, Store, StoreError
from cachekit.backends.memory import MemoryStore
from cachekit.counters import PUBLISHED_COUNTERS, CacheStats, Counter
from cachekit.entry import CachedResponse, CorruptEntry
from cachekit.fill_locks import FillLocks
from cachekit.flight import FillOutcome, Flights
from cachekit.guard import CircuitBreaker, RateLimitedLog
from cachekit.handler_state import HandlerState, resolve_handler
from cachekit.invalidation import handler_base_key
from cachekit.key_census import KeyCensus
from cachekit.purging import Purge, PurgeHook, PurgeNotifier
from cachekit.settings import CacheSettings
from cachekit.store_guard import StoreGuard

if TYPE_CHECKING:
    from cachekit.handler_spec import HandlerSpec

log = logging.getLogger("cachekit")

__all__ = ["LOOKUP_FAILURES", "UNKNOWN_GENERATION", "Cache", "CacheStats", "Counter"]
#: What a store lookup raises when it fails: a damaged entry, an unreachable store.
LOOKUP_FAILURES: Final = (CorruptEntry, StoreError, TimeoutError)
#: With metrics on, one store lookup in this many is timed (see `fetch`).
LOOKUP_SAMPLE: Final = 16


class Cache:
    """One app's cache: its settings, its store, its fills in flight and its counters.

    Every store call of a request goes through `peek`/`fetch` or its `StoreGuard`, which
    bound it by the store timeout, feed the circuit breaker and turn failures into "not
    cached".
    """

    def __init__(
        self,
        settings: CacheSettings,
        store: Store | None = None,
        clock: Callable[[], float] | None = None,
        on_purge: PurgeHook | None = None,
    ) -> None:
        self.settings = settings
        #: `settings.enabled` and `settings.max_key_length` (settings are frozen), read on
        #: every request: a plain attribute costs a fraction of a pydantic model's.
        self.enabled: bool = settings.enabled
        self.max_key_length: int = settings.max_key_length
        #: Wall-clock seconds for TTLs and `Age` (`overrides.wall` unless given).
        self.clock: Callable[[], float] = clock if clock is not None else overrides.wall
        self.store: Store = (
            store
            if store is not None
            else MemoryStore(
                settings.memory_max_bytes, clock=self.clock, max_variants=settings.max_variants
            )
        )
        breaker = CircuitBreaker(
            settings.failure_threshold, settings.failure_cooldown, clock=overrides.monotonic
        )
        self.breaker = breaker
        #: The app's router, set by `setup_cache`, to find a handler's route for purges.
        self.router: UrlDispatcher | None = None
        self._flights = Flights()
        #: `running_fill(key)`: the fill of `key` running in this process, if any (to join
        #: it). The fills' own `dict.get`, so a hit asks without a Python call.
        self.running_fill: Callable[[str], asyncio.Task[FillOutcome] | None] = (
            self._flights.fills.get
        )
        self._counters = CacheStats()
        self._damage_log = RateLimitedLog()
        #: Every store call but the hit path's lookups (`fetch`) goes through it.
        self._guard = StoreGuard(breaker, self._counters, settings.redis_timeout, self.store.remote)
        #: The cross-process fill locks (`FillLock` takes one of them).
        self.locks = FillLocks(self.store, settings, self._guard.bounded)
        #: What this cache resolved per handler (by name; one entry per decorated handler).
        self._handlers: dict[str, HandlerState] = {}
        #: `resolved(name)`: a handler's state once `handler(spec)` made it, else None; the
        #: dict's own `get`, so the hit path finds it without a Python call.
        self.resolved: Callable[[str], HandlerState | None] = self._handlers.get
        self._published: dict[str, int] = {}
        self._lookups = 0
        self._metrics: Any = None
        #: Hands every applied purge to the app's `on_purge` hook (see `cachekit.purging`).
        self.purges = PurgeNotifier(on_purge)
        #: Distinct keys stored per handler: in Redis when the store keeps them there.
        self.key_census = KeyCensus(
            lambda: self.clock(),  # noqa: PLW0108  (follows a clock tests replace later)
            getattr(self.store, "key_sketches", None),
            max(settings.redis_timeout, 1.0),
        )

    # ------------------------------------------------------------------ counters

    def count(
        self,
        counter: Counter,
        spec: HandlerSpec | None = None,
        result: str = "",
        reason: str = "",
    ) -> None:
        """Count one event (see `CacheStats`); with `spec`, also a request's `result`."""
        counters = self._counters
        setattr(counters, counter, getattr(counters, counter) + 1)
        if spec is not None:
            self.tally(spec, result, reason)

    def _totals(self) -> CacheStats:
        # Fresh hits are counted only per handler (`HandlerState.hits`, one increment on the
        # hit path): the total is their sum.
        totals = CacheStats(**asdict(self._counters))
        totals.hits = sum(state.hits for state in self._handlers.values())
        return totals

    def tally(self, spec: HandlerSpec, result: str, reason: str = "") -> None:
        """Count one request of a handler by its result (`cachekit_requests_total`)."""
        results = self.handler(spec).results
        results[result, reason] = results.get((result, reason), 0) + 1

    def handler_results(self) -> list[tuple[str, dict[tuple[str, str], int]]]:
        """Each handler's results so far, fresh hits included."""
        return [
            (name, {**state.results, ("hit", ""): state.hits})
            for name, state in self._handlers.items()
        ]

    def time_fill(self, spec: HandlerSpec, seconds: float) -> None:
        """Add one handler call of a fill or refresh, and its duration, to the handler."""
        state = self.handler(spec)
        state.fills += 1
        state.fill_seconds += seconds

    def handler_fill_times(self) -> list[tuple[str, int, float]]:
        """Each handler's fills and refreshes so far and the seconds their calls took."""
        return [(name, state.fills, state.fill_seconds) for name, state in self._handlers.items()]

    def store_errors(self) -> dict[str, int]:
        """Failed store calls so far, by operation."""
        return self._guard.errors()

    @property
    def metrics(self) -> Any:
        """`cachekit.metrics.Metrics` when the app serves metrics (`metrics_path`), or None."""
        return self._metrics

    @metrics.setter
    def metrics(self, metrics: Any) -> None:
        self._metrics = self._guard.metrics = metrics

    @property
    def counters(self) -> CacheStats:
        """A copy of the counters since startup."""
        return self._totals()

    def stats(self) -> dict[str, Any]:
        """Counters (hits, misses, stores, bypasses, errors, ...) plus store facts; on Redis,
        `lookup_batches` and `lookup_keys` (MGETs sent and the keys they carried: their
        ratio is the batching) and `lookups_waiting`; with a near cache, its `near_*`
        figures (`near_hits` counts hits it answered, a subset of `hits`)."""
        result: dict[str, Any] = asdict(self._totals())
        result["breaker_open"] = self.breaker.is_open
        result["purge_hook_errors"] = self.purges.errors
        result.update(self.key_census.stats())
        result.update(self.store.stats())
        return result

    # ------------------------------------------------------------------ lookups

    async def lookup(self, key: str) -> Answer:
        """The entry for `key`, or None; never raises. A failed lookup reports
        `UNKNOWN_GENERATION` so the caller does not try to store afterwards."""
        answer = self.store.peek(key, self.clock())
        if answer is not None:
            return answer
        return await self.fetch(key)

    async def fetch(self, key: str, handler: str = "") -> Answer:
        """`lookup` for a caller that has just peeked: the store's answer, never raises (in
        a `cachekit.lookup` span for `handler` when the application traces)."""
        if not self.breaker.allow():
            self._counters.skipped += 1
            return None, UNKNOWN_GENERATION
        if tracing.tracer() is not None:
            return await self._traced_fetch(key, handler)
        metrics = self._metrics  # (not the property: a call on every Redis hit)
        if metrics is not None:
            # One lookup in LOOKUP_SAMPLE is timed: observing every one would cost a Redis
            # hit more than the 3 % metrics may (bench/README.md).
            self._lookups += 1
            if self._lookups % LOOKUP_SAMPLE:
                metrics = None
        started = time.perf_counter() if metrics is not None else 0.0
        try:
            # The store bounds its own lookups by its timeout (they are batched).
            result = await self.store.get(key)
        except LOOKUP_FAILURES as exc:
            return self._fetch_failed(key, exc)
        if metrics is not None:
            metrics.store_timers["lookup"].observe(time.perf_counter() - started)
        self.breaker.record_success()
        return result

    async def _traced_fetch(self, key: str, handler: str) -> Answer:
        # `fetch` when it is traced or timed: kept apart from the plain path of every hit.
        started = time.perf_counter()
        with tracing.span("cachekit.lookup", handler, key) as current:
            try:
                answer = await self.store.get(key)
            except LOOKUP_FAILURES as exc:
                tracing.annotate(current, found=False, store_error=True)
                return self._fetch_failed(key, exc)
            finally:
                if self.metrics is not None:
                    seconds = time.perf_counter() - started
                    self.metrics.store_timers["lookup"].observe(seconds)
            self.breaker.record_success()
            tracing.annotate(current, found=answer[0] is not None, store_error=False)
            return answer

    def _fetch_failed(self, key: str, exc: Exception) -> Answer:
        if isinstance(exc, CorruptEntry):
            self._counters.errors += 1
            self._damage_log.warning("damaged cache entry %r dropped: %s", key, exc)
        else:
            self._guard.failed(exc, "lookup")
        return None, UNKNOWN_GENERATION

    async def save(self, key: str, entry: CachedResponse) -> bool:
        """Store a fill's entry; False (after counting and logging) when the store failed.

        `entry.generation` is the ticket its lookup returned, taken before the handler ran:
        if a purge happened since, nothing is stored (False), since the response may
        predate the purge (see `Store.set`).
        """
        if entry.generation == UNKNOWN_GENERATION:
            return False
        try:
            stored = await self._guard.bounded(self.store.set(key, entry, True), False)
        except ValueError as exc:  # e.g. a NUL byte in a header: cannot be kept faithfully
            log.debug("response for %r not storable: %s", key, exc)
            return False
        if stored:
            self._counters.stores += 1
        return stored

    async def invalidate(
        self, *targets: str | Callable[..., Any], soft: bool = False, **params: str
    ) -> int:
        """Remove entries, with all their Vary variants; returns how many existed.

        A target is a logical key (`"product:7"`) or a `@cached` handler: then the entries
        a GET of its route with `params` would hit (`invalidate(get_product, id="7")`).
        `soft=True` marks them stale instead: served within their stale window while one
        fill refreshes them (no stampede); without a stale window, a miss as after a hard
        purge. Raises `StoreError` when the store cannot be reached: an invalidation that
        silently did nothing would leave stale data in place.
        """
        bases = [
            target
            if isinstance(target, str)
            else handler_base_key(target, self.router, {k: str(v) for k, v in params.items()})
            for target in targets
        ]
        if params and all(isinstance(target, str) for target in targets):
            raise TypeError("parameters are only meaningful with a @cached handler")
        purged = (
            self.store.delete_variants(bases, soft=True)
            if soft
            else (self.store.delete_variants(bases))
        )
        count = int(await self._guard.strict(purged))
        await self._applied(Purge("key", keys=tuple(bases), soft=soft))
        return count

    async def invalidate_tags(self, *tags: str, soft: bool = False) -> int:
        """Remove every entry stored under any of these tags (`soft=True`: mark them stale,
        as `invalidate` says); raises `StoreError` on failure."""
        return await self._purge_tags(Purge("tag", tags=tags, soft=soft))

    async def purge_unsafe_method(self, *tags: str) -> int:
        """`invalidate_tags` for the path tags a successful unsafe request purges (RFC 9111
        §4.4); the hook is told it was `"unsafe_method"`."""
        return await self._purge_tags(Purge("unsafe_method", tags=tags))

    async def _purge_tags(self, purge: Purge) -> int:
        store = self.store
        purged = (
            store.invalidate_tags(purge.tags, soft=True)
            if purge.soft
            else (store.invalidate_tags(purge.tags))
        )
        count = int(await self._guard.strict(purged))
        await self._applied(purge)
        return count

    async def clear(self) -> None:
        """Drop every entry of this namespace; raises `StoreError` on failure."""
        await self._guard.strict(self.store.clear())
        await self._applied(Purge("namespace"))

    async def _applied(self, purge: Purge) -> None:
        if self.metrics is not None:
            self.metrics.purges.labels(purge.kind).inc()
        await self.purges.notify(purge)

    async def startup_warnings(self) -> list[str]:
        """The store's configuration problems (see `Store.startup_warnings`), bounded by the
        store timeout; a store that cannot say within it gets a warning of its own."""
        try:
            async with asyncio.timeout(max(self.settings.redis_timeout, 1.0)):
                return await self.store.startup_warnings()
        except TimeoutError:
            return ["the cache store did not answer at startup; serving uncached until it does"]

    async def publish_counters(self) -> None:
        """Add this process's counters since the last call to the store's shared totals
        (a shared store only; failures are counted, never raised)."""
        if not self.store.remote:
            return
        totals = self._totals()
        current = {name: int(getattr(totals, name)) for name in PUBLISHED_COUNTERS}
        delta = {
            name: value - self._published.get(name, 0)
            for name, value in current.items()
            if value != self._published.get(name, 0)
        }
        if delta and await self._guard.bounded(self.store.add_counters(delta), False) is not False:
            self._published = current

    async def publish_counters_every(self, interval: float) -> None:
        """Publish counters every `interval` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            await self.publish_counters()

    async def close(self) -> None:
        """Finish (or cancel) fills and refreshes, then release the store's connections."""
        await self._flights.close(grace=self.settings.redis_timeout + 1.0)
        await self.store.close()

    # ------------------------------------------------------------------ fills

    def start_fill(
        self, key: str, work: Coroutine[Any, Any, FillOutcome]
    ) -> asyncio.Task[FillOutcome]:
        """Run `work` as the one fill of `key` in this process."""
        return self._flights.start_fill(key, work)

    def start_refresh(self, key: str, work: Coroutine[Any, Any, None]) -> bool:
        """Refresh `key` in the background unless a refresh of it already runs."""
        return self._flights.start_refresh(key, work)

    def tasks_running(self) -> dict[str, list[asyncio.Task[Any]]]:
        """The fills and refreshes running now (for tests and diagnostics)."""
        return {
            "fills": list(self._flights.fills.values()),
            "refreshes": list(self._flights.refreshes.values()),
        }

    # ------------------------------------------------------------------ handlers

    def handler(self, spec: HandlerSpec) -> HandlerState:
        """What this cache resolved for a handler: made once, then one dict lookup."""
        state = self._handlers.get(spec.name)
        if state is None:
            state = self._handlers[spec.name] = resolve_handler(self.settings, spec)
        return state

    def configured(self, spec: HandlerSpec) -> policy.Configured:
        """The lifetimes the settings and the decorator give a handler's responses."""
        return self.handler(spec).configured

    def emits_cache_control(self, spec: HandlerSpec) -> bool:
        """Whether answers tell browsers and CDNs how long they may keep the response:
        the handler's own `emit_cache_control`, else the setting."""
        return self.handler(spec).emit_cache_control

    def vary_names(self, spec: HandlerSpec) -> tuple[str, ...]:
        """The request headers a handler declared its keys vary on (see `varied_names`)."""
        return self.handler(spec).vary

    def tag_names(self, tags: Iterable[str]) -> tuple[str, ...]:
        """Validated tag names: non-empty strings without NUL bytes."""
        names = tuple(dict.fromkeys(tags))
        for name in names:
            if not isinstance(name, str) or not name or "\x00" in name:
                raise ValueError(f"invalid cache tag {name!r}")
        return names
