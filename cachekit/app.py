"""aiohttp wiring: `setup_cache` (startup/cleanup) and `get_cache`."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from cachekit.backends.base import Store
from cachekit.backends.memory import MemoryStore
from cachekit.backends.redis import RedisStore
from cachekit.cache import Cache
from cachekit.invalidation import unsafe_method_middleware
from cachekit.settings import CacheSettings, load_settings

log = logging.getLogger("cachekit")

CACHE_APP_KEY: web.AppKey[Cache] = web.AppKey("cachekit_cache", Cache)


def build_store(settings: CacheSettings) -> Store:
    """The store the settings ask for: Redis when `redis_url` is set, else the embedded one."""
    if settings.redis_url:
        return RedisStore.from_url(
            settings.redis_url,
            settings.namespace,
            settings.redis_timeout,
            max_variants=settings.max_variants,
        )
    return MemoryStore(settings.memory_max_bytes, max_variants=settings.max_variants)


def setup_cache(
    app: web.Application, settings: CacheSettings | None = None, store: Store | None = None
) -> Cache:
    """Attach a cache to `app`: settings from CACHEKIT_* variables unless given.

    Invalid settings raise `SettingsError` here, at startup. The store is closed in the
    app's cleanup; `store` lets tests inject one.
    """
    resolved = settings if settings is not None else load_settings()
    cache = Cache(resolved, store if store is not None else build_store(resolved))
    cache.router = app.router
    app[CACHE_APP_KEY] = cache
    if resolved.invalidate_on_unsafe:
        app.middlewares.append(unsafe_method_middleware(_tag_invalidator))

    async def cache_lifecycle(_: web.Application) -> AsyncIterator[None]:
        log.info("%s store, namespace %r", cache.stats()["store"], resolved.namespace)
        yield
        await cache.close()

    app.cleanup_ctx.append(cache_lifecycle)
    return cache


def _tag_invalidator(request: web.Request) -> Callable[..., Awaitable[int]] | None:
    cache = request.config_dict.get(CACHE_APP_KEY)
    if cache is None or not cache.settings.enabled:
        return None
    return cache.invalidate_tags


def get_cache(app_or_request: web.Application | web.Request) -> Cache:
    """The cache of an app (or of the app serving a request); see `setup_cache`."""
    if isinstance(app_or_request, web.Application):
        cache = app_or_request.get(CACHE_APP_KEY)
    else:
        cache = app_or_request.config_dict.get(CACHE_APP_KEY)
    if cache is None:
        raise RuntimeError("no cache on this app: call cachekit.setup_cache(app) at startup")
    return cache


def cache_of(request: web.Request, handler_name: str) -> Cache:
    """The cache serving a decorated handler, with an error that says how to fix its absence."""
    cache = request.config_dict.get(CACHE_APP_KEY)
    if cache is None:
        raise RuntimeError(
            f"@cached handler {handler_name!r} runs in an app without a cache:"
            " call cachekit.setup_cache(app) when building the app"
        )
    return cache
