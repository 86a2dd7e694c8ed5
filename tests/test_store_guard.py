"""`StoreGuard`: the store timeout, the circuit breaker and the failure counts, as a table
of what a store call does and what the guard answers, counts and tells the breaker."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from cachekit.backends.base import StoreError, WriteRefused
from cachekit.counters import CacheStats
from cachekit.guard import CircuitBreaker
from cachekit.store_guard import StoreGuard


def guard(*, remote: bool = True, threshold: int = 2, timeout: float = 0.05) -> StoreGuard:
    return StoreGuard(CircuitBreaker(threshold, 60.0), CacheStats(), timeout, remote)


async def works() -> str:
    return "done"


async def fails() -> str:
    raise StoreError("connection lost")


async def refuses() -> str:
    raise WriteRefused("OOM command not allowed")


async def hangs() -> str:
    await asyncio.sleep(10)
    return "late"


Call = Callable[[], Awaitable[str]]


@pytest.mark.parametrize(
    ("call", "answer", "errors", "refusals", "breaker_failures"),
    [
        (works, "done", {}, 0, 0),
        (fails, "failed", {"lock": 1}, 0, 1),
        (hangs, "failed", {"lock": 1}, 0, 1),  # the timeout
        (refuses, "failed", {}, 1, 0),  # the store is up: reads go on
    ],
)
async def test_bounded_answers_counts_and_feeds_the_breaker(
    call: Call, answer: str, errors: dict[str, int], refusals: int, breaker_failures: int
) -> None:
    checked = guard()
    counters = checked._counters
    assert await checked.bounded(call(), "failed", "lock") == answer  # type: ignore[arg-type]
    assert checked.errors() == errors
    assert counters.write_refusals == refusals
    assert counters.errors == len(errors)
    assert checked.breaker.failures == breaker_failures


async def test_an_open_breaker_skips_the_call_without_running_it() -> None:
    checked = guard(threshold=1)
    await checked.bounded(fails(), None, "store")
    ran: list[int] = []

    async def would_run() -> None:
        ran.append(1)

    assert await checked.bounded(would_run(), "skipped", "store") == "skipped"
    assert not ran and checked._counters.skipped == 1


async def test_a_success_closes_the_breaker_again() -> None:
    checked = guard(threshold=3)
    await checked.bounded(fails(), None)
    await checked.bounded(works(), None)
    assert checked.breaker.failures == 0


async def test_the_embedded_store_is_awaited_as_it_is() -> None:
    checked = guard(remote=False, threshold=1)
    checked.breaker.record_failure(StoreError("x"))  # open: ignored without a remote store
    assert await checked.bounded(works(), "failed") == "done"
    with pytest.raises(StoreError):  # and nothing catches its errors
        await checked.bounded(fails(), "failed")


async def test_strict_raises_and_counts_purge_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    checked = guard()
    assert await checked.strict(works()) == "done"
    with pytest.raises(StoreError):
        await checked.strict(fails())
    monkeypatch.setattr("cachekit.store_guard.ADMIN_TIMEOUT", 0.01)
    with pytest.raises(StoreError, match="timed out"):
        await checked.strict(hangs())
    assert checked.errors() == {"purge": 2}
    assert checked.breaker.failures == 0  # an explicit operation says so itself


async def test_timings_go_to_the_metrics_when_there_are_some() -> None:
    observed: list[tuple[str, float]] = []

    class Timer:
        def __init__(self, name: str) -> None:
            self.name = name

        def observe(self, seconds: float) -> None:
            observed.append((self.name, seconds))

    class Metrics:
        def __init__(self) -> None:
            self.store_timers = {name: Timer(name) for name in ("lock", "purge")}

    checked = guard()
    checked.metrics = Metrics()
    await checked.bounded(works(), None, "lock")
    await checked.strict(works())
    assert [name for name, _ in observed] == ["lock", "purge"]
    assert all(seconds >= 0 for _, seconds in observed)


async def test_a_cancellation_the_store_turned_into_an_error_still_cancels() -> None:
    # redis-py may turn a cancellation mid-command into an error of its own: the guard must
    # not report "failed" to a task that is being cancelled (its loop would go on forever).
    entered = asyncio.Event()

    async def converts() -> str:
        entered.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            raise StoreError("connection closed while reading") from None
        return "late"

    store_guard = guard()
    task = asyncio.create_task(store_guard.bounded(converts(), "failed"))
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert store_guard.breaker.failures == 0  # not a store failure


async def test_the_store_timeout_is_a_failure_not_a_cancellation() -> None:
    store_guard = guard(timeout=0.01)
    assert await store_guard.bounded(hangs(), "failed") == "failed"
    assert store_guard.breaker.failures == 1
