"""`KeyCensus`: how many distinct keys each handler stores, over all time and per window,
and how many distinct values each part of its keys takes (see `key_growth.py`).

Fed by the fill path only (`storing.py`, once an entry is stored), never by hits. On the
embedded store the counts are this process's own HyperLogLog sketches (`key_sketch.py`);
on Redis they are HyperLogLogs in Redis (`backends/key_sketches.py`), so that they cover
every worker: the keys a fill stores are buffered here and sent every `FLUSH_SECONDS`.

Bounded in bytes: at most `MAX_HANDLERS` handlers are counted per process, each with at
most `RECENT_WINDOWS` + 1 key sketches and `MAX_PARTS` part sketches (`MAX_BYTES` in all);
the buffer for Redis holds at most `PENDING_MAX_BYTES` (half full, it is sent at once;
full, keys are dropped and counted). Counting never fails a request: errors are counted
and logged, rate-limited.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from cachekit import background
from cachekit.guard import RateLimitedLog
from cachekit.key_growth import RECENT_WINDOWS, WINDOW_SECONDS, KeyFigures, WindowCount, key_parts
from cachekit.key_sketch import HyperLogLog

log = logging.getLogger("cachekit")

FLUSH_SECONDS: Final = 1.0
MAX_HANDLERS: Final = 64
#: Key parts (query parameter names, Vary headers) counted per handler: the first ones seen.
MAX_PARTS: Final = 16
KEY_PRECISION: Final = 12
PART_PRECISION: Final = 8
HANDLER_MAX_BYTES: Final = (RECENT_WINDOWS + 1) * HyperLogLog.bytes_for(
    KEY_PRECISION
) + MAX_PARTS * HyperLogLog.bytes_for(PART_PRECISION)
#: The most this process's sketches hold (on the embedded store; nothing on Redis).
MAX_BYTES: Final = MAX_HANDLERS * HANDLER_MAX_BYTES
PENDING_MAX_BYTES: Final = 1 << 20
#: What a buffered string costs beyond its characters (object header, set slot).
STRING_OVERHEAD: Final = 80


@dataclass(slots=True)
class Pending:
    """One handler's keys and key-part values stored since the last flush to Redis."""

    keys: set[str] = field(default_factory=set)
    parts: dict[str, set[str]] = field(default_factory=dict)


class SharedSketches(Protocol):
    """Counts kept in a shared store, across workers (`backends/key_sketches.py`)."""

    async def write(
        self, pending: Mapping[tuple[str, int], Pending], window: int, aged: Sequence[str]
    ) -> None:
        """Add `pending` (by handler and window) to the counts; for the `aged` handlers,
        fold the windows that left the recent ones before `window` into the all-time count."""
        ...

    async def figures(self, handler: str, window: int) -> KeyFigures:
        """One handler's figures as of `window`."""
        ...

    async def handlers(self) -> list[str]:
        """The handlers counted by any worker."""
        ...


class _Sketches:
    """One handler's sketches in this process: windows, all time before them, key parts."""

    __slots__ = ("history", "parts", "windows")

    def __init__(self) -> None:
        self.history: HyperLogLog | None = None
        self.windows: dict[int, HyperLogLog] = {}
        self.parts: dict[str, HyperLogLog] = {}

    def add(self, window: int, key: str, parts: Iterable[tuple[str, str]]) -> None:
        self.age(window)
        sketch = self.windows.get(window)
        if sketch is None:
            sketch = self.windows[window] = HyperLogLog(KEY_PRECISION)
        sketch.add(key)
        for part, value in parts:
            counted = self.parts.get(part)
            if counted is None:
                if len(self.parts) >= MAX_PARTS:
                    continue
                counted = self.parts[part] = HyperLogLog(PART_PRECISION)
            counted.add(value)

    def age(self, window: int) -> None:
        """Fold the windows older than the recent ones into `history`."""
        for old in [start for start in self.windows if start <= window - RECENT_WINDOWS]:
            folded = self.windows.pop(old)
            if self.history is None:
                self.history = folded
            else:
                self.history.merge(folded)

    def figures(self, current: int) -> KeyFigures:
        self.age(current)
        union = self.history.copy() if self.history is not None else HyperLogLog(KEY_PRECISION)
        before = union.count()
        windows = []
        for window in range(current - RECENT_WINDOWS + 1, current + 1):
            sketch, distinct, after = self.windows.get(window), 0, before
            if sketch is not None:
                union.merge(sketch)
                distinct, after = sketch.count(), union.count()
            windows.append(WindowCount(window * WINDOW_SECONDS, distinct, max(0, after - before)))
            before = after
        parts = {part: sketch.count() for part, sketch in self.parts.items()}
        return KeyFigures(before, tuple(windows), parts)

    @property
    def nbytes(self) -> int:
        sketches = [*self.windows.values(), *self.parts.values()]
        if self.history is not None:
            sketches.append(self.history)
        return sum(sketch.nbytes for sketch in sketches)


class KeyCensus:
    """Per-handler distinct-key counts (see the module docstring); `shared` when the store
    is Redis, else this process's sketches."""

    def __init__(
        self,
        clock: Callable[[], float],
        shared: SharedSketches | None = None,
        timeout: float = 1.0,
    ) -> None:
        self.clock = clock
        self.shared = shared
        self.timeout = timeout
        self._local: dict[str, _Sketches] = {}
        #: Keys to send to Redis, by handler and window (the window when they were stored).
        self._pending: dict[tuple[str, int], Pending] = {}
        self._pending_bytes = 0
        self._names_bytes = 0
        #: Handlers this process counted on Redis (whose old windows it folds), and the
        #: key parts it counts for each (at most `MAX_PARTS`, the first ones seen).
        self._counted: set[str] = set()
        self._part_names: dict[str, set[str]] = {}
        self._folded_window: int | None = None
        self._early: asyncio.Task[None] | None = None
        self._log = RateLimitedLog()
        self.untracked = 0
        self.dropped = 0
        self.errors = 0

    @property
    def scope(self) -> str:
        """Whose keys the figures count."""
        return "every worker (Redis)" if self.shared is not None else "this process"

    def window(self) -> int:
        """The number of the current window."""
        return int(self.clock() // WINDOW_SECONDS)

    def add(self, handler: str, key: str, url_prefix: str | None) -> None:
        """Count a key `handler` just stored (`url_prefix`: its default-key prefix, None for
        a template or callable key). Never raises."""
        try:
            parts = key_parts(key, url_prefix)
            if self.shared is not None:
                self._buffer(handler, key, parts)
                return
            sketches = self._local.get(handler)
            if sketches is None:
                if len(self._local) >= MAX_HANDLERS:
                    self.untracked += 1
                    return
                sketches = self._local[handler] = _Sketches()
            sketches.add(self.window(), key, parts)
        except Exception as exc:  # a bug here must not fail the fill that stored the key
            self.errors += 1
            self._log.warning("counting a key of %s failed: %r", handler, exc)

    def _buffer(self, handler: str, key: str, parts: list[tuple[str, str]]) -> None:
        if handler not in self._counted:
            if len(self._counted) >= MAX_HANDLERS:
                self.untracked += 1
                return
            self._counted.add(handler)
            self._part_names[handler] = set()
        counted_parts = self._part_names[handler]
        cost = STRING_OVERHEAD + len(key) + sum(STRING_OVERHEAD + len(v) for _, v in parts)
        if self._pending_bytes + cost > PENDING_MAX_BYTES:
            self.dropped += 1
            return
        slot = (handler, self.window())
        pending = self._pending.get(slot)
        if pending is None:
            pending = self._pending[slot] = Pending()
        if key not in pending.keys:
            pending.keys.add(key)
            self._pending_bytes += STRING_OVERHEAD + len(key)
        for part, value in parts:
            if part not in counted_parts:
                if len(counted_parts) >= MAX_PARTS:
                    continue
                counted_parts.add(part)
                self._names_bytes += STRING_OVERHEAD + len(part)
            values = pending.parts.get(part)
            if values is None:
                values = pending.parts[part] = set()
            if value not in values:
                values.add(value)
                self._pending_bytes += STRING_OVERHEAD + len(value)
        if self._pending_bytes >= PENDING_MAX_BYTES // 2 and self._early is None:
            # A burst of fills: send now rather than drop keys before the next second.
            self._early = asyncio.get_running_loop().create_task(self._flush_early())

    async def _flush_early(self) -> None:
        try:
            await self.flush()
        finally:
            self._early = None

    async def flush(self) -> None:
        """Send the buffered keys to Redis (and fold old windows once per window); errors
        are counted and logged, never raised. Nothing to do in-process."""
        if self.shared is None:
            return
        window = self.window()
        folding = window != self._folded_window
        if not self._pending and not folding:
            return
        pending, self._pending, self._pending_bytes = self._pending, {}, 0
        aged = sorted(self._counted) if folding else []
        self._folded_window = window
        try:
            async with asyncio.timeout(self.timeout):
                await self.shared.write(pending, window, aged)
        except Exception as exc:  # a store error, a timeout: the counts miss this batch
            self.errors += 1
            if folding:
                self._folded_window = None  # fold again at the next flush (idempotent)
            self._log.warning("cache key counts not sent to the store: %r", exc)

    async def flush_every(self, interval: float = FLUSH_SECONDS) -> None:
        """`flush` every `interval` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            await self.flush()

    @contextlib.asynccontextmanager
    async def flushing(self) -> AsyncIterator[None]:
        """While the app runs: `flush_every` on Redis, and a last flush at the end."""
        if self.shared is None:
            yield
            return
        try:
            async with background.running(
                self.flush_every(), name="cachekit-key-census", stop_within=self.timeout + 1.0
            ):
                yield
        finally:
            if self._early is not None:
                await background.stop(self._early, self.timeout + 1.0)
            await self.flush()  # the last second's keys

    async def handlers(self) -> list[str]:
        """The handlers counted (by every worker, on Redis)."""
        if self.shared is None:
            return sorted(self._local)
        await self.flush()
        return sorted(set(await self.shared.handlers()) | self._counted)

    async def figures(self, handler: str) -> KeyFigures | None:
        """`handler`'s figures; None when it has stored nothing yet (on Redis: raises
        `StoreError` or `TimeoutError` when Redis does not answer)."""
        if self.shared is None:
            sketches = self._local.get(handler)
            return None if sketches is None else sketches.figures(self.window())
        await self.flush()
        async with asyncio.timeout(self.timeout):
            figures = await self.shared.figures(handler, self.window())
        return figures if figures.distinct or handler in self._counted else None

    def stats(self) -> dict[str, Any]:
        """This process's side of the counts: bytes held, keys not counted, errors."""
        held = sum(sketches.nbytes for sketches in self._local.values())
        held += self._pending_bytes + self._names_bytes
        return {
            "key_census_bytes": held,
            "key_census_untracked": self.untracked,
            "key_census_dropped": self.dropped,
            "key_census_errors": self.errors,
        }
