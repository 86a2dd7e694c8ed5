"""Single-flight: one fill per key in a process, and the background tasks the cache owns."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web

from cachekit.entry import CachedResponse

log = logging.getLogger("cachekit")
T = TypeVar("T")


@dataclass(slots=True)
class FillOutcome:
    """What one fill produced.

    The request that started the fill gets `response` (or `error` re-raised) exactly as the
    handler made it; requests that joined get a copy of `shared`, or, when the response
    was not shareable (a cookie, a private response), run the handler themselves.
    `shared` is valid for `key`, the key built with the Vary names `vary`.
    """

    response: web.StreamResponse | None
    error: BaseException | None
    shared: CachedResponse | None
    status: str
    x_cache: str
    key: str
    vary: tuple[str, ...]


class Flights:
    """Fills in progress, keyed by cache key, plus refreshes running in the background.

    Tasks are created here, not in a request's task, so a client that disconnects cannot
    cancel work that other requests wait for; `close()` finishes or cancels them all.
    """

    def __init__(self) -> None:
        self.fills: dict[str, asyncio.Task[FillOutcome]] = {}
        self.refreshes: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.closing = False

    def start_fill(
        self, key: str, work: Coroutine[Any, Any, FillOutcome]
    ) -> asyncio.Task[FillOutcome]:
        """Run `work` as the one fill of `key`; joiners find it in `fills` until it ends."""
        task = self._own(work)
        self.fills[key] = task
        task.add_done_callback(lambda done: self._forget(self.fills, key, done))
        return task

    def start_refresh(self, key: str, work: Coroutine[Any, Any, None]) -> bool:
        """Refresh `key` in the background unless a refresh of it is already running."""
        if key in self.refreshes or self.closing:
            work.close()
            return False
        task = self._own(work)
        self.refreshes[key] = task
        task.add_done_callback(lambda done: self._forget(self.refreshes, key, done))
        return True

    async def close(self, grace: float) -> None:
        """Wait up to `grace` seconds for owned tasks, then cancel what is left."""
        self.closing = True
        pending = {task for task in self._tasks if not task.done()}
        if pending:
            _, still_running = await asyncio.wait(pending, timeout=grace)
            for task in still_running:
                task.cancel()
            if still_running:
                await asyncio.wait(still_running)

    def _own(self, work: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @staticmethod
    def _forget(registry: dict[str, Any], key: str, task: asyncio.Task[Any]) -> None:
        if registry.get(key) is task:
            del registry[key]
        if not task.cancelled() and task.exception() is not None:
            log.error("cache background task failed", exc_info=task.exception())
