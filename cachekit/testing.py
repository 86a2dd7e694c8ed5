"""cachekit's pytest plugin: fixtures and an assertion for testing cached aiohttp handlers.

Registered through the `pytest11` entry point, so installing cachekit makes the fixtures
available; they only act when a test names them (nothing changes for other tests).

- `cachekit_settings`: settings for a fresh embedded store, blind to `CACHEKIT_*` variables;
- `cachekit_store`: a fresh embedded store;
- `cache_clock`: moves cachekit's time (TTLs, stale windows, `Age`, breaker cool-downs)
  forward without sleeping: `cache_clock.advance(61)`;
- `cache_disabled`: every cache set up during the test is off (handlers run every time);
- `store_faults`: the next N store calls time out, are refused, or return damaged data;
- `assert_cache(response, "HIT", reason=...)`: what `Cache-Status` says about a response.

Fixtures that change process-wide defaults (`cache_clock`, `cache_disabled`,
`store_faults`) act on caches set up after them: request them before the app fixture.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from typing import Any, Final, Literal, TypeVar

import pytest

from cachekit import overrides
from cachekit.backends.base import Answer, Store, StoreError, WriteRefused
from cachekit.backends.memory import MemoryStore
from cachekit.entry import CachedResponse, CorruptEntry
from cachekit.responses import CACHE_NAME, CACHE_STATUS
from cachekit.settings import ENV_PREFIX, CacheSettings

__all__ = [
    "CacheClock",
    "FaultyStore",
    "assert_cache",
    "cache_clock",
    "cache_disabled",
    "cachekit_settings",
    "cachekit_store",
    "store_faults",
]

T = TypeVar("T")
Outcome = Literal["HIT", "MISS", "STALE", "REVALIDATED", "BYPASS"]
Fault = Literal["timeout", "refuse", "damage"]
#: The byte budget of the fixtures' embedded store.
TEST_STORE_BYTES: Final = 16 << 20


# ---------------------------------------------------------------- settings and stores


@pytest.fixture
def cachekit_settings(monkeypatch: pytest.MonkeyPatch) -> CacheSettings:
    """Settings for a fresh embedded store, whatever `CACHEKIT_*` variables are set."""
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    return CacheSettings(redis_url=None, namespace="test")


@pytest.fixture
def cachekit_store() -> MemoryStore:
    """A fresh embedded store, for `setup_cache(app, cachekit_settings, store=...)`."""
    return MemoryStore(TEST_STORE_BYTES)


# ---------------------------------------------------------------- time


class CacheClock:
    """cachekit's clocks, running with real time plus an offset that only grows."""

    def __init__(self) -> None:
        self.offset = 0.0

    def time(self) -> float:
        """Wall-clock seconds, as cachekit sees them."""
        return time.time() + self.offset

    def monotonic(self) -> float:
        """Monotonic seconds, as cachekit's breaker sees them."""
        return time.monotonic() + self.offset

    def advance(self, seconds: float) -> None:
        """Move cachekit's time `seconds` forward, at once."""
        if seconds < 0:
            raise ValueError("cachekit's time only moves forward")
        self.offset += seconds


@pytest.fixture
def cache_clock(monkeypatch: pytest.MonkeyPatch) -> CacheClock:
    """Move cachekit's notion of time forward without sleeping (`cache_clock.advance(s)`)."""
    clock = CacheClock()
    monkeypatch.setattr(overrides, "wall", clock.time)
    monkeypatch.setattr(overrides, "monotonic", clock.monotonic)
    return clock


# ---------------------------------------------------------------- switching off


@pytest.fixture
def cache_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every cache set up during the test is disabled: handlers run on every request."""
    monkeypatch.setattr(
        overrides, "forced_settings", {**overrides.forced_settings, "enabled": False}
    )


# ---------------------------------------------------------------- faults


class FaultyStore:
    """A store that passes every call to `inner`, except the next N, which fail."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.remote = True  # so the cache bounds its calls and feeds its breaker
        self._fault: Fault | None = None
        self._left = 0
        #: How many calls failed on purpose so far.
        self.injected = 0

    def fail_next(self, calls: int, fault: Fault = "timeout") -> None:
        """Make the next `calls` store calls fail: `timeout` (no answer in time), `refuse`
        (the store refuses writes and errs on reads) or `damage` (reads return damaged
        entries; writes are refused)."""
        if fault not in ("timeout", "refuse", "damage"):
            raise ValueError(f"unknown fault {fault!r}")
        self._fault, self._left = fault, calls

    def _take(self) -> Fault | None:
        if self._left <= 0:
            return None
        self._left -= 1
        self.injected += 1
        return self._fault

    async def _faulted(self, fault: Fault, writing: bool) -> Any:
        await asyncio.sleep(0)
        if fault == "timeout":
            # What a store's own bound raises: the test need not wait for the timeout.
            raise TimeoutError("injected by store_faults")
        if writing:
            raise WriteRefused("injected by store_faults")
        if fault == "damage":
            raise CorruptEntry("injected by store_faults")
        raise StoreError("injected by store_faults")

    async def _call(self, call: Awaitable[T], writing: bool = False) -> T:
        fault = self._take()
        if fault is None:
            return await call
        if hasattr(call, "close"):
            call.close()
        result: T = await self._faulted(fault, writing)
        return result

    def peek(self, key: str, now: float) -> Answer | None:
        if self._left > 0:
            return None  # let the next lookup reach `get`, where it fails
        return self.inner.peek(key, now)

    async def get(self, key: str) -> Answer:
        return await self._call(self.inner.get(key))

    async def set(self, key: str, entry: CachedResponse, conditional: bool = False) -> bool:
        return await self._call(self.inner.set(key, entry, conditional), writing=True)

    async def delete(self, keys: Sequence[str]) -> int:
        return await self._call(self.inner.delete(keys), writing=True)

    async def delete_variants(self, bases: Sequence[str], soft: bool = False) -> int:
        purge = (
            self.inner.delete_variants(bases, soft=True)
            if soft
            else (self.inner.delete_variants(bases))
        )
        return await self._call(purge, writing=True)

    async def invalidate_tags(self, tags: Iterable[str], soft: bool = False) -> int:
        purge = (
            self.inner.invalidate_tags(tags, soft=True)
            if soft
            else (self.inner.invalidate_tags(tags))
        )
        return await self._call(purge, writing=True)

    async def clear(self) -> None:
        await self._call(self.inner.clear(), writing=True)

    async def acquire_lock(self, key: str, token: str, ttl: float) -> bool:
        return await self._call(self.inner.acquire_lock(key, token, ttl))

    async def lock_held(self, key: str) -> bool:
        return await self._call(self.inner.lock_held(key))

    async def release_lock(self, key: str, token: str) -> None:
        await self._call(self.inner.release_lock(key, token))

    async def add_counters(self, counts: Mapping[str, int]) -> None:
        await self.inner.add_counters(counts)

    async def startup_warnings(self) -> list[str]:
        return await self.inner.startup_warnings()

    def stats(self) -> dict[str, Any]:
        return {**self.inner.stats(), "faults_injected": self.injected}

    async def close(self) -> None:
        await self.inner.close()


class StoreFaults:
    """The `store_faults` fixture: the faulty stores of the caches set up in this test."""

    def __init__(self) -> None:
        self.stores: list[FaultyStore] = []

    def wrap(self, store: Store) -> Store:
        faulty = FaultyStore(store)
        self.stores.append(faulty)
        return faulty

    def fail_next(self, calls: int, fault: Fault = "timeout") -> None:
        """Make the next `calls` calls of every cache's store fail (see `FaultyStore`)."""
        if not self.stores:
            raise RuntimeError("no cache was set up after store_faults: request it earlier")
        for store in self.stores:
            store.fail_next(calls, fault)


@pytest.fixture
def store_faults(monkeypatch: pytest.MonkeyPatch) -> StoreFaults:
    """Inject store failures into every cache set up during the test."""
    faults = StoreFaults()
    monkeypatch.setattr(overrides, "wrap_store", faults.wrap)
    return faults


# ---------------------------------------------------------------- assertions


def cache_outcome(cache_status: str) -> tuple[Outcome | None, str | None]:
    """What a `Cache-Status` value (RFC 9211) of cachekit says: the outcome and the
    `detail`, or (None, None) when cachekit did not answer it."""
    for entry in cache_status.split(","):
        parts = [part.strip() for part in entry.split(";")]
        if not parts or parts[0] != CACHE_NAME:
            continue
        params = dict(part.partition("=")[::2] for part in parts[1:])
        detail = params.get("detail") or None
        forwarded = params.get("fwd")
        if "hit" in params:
            return ("STALE" if forwarded == "stale" else "HIT"), detail
        if forwarded == "stale" and params.get("fwd-status") == "304":
            return "REVALIDATED", detail
        if forwarded == "bypass":
            return "BYPASS", detail
        if forwarded is not None:
            return "MISS", detail
    return None, None


def assert_cache(response: Any, expected: Outcome, reason: str | None = None) -> None:
    """Assert what cachekit did for `response` (aiohttp's client or server response), as
    its `Cache-Status` says; `reason`, if given, must equal the `detail` parameter."""
    value = ", ".join(response.headers.getall(CACHE_STATUS, []))
    outcome, detail = cache_outcome(value)
    if outcome != expected:
        raise AssertionError(f"expected {expected}, cachekit said {value or 'nothing'!r}")
    if reason is not None and detail != reason:
        raise AssertionError(f"expected detail={reason}, cachekit said {value!r}")
