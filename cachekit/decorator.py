"""`@cached`: the glue that runs policy → key → store → response around one handler."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar, cast

from aiohttp import web

from cachekit import policy
from cachekit.app import cache_of
from cachekit.cache import Cache
from cachekit.handler_spec import HandlerSpec, KeySpec, TagSpec
from cachekit.responses import from_entry, header_lines, mark, storable_body, to_entry

log = logging.getLogger("cachekit")

Handler = TypeVar("Handler", bound=Callable[..., Awaitable[web.StreamResponse]])
Call = Callable[[], Awaitable[web.StreamResponse]]


def cached(
    ttl: float | None = None,
    *,
    key: KeySpec = None,
    name: str | None = None,
    tags: TagSpec = (),
    vary: Iterable[str] = (),
    statuses: Iterable[int] | None = None,
    unless: Callable[[web.Request], bool | Awaitable[bool]] | None = None,
) -> Callable[[Handler], Handler]:
    """Cache the responses of an aiohttp handler (or a `web.View` method).

    `ttl` seconds of freshness (operator overrides and response headers are considered as
    documented); `key` a template like `"product:{match_info[id]}"` or a (sync or async)
    callable of the request; `tags` strings or a callable returning them; `vary` request
    headers that are part of the key; `statuses` the cacheable status codes; `unless` a
    predicate of the request that bypasses the cache when true.
    """

    def decorate(handler: Handler) -> Handler:
        spec = HandlerSpec.build(
            handler,
            ttl=ttl,
            key=key,
            name=name,
            tags=tags,
            vary=vary,
            statuses=statuses,
            unless=unless,
        )

        @functools.wraps(handler)
        async def wrapper(*args: Any, **kwargs: Any) -> web.StreamResponse:
            request = _find_request(args)
            return await serve(spec, request, lambda: handler(*args, **kwargs))

        wrapper.__cachekit_spec__ = spec  # type: ignore[attr-defined]
        return cast(Handler, wrapper)

    return decorate


def _find_request(args: tuple[Any, ...]) -> web.Request:
    for arg in reversed(args):
        if isinstance(arg, web.BaseRequest):
            return cast(web.Request, arg)
        if isinstance(arg, web.View):
            return arg.request
    raise TypeError("@cached handlers take the request (or are web.View methods)")


async def serve(spec: HandlerSpec, request: web.Request, call: Call) -> web.StreamResponse:
    """Answer `request` from the cache, or run `call` and perhaps store its response."""
    cache = cache_of(request, spec.name)
    if not cache.settings.enabled:
        return await call()
    reason = await _bypass_reason(spec, request)
    key = None
    if reason is None:
        try:
            key = await spec.key_for(request, cache.settings.max_key_length)
        except Exception:
            cache.counters.errors += 1
            log.exception("cache key of %s failed; serving uncached", spec.name)
            reason = "key-error"
    if key is None:
        cache.counters.bypasses += 1
        return await _run_marked(call, "BYPASS", f"fwd=bypass; detail={reason}")
    now = cache.clock()
    entry, generation = await cache.lookup(key)
    if entry is not None and entry.is_fresh(now):
        cache.counters.hits += 1
        return from_entry(entry, now)
    cache.counters.misses += 1
    if request.method == "HEAD":
        # A handler may answer HEAD with an empty body; that must never become the GET entry.
        return await _run_marked(call, "MISS", "fwd=miss; detail=head")
    return await _fill(cache, spec=spec, request=request, call=call, key=key, generation=generation)


async def _bypass_reason(spec: HandlerSpec, request: web.Request) -> str | None:
    decision = policy.request_decision(
        request.method, "Authorization" in request.headers, spec.authorization_keyed
    )
    if not decision.allowed:
        return decision.reason
    if spec.unless is not None:
        verdict = spec.unless(request)
        if inspect.isawaitable(verdict):
            verdict = await verdict
        if verdict:
            return "unless"
    return None


async def _run_marked(call: Call, x_cache: str, status: str) -> web.StreamResponse:
    try:
        response = await call()
    except web.HTTPException as exc:
        mark(exc.headers, x_cache, status)
        raise
    if not response.prepared:
        mark(response, x_cache, status)
    return response


async def _fill(
    cache: Cache,
    *,
    spec: HandlerSpec,
    request: web.Request,
    call: Call,
    key: str,
    generation: int,
) -> web.StreamResponse:
    try:
        response = await call()
    except web.HTTPException as exc:
        outcome = await _store(
            cache, spec=spec, request=request, key=key, generation=generation, response=exc
        )
        mark(exc.headers, "MISS", outcome)
        raise
    outcome = await _store(
        cache, spec=spec, request=request, key=key, generation=generation, response=response
    )
    if not response.prepared:
        mark(response, "MISS", outcome)
    return response


async def _store(
    cache: Cache,
    *,
    spec: HandlerSpec,
    request: web.Request,
    key: str,
    generation: int,
    response: web.StreamResponse,
) -> str:
    """Store the response if the policy allows; returns the `Cache-Status` detail."""
    body = storable_body(response)
    if body is None:
        return "fwd=miss; detail=streaming"
    lines = header_lines(response)
    decision = policy.storable_decision(
        response.status,
        lines,
        statuses=spec.statuses,
        body_size=len(body),
        max_entry_bytes=cache.settings.max_entry_bytes,
        keyed_headers=spec.keyed_headers,
    )
    if not decision.allowed:
        return f"fwd=miss; detail={decision.reason}"
    now = cache.clock()
    ttl = policy.resolve_ttl(
        cache.settings.ttl_override(spec.name),
        spec.ttl,
        policy.response_ttl(lines, now),
        cache.settings.default_ttl,
    )
    if ttl <= 0:
        return "fwd=miss; detail=ttl-zero"
    try:
        tags = cache.tag_names(await spec.tags_for(request))
    except Exception:
        cache.counters.errors += 1
        log.exception("cache tags of %s failed; not storing", spec.name)
        return "fwd=miss; detail=tag-error"
    entry = to_entry(
        response.status,
        lines,
        body,
        stored_at=now,
        ttl=ttl,
        grace=0.0,
        stale_if_error=0.0,
        tags=tags,
        generation=generation,
        compress=isinstance(response, web.Response) and bool(response.compression),
    )
    if await cache.save(key, entry):
        return "fwd=miss; stored"
    return "fwd=miss; detail=not-stored"
