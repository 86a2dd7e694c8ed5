"""`GET {prefix}/keys[?handler=NAME]` of the admin API (`admin.py` mounts it behind its
token guard): each handler's distinct stored keys, per window, per key part, and the
warning when they keep growing (`key_census.py`, `key_growth.py`)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from cachekit.app import get_cache
from cachekit.backends.base import StoreError
from cachekit.key_census import KeyCensus
from cachekit.key_growth import RECENT_WINDOWS, WINDOW_SECONDS, KeyFigures, WindowCount, report


async def keys_report(request: web.Request) -> web.Response:
    """Every handler's key counts, or one handler's (`?handler=NAME`): 404 for a name this
    app never cached under, 503 when Redis does not answer."""
    cache = get_cache(request)
    census = cache.key_census
    name = request.query.get("handler")
    head: dict[str, Any] = {"scope": census.scope, "window_seconds": WINDOW_SECONDS}
    try:
        if name is None:
            handlers = {}
            for counted in await census.handlers():
                figures = await census.figures(counted)
                if figures is not None:
                    handlers[counted] = report(figures)
            return web.json_response({**head, "handlers": handlers})
        figures = await census.figures(name)
    except (StoreError, TimeoutError):
        return web.json_response({"error": "the cache store did not answer"}, status=503)
    if figures is None:
        if name not in {served for served, _ in cache.handler_results()}:
            return web.json_response(
                {"error": f"no @cached handler named {name!r} has served requests"}, status=404
            )
        figures = _nothing_stored(census)
    return web.json_response({**head, "handler": name, **report(figures)})


def _nothing_stored(census: KeyCensus) -> KeyFigures:
    """The figures of a handler that has served requests but stored no key yet."""
    current = census.window()
    windows = tuple(
        WindowCount(start * WINDOW_SECONDS, 0, 0)
        for start in range(current - RECENT_WINDOWS + 1, current + 1)
    )
    return KeyFigures(0, windows, {})
