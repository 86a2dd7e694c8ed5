"""`running`: a background task for the life of a block, stopped within a bound.

Each of cachekit's periodic jobs (counters published to Redis, key counts flushed, the
stats history sampled, this worker's report, metrics synced) runs while the app serves and
must stop when it shuts down. Stopping must not wait on a store that does not answer: a
task busy in a Redis call, or one that kept running after its cancellation (redis-py can
turn a cancellation into a connection error), is given `stop_within` seconds and then left
behind with a warning, so the app's cleanup goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Coroutine
from typing import Any

log = logging.getLogger("cachekit")


@contextlib.asynccontextmanager
async def running(
    work: Coroutine[Any, Any, None], *, name: str, stop_within: float
) -> AsyncIterator[asyncio.Task[None]]:
    """Run `work` in a task named `name` while the block runs; on leaving it, cancel the
    task and wait at most `stop_within` seconds for it to end (see `stop`)."""
    task = asyncio.get_running_loop().create_task(work, name=name)
    # Logged when it happens: a periodic job that died would otherwise go unnoticed until
    # shutdown.
    task.add_done_callback(_report_failure)
    try:
        yield task
    finally:
        await stop(task, stop_within)


async def stop(task: asyncio.Task[Any], within: float) -> bool:
    """Cancel `task` and wait at most `within` seconds; True when it ended. An error it
    ended with is not raised (stopping is cleanup; `running` logs it when it happens); a
    task still running after `within` is left running, with a warning."""
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=within)
    if not done:
        log.warning("%s did not stop within %.1f s of its cancellation", task.get_name(), within)
        return False
    if not task.cancelled():
        task.exception()  # retrieved: asyncio would otherwise warn that nobody did
    return True


def _report_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and (error := task.exception()) is not None:
        log.error("%s failed: %r", task.get_name(), error, exc_info=error)
