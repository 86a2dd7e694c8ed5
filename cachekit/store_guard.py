"""`StoreGuard`: every store call of a cache, bounded by the store timeout and fed to the
circuit breaker, written once.

A request never waits longer than `redis_timeout` for the store, never sees its errors (a
failed call is "not cached": counted, logged at a limited rate, fed to the breaker), and
skips the store while the breaker is open. A write the store refuses (full, read-only
replica: `WriteRefused`) is skipped without opening the breaker, so lookups go on.
Explicit operations (purges, clear) get a longer bound and raise instead (`strict`): an
invalidation that silently did nothing would leave stale data in place.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any, Final, TypeVar

from cachekit.backends.base import StoreError, WriteRefused
from cachekit.counters import CacheStats
from cachekit.guard import CircuitBreaker, RateLimitedLog

T = TypeVar("T")

#: Bound on explicit operations (invalidate, purge by tag, clear), which may touch many keys.
ADMIN_TIMEOUT: Final = 30.0


class StoreGuard:
    """The timeout, the breaker and the failure counts of one cache's store calls."""

    def __init__(
        self, breaker: CircuitBreaker, counters: CacheStats, timeout: float, remote: bool
    ) -> None:
        self.breaker = breaker
        self._counters = counters
        self._timeout = timeout
        self._remote = remote
        self._refusal_log = RateLimitedLog()
        self._errors: dict[str, int] = {}
        #: `cachekit.metrics.Metrics` when the app serves metrics (set by `Cache`).
        self.metrics: Any = None

    def errors(self) -> dict[str, int]:
        """Failed store calls so far, by operation (lookup, store, lock, purge)."""
        return dict(self._errors)

    async def bounded(
        self, operation: Coroutine[Any, Any, T], failed: T, name: str = "store"
    ) -> T:
        """Run one store operation (`name`: store or lock) within the store timeout and
        the circuit breaker; `failed` when it was skipped or failed (counted, and fed to
        the breaker). The embedded store needs neither: it is awaited as it is."""
        if not self._remote:
            return await operation
        if not self.breaker.allow():
            operation.close()
            self._counters.skipped += 1
            return failed
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout):
                result = await operation
        except WriteRefused as exc:
            # The store is up and still answers lookups: skip this write, keep the breaker
            # closed so that reads go on.
            self._counters.write_refusals += 1
            self._refusal_log.warning("cache store refused a write (not stored): %s", exc)
            return failed
        except (StoreError, TimeoutError) as exc:
            raise_if_cancelling(exc)
            self.failed(exc, name)
            return failed
        finally:
            if self.metrics is not None:
                self.metrics.store_timers[name].observe(time.perf_counter() - started)
        self.breaker.record_success()
        return result

    async def strict(self, operation: Coroutine[Any, Any, T]) -> T:
        """Run an explicit operation (a purge, a clear) within `ADMIN_TIMEOUT` (or the store
        timeout, if longer); its failure raises `StoreError` (counted as a purge error)."""
        started = time.perf_counter()
        try:
            async with asyncio.timeout(max(self._timeout, ADMIN_TIMEOUT)):
                return await operation
        except TimeoutError:
            self._count_error("purge")
            raise StoreError("cache store timed out") from None
        except StoreError:
            self._count_error("purge")
            raise
        finally:
            if self.metrics is not None:
                self.metrics.store_timers["purge"].observe(time.perf_counter() - started)

    def failed(self, exc: BaseException, operation: str = "store") -> None:
        """Count a failed store call and tell the breaker."""
        self._counters.errors += 1
        self._count_error(operation)
        self.breaker.record_failure(exc)

    def _count_error(self, operation: str) -> None:
        self._errors[operation] = self._errors.get(operation, 0) + 1


def raise_if_cancelling(error: BaseException) -> None:
    """Re-raise a cancellation the Redis client turned into an error of its own (it may,
    when cancelled mid-command): a task being cancelled must stop, not carry on as if a
    store call had merely failed (a background loop would otherwise never end)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError from error
