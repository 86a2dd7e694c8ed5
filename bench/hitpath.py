"""Micro-benchmark of the hit path in one process: what cachekit adds to a trivial handler.

`python -m bench.hitpath [--profile]` calls a decorated handler directly with a prepared
request object (no sockets, no HTTP parsing), so the figure is cachekit's own cost per hit,
to compare with the whole per-request budget wrk measures.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from bench.payload import page_body
from cachekit import CacheSettings, cached, setup_cache

BODY = page_body(7)
ROUNDS = 5
CALLS = 20_000


def build() -> tuple[web.Application, dict[str, Callable[[web.Request], Awaitable[object]]]]:
    """An app with the limit handler and a cached one (memory store)."""

    async def limit(request: web.Request) -> web.Response:
        return web.Response(body=BODY, content_type="application/json")

    @cached(ttl=3600)
    async def item(request: web.Request) -> web.Response:
        return web.Response(body=BODY, content_type="application/json")

    @cached(ttl=3600, key="item:{match_info[id]}")
    async def item_by_template(request: web.Request) -> web.Response:
        return web.Response(body=BODY, content_type="application/json")

    app = web.Application()
    setup_cache(app, CacheSettings(redis_url=None, invalidate_on_unsafe=False))
    return app, {"limit": limit, "default-key": item, "template-key": item_by_template}


async def measure(profile: bool) -> None:
    """Print µs per call for each handler, best of several rounds."""
    app, handlers = build()
    request = make_mocked_request(
        "GET",
        "/items/7?b=2&a=1",
        headers={"Host": "bench.local"},
        app=app,
        match_info={"id": "7"},
    )
    for handler in handlers.values():
        await handler(request)  # fill
    results = {}
    for name, handler in handlers.items():
        best = float("inf")
        for _ in range(ROUNDS):
            started = time.perf_counter()
            for _ in range(CALLS):
                await handler(request)
            best = min(best, (time.perf_counter() - started) / CALLS)
        results[name] = best * 1e6
    for name, micros in results.items():
        extra = micros - results["limit"]
        print(f"{name:>14}: {micros:6.2f} µs/call  (+{extra:5.2f} µs over limit)")
    if profile:
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(CALLS):
            await handlers["default-key"](request)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(18)


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", action="store_true", help="print a cProfile of hits")
    asyncio.run(measure(parser.parse_args().profile))


if __name__ == "__main__":
    main()
