"""The peer libraries (aiohttp-cache, aiocache, cashews) wrapped around the same upstream."""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any, Final

from aiohttp import web

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

# The import name of each peer and how to install it when it is missing.
PEER_MODULES: Final = {
    "aiohttp-cache": "aiohttp_cache",
    "aiocache": "aiocache",
    "cashews": "cashews",
}
INSTALL_HINTS: Final = {
    "aiohttp-cache": "pip install --no-deps aiohttp-cache  (it pins redis<5; see bench/README.md)",
    "aiocache": "pip install -e '.[bench]'",
    "cashews": "pip install -e '.[bench]'",
}


def missing_reason(peer: str) -> str | None:
    """Why `peer` cannot run here (not installed), or None when it can be imported."""
    module = PEER_MODULES.get(peer)
    if module is None or importlib.util.find_spec(module) is not None:
        return None
    return f"{peer} is not installed ({INSTALL_HINTS[peer]})"


def _load(peer: str) -> Any:
    """Import an optional peer by its distribution name (untyped on purpose)."""
    return importlib.import_module(PEER_MODULES[peer])


def aiohttp_cache_app(config: ServerConfig, upstream: Upstream) -> web.Application:
    """aiohttp-cache: its middleware stores whole responses of handlers marked `@cache`."""
    aiohttp_cache = _load("aiohttp-cache")
    app = base_app(upstream)
    items, slow = uncached_handlers(upstream)
    mark = aiohttp_cache.cache(expires=TTL)
    backend: dict[str, Any] = {"cache_type": "memory"}
    if config.backend == "redis":
        host, port = config.redis_host_port
        backend = {
            "cache_type": "redis",
            "backend_config": aiohttp_cache.RedisConfig(host=host, port=port, key_prefix="ahc:"),
        }
    aiohttp_cache.setup_cache(app, **backend)
    return add_pages(app, mark(items), mark(slow))


def aiocache_app(config: ServerConfig, upstream: Upstream) -> web.Application:
    """aiocache: `@cached` on the upstream call; the handler wraps the cached body."""
    aiocache = _load("aiocache")
    cache_class, cached = aiocache.Cache, aiocache.cached
    null_serializer = importlib.import_module("aiocache.serializers").NullSerializer

    options: dict[str, Any] = {"cache": cache_class.MEMORY}
    if config.backend == "redis":
        host, port = config.redis_host_port
        options = {
            "cache": cache_class.REDIS,
            "endpoint": host,
            "port": port,
            "namespace": "aiocache",
        }

    def decorate(prefix: str) -> Any:
        return cached(
            ttl=TTL,
            key_builder=lambda _f, n: f"{prefix}:{n}",
            serializer=null_serializer(encoding=None),  # bytes in, bytes out
            **options,
        )

    page = decorate("items")(upstream.page)
    slow_page = decorate("slow")(upstream.slow_page)

    async def items(request: web.Request) -> web.Response:
        return json_response(await page(page_number(request)))

    async def slow(request: web.Request) -> web.Response:
        return json_response(await slow_page(page_number(request)))

    return add_pages(base_app(upstream), items, slow)


def cashews_app(config: ServerConfig, upstream: Upstream) -> web.Application:
    """cashews: `@cache(ttl=..., key=...)` on the upstream call, memory or Redis backend."""
    cache = _load("cashews").Cache(name="bench")
    redis_url = config.redis_url if config.backend == "redis" else None
    cache.setup(redis_url or "mem://?size=2000000")

    async def fetch_page(n: int) -> bytes:
        return await upstream.page(n)

    async def fetch_slow(n: int) -> bytes:
        return await upstream.slow_page(n)

    page = cache(ttl=TTL, key="items:{n}")(fetch_page)
    slow_page = cache(ttl=TTL, key="slow:{n}")(fetch_slow)

    async def items(request: web.Request) -> web.Response:
        return json_response(await page(page_number(request)))

    async def slow(request: web.Request) -> web.Response:
        return json_response(await slow_page(page_number(request)))

    app = base_app(upstream)

    async def lifecycle(_: web.Application) -> Any:
        await cache.init()
        yield
        await cache.close()

    app.cleanup_ctx.append(lifecycle)
    return add_pages(app, items, slow)
