"""`RedisKeySketches`: the per-handler key counts of `key_census.py` as Redis HyperLogLogs
(PFADD, PFMERGE, PFCOUNT), shared by every worker and read by the CLI.

Per handler H (`layout.py`): one HyperLogLog per time window (`ns:k:{:H}:w:N`, expiring
`WINDOW_TTL` after its last key), one of all time before the recent windows
(`ns:k:{:H}:old`), and one per key part. A window leaving the recent ones is folded into
`old` by every worker that counts H, at its first flush of a window: PFMERGE is
idempotent, so folding twice changes nothing, and the windows are kept `AGED_WINDOWS`
longer than they are recent so that a worker may fold late. Readers count `old` together
with every window still kept, so a window not folded yet is counted all the same.

All of H's keys share the hash tag `{:H}`: on a Redis Cluster the multi-key PFMERGE and
PFCOUNT run on one slot (sent with `execute_command`: redis-py's cluster pipeline refuses
its `pfcount` and `pfmerge` methods, not the commands).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final

from cachekit.backends.layout import KeyLayout
from cachekit.key_census import Pending
from cachekit.key_growth import (
    HISTORY_SECONDS,
    RECENT_WINDOWS,
    WINDOW_SECONDS,
    KeyFigures,
    WindowCount,
)

#: Windows kept after they stop being recent, for workers that fold late.
AGED_WINDOWS: Final = 12
#: How long a window's HyperLogLog lives after its last key (a few hours).
WINDOW_TTL: Final = (RECENT_WINDOWS + AGED_WINDOWS + 1) * WINDOW_SECONDS
#: Key parts read per handler, at most (each worker counts at most 16, its first ones).
MAX_PARTS_READ: Final = 64

Run = Callable[[Awaitable[Any]], Awaitable[Any]]


class RedisKeySketches:
    """The `SharedSketches` of a Redis store: `client`, its `layout`, and `run` (the
    topology's, which turns Redis errors into `StoreError`)."""

    def __init__(self, client: Any, layout: KeyLayout, run: Run) -> None:
        self._client = client
        self._layout = layout
        self._run = run

    async def write(
        self, pending: Mapping[tuple[str, int], Pending], window: int, aged: Sequence[str]
    ) -> None:
        """See `SharedSketches.write`: one pipeline."""
        layout = self._layout
        async with self._client.pipeline(transaction=False) as pipe:
            for (handler, stored_in), found in pending.items():
                if found.keys:
                    counted = layout.key_window_key(handler, stored_in)
                    pipe.pfadd(counted, *found.keys)
                    pipe.expire(counted, WINDOW_TTL)
                if found.parts:
                    parts_key = layout.key_parts_key(handler)
                    pipe.sadd(parts_key, *found.parts)
                    pipe.expire(parts_key, HISTORY_SECONDS)
                for part, values in found.parts.items():
                    part_key = layout.key_part_key(handler, part)
                    pipe.pfadd(part_key, *values)
                    pipe.expire(part_key, HISTORY_SECONDS)
            for handler in aged:
                history = layout.key_history_key(handler)
                pipe.execute_command("PFMERGE", history, *self._aged_windows(handler, window))
                pipe.expire(history, HISTORY_SECONDS)
            handlers = sorted({*(handler for handler, _ in pending), *aged})
            if handlers:
                pipe.sadd(layout.counted_handlers_key, *handlers)
                pipe.expire(layout.counted_handlers_key, HISTORY_SECONDS)
            await self._run(pipe.execute())

    def _aged_windows(self, handler: str, window: int) -> list[str]:
        first = window - RECENT_WINDOWS - AGED_WINDOWS + 1
        return [
            self._layout.key_window_key(handler, old)
            for old in range(first, window - RECENT_WINDOWS + 1)
        ]

    async def figures(self, handler: str, window: int) -> KeyFigures:
        """See `SharedSketches.figures`: unions by multi-key PFCOUNT, in two round trips."""
        layout = self._layout
        before = [layout.key_history_key(handler), *self._aged_windows(handler, window)]
        recent = range(window - RECENT_WINDOWS + 1, window + 1)
        keys = [layout.key_window_key(handler, start) for start in recent]
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.execute_command("PFCOUNT", *before)
            for count, key in enumerate(keys, 1):
                pipe.execute_command("PFCOUNT", key)
                pipe.execute_command("PFCOUNT", *before, *keys[:count])
            pipe.smembers(layout.key_parts_key(handler))
            replies = await self._run(pipe.execute())
        windows, previous = [], int(replies[0])
        for index, start in enumerate(recent):
            distinct, union = int(replies[1 + 2 * index]), int(replies[2 + 2 * index])
            windows.append(WindowCount(start * WINDOW_SECONDS, distinct, max(0, union - previous)))
            previous = union
        names = sorted(_text(member) for member in replies[-1])[:MAX_PARTS_READ]
        counts: list[Any] = []
        if names:
            async with self._client.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.execute_command("PFCOUNT", layout.key_part_key(handler, name))
                counts = await self._run(pipe.execute())
        parts = {name: int(count) for name, count in zip(names, counts, strict=True)}
        return KeyFigures(previous, tuple(windows), parts)

    async def handlers(self) -> list[str]:
        """See `SharedSketches.handlers`."""
        members = await self._run(self._client.smembers(self._layout.counted_handlers_key))
        return sorted(_text(member) for member in members)


def _text(member: bytes | str) -> str:
    return member.decode("utf-8", "surrogateescape") if isinstance(member, bytes) else member
