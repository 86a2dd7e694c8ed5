"""`cachekit.background`: jobs run for a block and stop within their bound."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from cachekit import background


async def test_the_job_runs_while_the_block_runs_and_is_cancelled_after() -> None:
    ticks = 0

    async def job() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    async with background.running(job(), name="ticker", stop_within=1.0) as task:
        await asyncio.sleep(0.05)
        assert not task.done()
        assert task.get_name() == "ticker"
    assert task.cancelled()
    seen = ticks
    await asyncio.sleep(0.03)
    assert ticks == seen > 0


async def test_a_job_that_ignores_its_cancellation_does_not_hold_the_block(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        # What a store call that turns the cancellation into an error and carries on does.
        while not release.is_set():
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                continue

    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="cachekit"):
        async with background.running(stubborn(), name="stubborn", stop_within=0.1) as task:
            await asyncio.sleep(0)
    assert time.monotonic() - started < 2.0
    assert not task.done()
    assert "stubborn did not stop within 0.1 s" in caplog.text
    release.set()
    task.cancel()
    await asyncio.wait([task], timeout=1.0)
    assert task.done()


async def test_a_job_that_failed_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    async def failing() -> None:
        raise RuntimeError("boom")

    with caplog.at_level(logging.ERROR, logger="cachekit"):
        async with background.running(failing(), name="failing", stop_within=1.0) as task:
            await asyncio.sleep(0.01)
            # Reported when it failed, not at shutdown.
            assert "failing failed: RuntimeError('boom')" in caplog.text
    assert task.done() and not task.cancelled()
    assert caplog.text.count("failing failed") == 1


async def test_an_error_in_the_block_still_stops_the_job() -> None:
    async def idle() -> None:
        await asyncio.sleep(10)

    with pytest.raises(ValueError, match="in the block"):
        async with background.running(idle(), name="idle", stop_within=1.0) as task:
            raise ValueError("in the block")
    assert task.cancelled()


async def test_stop_reports_whether_the_task_ended() -> None:
    async def idle() -> None:
        await asyncio.sleep(10)

    task = asyncio.get_running_loop().create_task(idle())
    assert await background.stop(task, 1.0) is True
    assert task.cancelled()
