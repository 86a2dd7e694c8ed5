"""`Flights`: the fills and refreshes a cache runs in the background, one per key."""

from __future__ import annotations

import asyncio
import logging

import pytest

from cachekit.flight import FillOutcome, Flights


def outcome(key: str) -> FillOutcome:
    return FillOutcome(None, None, None, "fwd=miss", "MISS", key, ())


async def test_a_fill_is_registered_under_its_key_until_it_ends() -> None:
    flights = Flights()
    release = asyncio.Event()

    async def work() -> FillOutcome:
        await release.wait()
        return outcome("k")

    task = flights.start_fill("k", work())
    assert flights.fills == {"k": task}
    release.set()
    assert (await task).key == "k"
    await asyncio.sleep(0)  # done callbacks run on the next turn
    assert flights.fills == {}


async def test_one_refresh_per_key() -> None:
    flights = Flights()
    release = asyncio.Event()
    runs = 0

    async def refresh() -> None:
        nonlocal runs
        runs += 1
        await release.wait()

    assert flights.start_refresh("k", refresh())
    second = refresh()
    assert not flights.start_refresh("k", second)  # closed, never awaited: no warning
    assert flights.start_refresh("other", refresh())
    release.set()
    await asyncio.gather(*flights.refreshes.values())
    assert runs == 2


async def test_close_waits_then_cancels_what_is_left() -> None:
    flights = Flights()
    finished = asyncio.Event()

    async def quick() -> None:
        await asyncio.sleep(0.01)
        finished.set()

    async def stuck() -> None:
        await asyncio.Event().wait()

    flights.start_refresh("quick", quick())
    flights.start_refresh("stuck", stuck())
    await flights.close(grace=0.2)
    assert finished.is_set()
    assert not flights.refreshes

    async def late() -> None:
        raise AssertionError("never runs")

    assert not flights.start_refresh("late", late())  # closing: nothing new starts


async def test_a_failing_background_task_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    flights = Flights()

    async def broken() -> None:
        raise RuntimeError("boom")

    with caplog.at_level(logging.ERROR, logger="cachekit"):
        flights.start_refresh("k", broken())
        await asyncio.sleep(0.01)
    assert any("background task failed" in r.getMessage() for r in caplog.records)
    assert not flights.refreshes
