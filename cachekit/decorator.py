"""`@cached`: wraps one aiohttp handler (or `web.View` method) in the cache's request story."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar, cast

from aiohttp import web

from cachekit.handler_spec import HandlerSpec, KeySpec, TagSpec
from cachekit.invalidation import SPEC_ATTRIBUTE
from cachekit.serving import request_handler

Handler = TypeVar("Handler", bound=Callable[..., Awaitable[web.StreamResponse]])


def cached(
    ttl: float | None = None,
    *,
    key: KeySpec = None,
    name: str | None = None,
    tags: TagSpec = (),
    vary: Iterable[str] = (),
    statuses: Iterable[int] | None = None,
    unless: Callable[[web.Request], bool | Awaitable[bool]] | None = None,
    stale_ttl: float | None = None,
    stale_if_error: float | None = None,
    emit_cache_control: bool | None = None,
    honor_request_cache_control: bool | None = None,
    compress: str | Iterable[str] | None = None,
) -> Callable[[Handler], Handler]:
    """Cache the responses of an aiohttp handler (or a `web.View` method).

    `ttl`: seconds of freshness (an operator override in settings wins; without either, the
    response's `s-maxage`/`max-age`, then `default_ttl`). `key`: a template such as
    `"product:{match_info[id]}"` or a sync/async callable of the request. `name`: the name
    used by settings and stats. `tags`: strings, or a callable of the request returning them.
    `vary`: request headers that are part of the key. `statuses`: cacheable status codes.
    `unless`: a predicate of the request; when true the cache is bypassed. `stale_ttl`:
    seconds a stale copy is served while one refresh runs. `stale_if_error`: seconds past
    freshness a stale copy replaces an error. `emit_cache_control` and
    `honor_request_cache_control` override the settings of the same names for this handler.
    `compress`: the content codings to store responses in (`"br,gzip"`, `[]` for none),
    instead of the `compress` setting.
    """

    def decorate(handler: Handler) -> Handler:
        spec = HandlerSpec.build(
            handler,
            ttl=ttl,
            stale_ttl=stale_ttl,
            stale_if_error=stale_if_error,
            key=key,
            name=name,
            tags=tags,
            vary=vary,
            statuses=statuses,
            unless=unless,
            emit_cache_control=emit_cache_control,
            honor_request_cache_control=honor_request_cache_control,
            compress=compress,
        )

        wrapper = functools.wraps(handler)(request_handler(spec, handler))
        setattr(wrapper, SPEC_ATTRIBUTE, spec)
        return cast(Handler, wrapper)

    return decorate
