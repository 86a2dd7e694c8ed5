"""`@cached`: wraps one aiohttp handler (or `web.View` method) in the cache's request story."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar, cast

from aiohttp import web

from cachekit.handler_spec import HandlerSpec, KeySpec, TagSpec
from cachekit.invalidation import SPEC_ATTRIBUTE
from cachekit.serving import fresh_hit, remote_hit, serve

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
        )

        @functools.wraps(handler)
        async def wrapper(*args: Any, **kwargs: Any) -> web.StreamResponse:
            request = args[-1] if args and type(args[-1]) is web.Request else _find_request(args)
            hit = fresh_hit(spec, request)
            if hit is None:
                return await serve(spec, request, lambda: handler(*args, **kwargs))
            if isinstance(hit, tuple):  # a plain request on Redis: one lookup decides
                return await remote_hit(spec, request, hit, lambda: handler(*args, **kwargs))
            return hit

        setattr(wrapper, SPEC_ATTRIBUTE, spec)
        return cast(Handler, wrapper)

    return decorate


def _find_request(args: tuple[Any, ...]) -> web.Request:
    for arg in reversed(args):
        if isinstance(arg, web.BaseRequest):
            return cast(web.Request, arg)
        if isinstance(arg, web.View):
            return arg.request
    raise TypeError("a @cached handler takes the request (or is a web.View method)")
