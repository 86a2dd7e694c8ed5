"""One benchmark server process: `python -m bench.server --kind K --backend B --port P`."""

from __future__ import annotations

import argparse
import gzip
import warnings
from collections.abc import Callable
from typing import Final

from aiohttp import web

from bench import peers
from bench.handlers import (
    TTL,
    ServerConfig,
    Upstream,
    add_pages,
    base_app,
    json_response,
    page_number,
    uncached_handlers,
)
from bench.payload import SPREAD_KEYS, page_body
from bench.procs import EVENT_LOOPS

HOST: Final = "127.0.0.1"


def limit_app(config: ServerConfig, upstream: Upstream) -> web.Application:
    """The ceiling: a trivial handler that returns one prebuilt body, no cache, no upstream."""
    prebuilt = page_body(1)

    async def items(_: web.Request) -> web.Response:
        return json_response(prebuilt)

    del config  # same for every backend
    slow = uncached_handlers(upstream)[1]
    return add_pages(base_app(upstream), items, slow)


def limit_gzip_app(config: ServerConfig, upstream: Upstream) -> web.Application:
    """The ceiling for gzip clients: one prebuilt gzip body (level 6), no cache."""
    prebuilt = gzip.compress(page_body(1), compresslevel=6)

    async def items(_: web.Request) -> web.Response:
        response = json_response(prebuilt)
        response.headers["Content-Encoding"] = "gzip"
        response.headers["Vary"] = "Accept-Encoding"
        return response

    del config
    slow = uncached_handlers(upstream)[1]
    return add_pages(base_app(upstream), items, slow)


def limit_pages_app(config: ServerConfig, upstream: Upstream) -> web.Application:
    """The ceiling over many pages: page `n`'s body prebuilt for each of 1,000 pages (served
    by `wrk`'s spread script), no cache. Like a spread cache hit, each request sends another
    13 KB body, which `limit`'s single hot body does not."""
    del config  # same for every backend
    return _pages_app(upstream, page_body)


def limit_gzip_pages_app(config: ServerConfig, upstream: Upstream) -> web.Application:
    """`limit_pages_app` for gzip clients: page `n`'s gzip bytes (level 6), prebuilt."""
    del config
    return _pages_app(upstream, lambda n: gzip.compress(page_body(n), compresslevel=6), gzip=True)


def _pages_app(
    upstream: Upstream, make: Callable[[int], bytes], *, gzip: bool = False
) -> web.Application:
    prebuilt = [make(n) for n in range(SPREAD_KEYS)]

    async def items(request: web.Request) -> web.Response:
        response = json_response(prebuilt[page_number(request) % SPREAD_KEYS])
        if gzip:
            response.headers["Content-Encoding"] = "gzip"
            response.headers["Vary"] = "Accept-Encoding"
        return response

    slow = uncached_handlers(upstream)[1]
    return add_pages(base_app(upstream), items, slow)


def aiohttp_compression_app(config: ServerConfig, upstream: Upstream) -> web.Application:
    """What users do without cachekit's codings: aiohttp compresses every response."""
    prebuilt = page_body(1)

    async def items(_: web.Request) -> web.Response:
        response = json_response(prebuilt)
        response.enable_compression()
        return response

    del config
    slow = uncached_handlers(upstream)[1]
    return add_pages(base_app(upstream), items, slow)


def uncached_app(_: ServerConfig, upstream: Upstream) -> web.Application:
    """The real handler without any cache: every request waits for the upstream."""
    return add_pages(base_app(upstream), *uncached_handlers(upstream))


def cachekit_app(config: ServerConfig, upstream: Upstream) -> web.Application:
    """The real handler under `@cached`, with the embedded store or Redis."""
    # Imported here, so the other variants never depend on cachekit importing cleanly.
    from cachekit import CacheSettings, cached, setup_cache  # noqa: PLC0415

    items, slow = uncached_handlers(upstream)
    redis_url = config.redis_url if config.backend.startswith("redis") else None
    near_bytes = 64 << 20 if config.backend == "redis-near" else 0
    settings = CacheSettings(
        redis_url=redis_url,
        namespace="cachekit",
        near_cache_max_bytes=near_bytes,
        metrics_path="/metrics" if config.kind == "cachekit-metrics" else None,
    )

    def lookup_counters() -> dict[str, int]:
        stats = cache.stats()
        return {name: stats[name] for name in ("lookup_batches", "lookup_keys") if name in stats}

    app = base_app(upstream, lookup_counters)
    cache = setup_cache(app, settings)
    return add_pages(
        app,
        cached(ttl=TTL, key="items:{match_info[n]}", name="items")(items),
        cached(ttl=TTL, key="slow:{match_info[n]}", name="slow")(slow),
    )


BUILDERS: Final[dict[str, Callable[[ServerConfig, Upstream], web.Application]]] = {
    "limit": limit_app,
    "limit-gzip": limit_gzip_app,
    "limit-pages": limit_pages_app,
    "limit-gzip-pages": limit_gzip_pages_app,
    "aiohttp-compression": aiohttp_compression_app,
    "uncached": uncached_app,
    "cachekit": cachekit_app,
    "cachekit-metrics": cachekit_app,
    "aiohttp-cache": peers.aiohttp_cache_app,
    "aiocache": peers.aiocache_app,
    "cashews": peers.cashews_app,
}


def build_app(config: ServerConfig) -> web.Application:
    """The app of one variant."""
    return BUILDERS[config.kind](config, Upstream(config.delay, config.slow_delay))


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and serve until terminated."""
    parser = argparse.ArgumentParser(prog="python -m bench.server")
    parser.add_argument("--kind", choices=sorted(BUILDERS), required=True)
    parser.add_argument(
        "--backend", choices=["none", "memory", "redis", "redis-near"], default="none"
    )
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay", type=float, default=0.002)
    parser.add_argument("--slow-delay", type=float, default=0.1)
    parser.add_argument("--loop", choices=EVENT_LOOPS, default="asyncio")
    args = parser.parse_args(argv)
    # Some peers keep state under string app keys; aiohttp warns about that, harmlessly.
    warnings.simplefilter("ignore")
    config = ServerConfig(args.kind, args.backend, args.redis_url, args.delay, args.slow_delay)
    loop = None
    if args.loop == "uvloop":
        import uvloop  # noqa: PLC0415  # only when asked for

        loop = uvloop.new_event_loop()
    web.run_app(
        build_app(config), host=HOST, port=args.port, access_log=None, print=None, loop=loop
    )


if __name__ == "__main__":
    main()
