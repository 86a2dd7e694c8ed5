"""aiohttp wiring: `setup_cache` (startup/cleanup) and `get_cache`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from cachekit import background, overrides
from cachekit.backends.base import Store
from cachekit.backends.cluster import ClusterStore
from cachekit.backends.memory import MemoryStore
from cachekit.backends.redis import RedisStore
from cachekit.backends.sentinel import SentinelStore
from cachekit.cache import Cache
from cachekit.invalidation import unsafe_method_receiver
from cachekit.policy import SAFE_METHODS
from cachekit.purging import PurgeHook
from cachekit.settings import CacheSettings, load_settings
from cachekit.worker_stats import REPORTER, reporter_for

log = logging.getLogger("cachekit")

CACHE_APP_KEY: web.AppKey[Cache] = web.AppKey("cachekit_cache", Cache)


def build_store(settings: CacheSettings) -> Store:
    """The store the settings ask for: Redis when `redis_url` is set (standalone, cluster or
    Sentinel, by `redis_mode`, with the near cache if configured), else the embedded one
    (which is in-process already: `near_cache_max_bytes` does not apply to it)."""
    if not settings.redis_url:
        return MemoryStore(settings.memory_max_bytes, max_variants=settings.max_variants)
    url, namespace, timeout = settings.redis_url, settings.namespace, settings.redis_timeout
    variants = settings.max_variants
    if settings.redis_mode == "cluster":  # settings refuse a near cache here
        return ClusterStore.from_url(url, namespace, timeout, variants)
    near = {
        "near_max_bytes": settings.near_cache_max_bytes,
        "near_max_age": settings.near_cache_max_age,
    }
    if settings.redis_mode == "sentinel":
        service = settings.redis_sentinel_service or ""
        secret = settings.redis_sentinel_password
        return SentinelStore.connect(
            url,
            service,
            namespace,
            timeout,
            variants,
            sentinel_username=settings.redis_sentinel_username,
            sentinel_password=secret.get_secret_value() if secret is not None else None,
            **near,
        )
    return RedisStore.from_url(url, namespace, timeout, variants, **near)


def setup_cache(
    app: web.Application,
    settings: CacheSettings | None = None,
    store: Store | None = None,
    *,
    on_purge: PurgeHook | None = None,
) -> Cache:
    """Attach a cache to `app`: settings from CACHEKIT_* variables unless given.

    Invalid settings raise `SettingsError` here, at startup. The store is closed in the
    app's cleanup; `store` lets tests inject one. `on_purge` receives every purge once the
    store has applied it (`cachekit.Purge`), e.g. to forward it to a CDN.
    """
    resolved = settings if settings is not None else load_settings()
    if overrides.forced_settings:  # set by cachekit.testing's fixtures only
        resolved = resolved.model_copy(update=overrides.forced_settings)
    attached = store if store is not None else build_store(resolved)
    if overrides.wrap_store is not None:
        attached = overrides.wrap_store(attached)
    cache = Cache(resolved, attached, on_purge=on_purge)
    cache.router = app.router
    app[CACHE_APP_KEY] = cache
    if resolved.metrics_path is not None:
        from cachekit import metrics  # noqa: PLC0415  (prometheus-client only when asked for)

        cache.metrics = metrics.metrics()
        app.router.add_get(resolved.metrics_path, metrics.metrics_handler(cache))
    receiver = None
    if resolved.invalidate_on_unsafe:
        receiver = unsafe_method_receiver(_tag_invalidator)
        app.on_response_prepare.append(receiver)

    async def cache_lifecycle(_: web.Application) -> AsyncIterator[None]:
        log.info("%s store, namespace %r", cache.stats()["store"], resolved.namespace)
        for warning in await cache.startup_warnings():
            log.warning("%s", warning)
        signal = app.on_response_prepare
        if receiver is not None and not signal.frozen and not answers_unsafe_methods(app):
            # Nothing here can answer POST, PUT, DELETE...: the receiver could never purge,
            # and every response would still pay for the signal (startup runs before aiohttp
            # freezes the signal; a sub-app's is frozen earlier and keeps it).
            signal.remove(receiver)
        # Bounded: shutting down must not wait on a store that does not answer.
        stop_within = resolved.redis_timeout + 1.0
        async with contextlib.AsyncExitStack() as jobs:
            if cache.metrics is not None:
                await jobs.enter_async_context(
                    background.running(
                        _sync_metrics_every(cache), name="cachekit-metrics", stop_within=1.0
                    )
                )
            publishing = cache.store.remote and resolved.stats_interval > 0
            if publishing:
                await jobs.enter_async_context(
                    background.running(
                        cache.publish_counters_every(resolved.stats_interval),
                        name="cachekit-counters",
                        stop_within=stop_within,
                    )
                )
            await jobs.enter_async_context(cache.key_census.flushing())
            yield
        if cache.metrics is not None:
            cache.metrics.sync([cache])
        if publishing:
            await cache.publish_counters()  # the last few seconds' worth
        await cache.close()

    app.cleanup_ctx.append(cache_lifecycle)
    # After the cache's: starts once the store is up, stops before it is closed.
    if (reporter := reporter_for(cache)) is not None:
        app[REPORTER] = reporter
        app.cleanup_ctx.append(reporter.running)
    return cache


async def _sync_metrics_every(cache: Cache) -> None:
    """Hand this worker's counts to prometheus-client every second (see `cachekit.metrics`)."""
    from cachekit.metrics import SYNC_SECONDS  # noqa: PLC0415

    while True:
        await asyncio.sleep(SYNC_SECONDS)
        cache.metrics.sync([cache])


def answers_unsafe_methods(app: web.Application) -> bool:
    """Whether a request with an unsafe method could get a response from `app`: some route
    takes one (or any method), or a middleware or sub-app could answer it."""
    if len(app.middlewares):
        return True
    for resource in app.router.resources():
        if not isinstance(resource, web.Resource | web.StaticResource):
            return True  # a sub-app or a custom resource: assume it may
        if any(route.method not in SAFE_METHODS for route in resource):
            return True
    return False


def _tag_invalidator(request: web.Request) -> Callable[..., Awaitable[int]] | None:
    cache = request.config_dict.get(CACHE_APP_KEY)
    if cache is None or not cache.settings.enabled:
        return None
    return cache.purge_unsafe_method


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
    # The app's own mapping first: building request.config_dict costs more on every hit.
    try:
        return request.app[CACHE_APP_KEY]
    except KeyError:
        cache = request.config_dict.get(CACHE_APP_KEY)
    if cache is None:
        raise RuntimeError(
            f"@cached handler {handler_name!r} runs in an app without a cache:"
            " call cachekit.setup_cache(app) when building the app"
        )
    return cache
