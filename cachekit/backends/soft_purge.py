"""Soft purges of keys on Redis: entries rewritten stale in place (tags use soft versions,
`tag_versions.py`). Used by `RedisStore`; a module of its own to keep the store short."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from cachekit.entry import CachedResponse, CorruptEntry
from cachekit.entry_format import decode, encode
from cachekit.purging import soft_purged

#: A registered script (redis-py `Script`) called as `script(keys=[...], args=[...])`.
Script = Callable[..., Awaitable[Any]]


async def soften(
    client: Any,
    run: Callable[[Awaitable[Any]], Awaitable[Any]],
    entry_keys: Sequence[str],
    at: float,
    *,
    delete_if: Script,
    replace_if: Script,
) -> int:
    """Soft-purge the entries under these Redis keys at `at` (`purging.soft_purged`):
    rewritten stale, or deleted when they have no stale window, each only if it still holds
    the bytes read (a fill may have replaced it); returns how many existed."""
    async with client.pipeline(transaction=False) as pipe:
        for entry_key in entry_keys:
            pipe.get(entry_key)
        raws = await run(pipe.execute())
    found = 0
    for entry_key, raw in zip(entry_keys, raws, strict=True):
        if raw is None:
            continue
        found += 1
        try:
            entry: CachedResponse | None = decode(raw)
        except CorruptEntry:
            entry = None  # damaged: gone, as a lookup would drop it
        view = None if entry is None else soft_purged(entry, at)
        if view is None:
            await run(delete_if(keys=[entry_key], args=[raw]))
        elif view is not entry:
            await run(replace_if(keys=[entry_key], args=[raw, encode(view, view.tag_versions)]))
    return found


async def cardinalities(client: Any, keys: Iterable[str]) -> list[int]:
    """ZCARD of each key, in one pipeline."""
    async with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.zcard(key)
        return list(await pipe.execute())
