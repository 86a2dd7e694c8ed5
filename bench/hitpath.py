"""Micro-benchmark of the hit path in one process: what cachekit adds to a trivial handler.

`python -m bench.hitpath [--profile]` calls a decorated handler directly with a prepared
request object (no sockets, no HTTP parsing), so the figure is cachekit's own cost per hit,
to compare with the whole per-request budget wrk measures.

`python -m bench.hitpath --redis` compares stores instead: rounds of 32 concurrent hits
(`asyncio.gather`, as 32 wrk connections would issue them) on the embedded store, on one
hot Redis key and spread over 1,000 Redis keys (a private redis-server on a free loopback
port), reporting this process's CPU time per hit (user + system: the Redis round trips'
socket work included). Every loop is bounded by its round count.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import random
import time
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from bench.payload import page_body
from bench.procs import RedisProcess
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


CONCURRENT: Final = 32
KEYS: Final = 1_000
CONCURRENT_ROUNDS: Final = 300


async def cpu_per_concurrent_hit(redis_url: str | None, spread: bool) -> float:
    """Best CPU µs per hit over rounds of `CONCURRENT` concurrent hits."""
    app = web.Application()
    settings = CacheSettings(redis_url=redis_url, namespace="hitpath", invalidate_on_unsafe=False)
    setup_cache(app, settings)

    @cached(ttl=3600, key="items:{match_info[n]}")
    async def item(request: web.Request) -> web.Response:
        return web.Response(body=page_body(int(request.match_info["n"])))

    app.router.add_get("/items/{n}", item)
    app.freeze()
    await app.startup()
    try:
        requests = [
            make_mocked_request("GET", f"/items/{n}", app=app, match_info={"n": str(n)})
            for n in range(KEYS if spread else 1)
        ]
        for request in requests:
            await item(request)  # fill
        picks = random.Random(7)
        best = float("inf")
        for measured in (False, *([True] * ROUNDS)):
            started = time.process_time()
            for _ in range(CONCURRENT_ROUNDS):
                batch = [picks.choice(requests) for _ in range(CONCURRENT)]
                responses = await asyncio.gather(*(item(request) for request in batch))
            if measured:
                spent = time.process_time() - started
                best = min(best, spent / (CONCURRENT_ROUNDS * CONCURRENT))
            if any(response.headers.get("X-Cache") != "HIT" for response in responses):
                raise RuntimeError("a hit was expected")
        return best * 1e6
    finally:
        await app.cleanup()


def measure_stores() -> None:
    """Print CPU µs per concurrent hit: embedded store, hot Redis key, 1,000 Redis keys."""
    with RedisProcess() as redis_server:
        cases = {
            "memory, hot key": (None, False),
            "redis, hot key": (redis_server.url, False),
            f"redis, {KEYS:,} keys": (redis_server.url, True),
        }
        print(f"{CONCURRENT} concurrent hits per round, best of {ROUNDS} x {CONCURRENT_ROUNDS}")
        for name, (url, spread) in cases.items():
            micros = asyncio.run(cpu_per_concurrent_hit(url, spread))
            print(f"{name:>17}: {micros:6.2f} µs CPU per hit")


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", action="store_true", help="print a cProfile of hits")
    parser.add_argument("--redis", action="store_true", help="compare stores (see above)")
    args = parser.parse_args()
    if args.redis:
        measure_stores()
    else:
        asyncio.run(measure(args.profile))


if __name__ == "__main__":
    main()
