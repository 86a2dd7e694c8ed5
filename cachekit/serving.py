"""The request story: policy → key → lookup → hit, stale hit, or one shared fill."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, cast

from aiohttp import hdrs, web

from cachekit import conditional, keys, policy
from cachekit.app import CACHE_APP_KEY, cache_of
from cachekit.cache import LOOKUP_FAILURES, UNKNOWN_GENERATION, Cache
from cachekit.entry import CachedResponse
from cachekit.filling import (
    COLLAPSED,
    STALE_IF_ERROR,
    STORED,
    Call,
    Job,
    emits_cache_control,
    fill,
    lookup_following_stubs,
    refresh,
)
from cachekit.flight import FillOutcome
from cachekit.handler_spec import HandlerSpec
from cachekit.responses import from_entry, mark

log = logging.getLogger("cachekit")


#: What `fresh_hit` hands over when a plain request needs the store's answer: the cache
#: and the full key it computed, so `request_handler` starts the lookup without redoing
#: either.
RoundTrip = tuple[Cache, str]


def fresh_hit(spec: HandlerSpec, request: web.Request) -> web.Response | RoundTrip | None:
    """The answer to `request` when it is a plain fresh hit in a store that answers without
    I/O (the embedded store, or the near cache in front of Redis); a `RoundTrip` when it is
    a plain request whose answer needs a Redis lookup (`request_handler` makes it); None
    otherwise.

    The hot path, as a plain function (no coroutine) with its helpers inlined: everything
    it does not decide — misses, stale entries, bypasses, request directives, conditional
    requests, key callables — `serve` decides from the start.
    """
    sync_key = spec.sync_key
    if sync_key is None or spec.unless is not None:
        return None
    try:
        cache: Cache = request.app[CACHE_APP_KEY]
    except KeyError:
        return None  # a sub-app's request: `serve` finds the cache through config_dict
    settings = cache.settings
    if not settings.enabled:
        return None
    headers = request.headers
    if (
        request.method not in policy.CACHEABLE_METHODS
        or (hdrs.AUTHORIZATION in headers and not spec.authorization_keyed)
        or hdrs.CACHE_CONTROL in headers
        or hdrs.IF_NONE_MATCH in headers
        or hdrs.IF_MODIFIED_SINCE in headers
    ):
        return None
    vary = cache.learned_vary.get(spec.name, spec.vary)
    key = keys.request_key(sync_key(request), request, vary, settings.max_key_length)
    if key in cache.flights.fills:
        return None
    now = cache.clock()
    answer = cache.store.peek(key, now)
    if answer is None:
        return cache, key
    entry = answer[0]
    if entry is None or entry.vary_stub or now >= entry.fresh_until:
        return None
    cache.counters.hits += 1
    emit = spec.emit_cache_control
    if emit is None:
        emit = settings.emit_cache_control
    return from_entry(entry, now, "hit", "HIT", emit_cache_control=emit)


def request_handler(
    spec: HandlerSpec, handler: Callable[..., Awaitable[web.StreamResponse]]
) -> Callable[..., Awaitable[web.StreamResponse]]:
    """The coroutine function `@cached` puts in place of `handler`: a fresh hit answered by
    `fresh_hit` or by one Redis lookup right here, everything else through `serve`."""

    async def handle(*args: Any, **kwargs: Any) -> web.StreamResponse:
        request = args[-1] if args and type(args[-1]) is web.Request else _find_request(args)
        hit = fresh_hit(spec, request)
        if hit is None:
            return await serve(spec, request, lambda: handler(*args, **kwargs))
        if not isinstance(hit, tuple):
            return hit
        # A plain request on Redis: one lookup decides. Awaited here rather than in a
        # coroutine of its own: one coroutine fewer per Redis hit (~0.4 µs).
        cache, key = hit
        looking = cache.start_lookup(key)
        if looking is None:
            looked_up: tuple[CachedResponse | None, int] = (None, UNKNOWN_GENERATION)
        else:
            try:
                looked_up = await looking
            except LOOKUP_FAILURES as exc:
                looked_up = cache.lookup_failed(key, exc)
            else:
                cache.breaker.record_success()
        entry = looked_up[0]
        now = cache.clock()
        if entry is not None and not entry.vary_stub and now < entry.fresh_until:
            cache.counters.hits += 1
            emit = emits_cache_control(cache, spec)
            return from_entry(entry, now, "hit", "HIT", emit_cache_control=emit)
        made = (key, looked_up)
        return await serve(spec, request, lambda: handler(*args, **kwargs), made=made)

    return handle


def _find_request(args: tuple[Any, ...]) -> web.Request:
    for arg in reversed(args):
        if isinstance(arg, web.BaseRequest):
            return cast(web.Request, arg)
        if isinstance(arg, web.View):
            return arg.request
    raise TypeError("a @cached handler takes the request (or is a web.View method)")


async def serve(
    spec: HandlerSpec,
    request: web.Request,
    call: Call,
    made: tuple[str, tuple[CachedResponse | None, int]] | None = None,
) -> web.StreamResponse:
    """Answer `request` from the cache, or run `call` once for everyone asking the same key.

    A fresh hit is answered here with as little work as possible (no job object, no extra
    coroutine for the embedded store); everything else continues in `_respond`. `made`:
    a key and the lookup `request_handler` already made for it (no fill was running then).
    """
    cache = cache_of(request, spec.name)
    settings = cache.settings
    if not settings.enabled:
        return await call()
    headers = request.headers
    method = request.method
    # The common case is decided without a call; the policy gives the reason otherwise.
    if method not in policy.CACHEABLE_METHODS or (
        not spec.authorization_keyed and "Authorization" in headers
    ):
        decision = policy.request_decision(method, "Authorization" in headers, False)
        return await _bypass(cache, call, decision.reason)
    sync_key = spec.sync_key
    if sync_key is not None and spec.unless is None:
        base = sync_key(request)
    else:
        awaited, reason = await _base_with_callables(cache, spec, request)
        if awaited is None:
            return await _bypass(cache, call, reason)
        base = awaited
    vary = cache.vary_names(spec.name, spec.vary)
    key = keys.request_key(base, request, vary, settings.max_key_length)
    honor = spec.honor_request_cache_control
    if honor if honor is not None else settings.honor_request_cache_control:
        directives = policy.request_directives(headers.get("Cache-Control"))
    else:
        directives = policy.NO_DIRECTIVES
    looked_up = None
    if made is not None and made[0] == key and directives is policy.NO_DIRECTIVES:
        looked_up = made[1]  # not a fresh hit, or `request_handler` would have answered
    elif directives is policy.NO_DIRECTIVES and key not in cache.flights.fills:
        now = cache.clock()
        looked_up = cache.store.peek(key, now)
        if looked_up is None:
            looked_up = await cache.lookup(key)
            now = cache.clock()  # the round trip took time
        entry = looked_up[0]
        if entry is not None and not entry.vary_stub and now < entry.fresh_until:
            cache.counters.hits += 1
            emit = emits_cache_control(cache, spec)
            return answer(request, entry, now, "hit", "HIT", emit_cache_control=emit)
    job = Job(cache, spec, request, call, base, key, directives)
    return await _respond(job, looked_up=looked_up)


async def _bypass(cache: Cache, call: Call, reason: str) -> web.StreamResponse:
    cache.counters.bypasses += 1
    return await run_marked(call, "BYPASS", f"fwd=bypass; detail={reason}")


async def _respond(
    job: Job,
    rerouted: bool = False,
    looked_up: tuple[CachedResponse | None, int] | None = None,
) -> web.StreamResponse:
    """Hit, stale hit, or join/start the one fill of `job.key`. `looked_up` is the lookup
    `serve` already made (then no fill was running for the key when it started)."""
    cache, request, call = job.cache, job.request, job.call
    directives = job.directives
    if looked_up is None:
        running = cache.flights.fills.get(job.key)
        if running is not None and not directives.no_store:
            return await _join(job, running, rerouted)
    if looked_up is not None and (looked_up[0] is None or not looked_up[0].vary_stub):
        entry, generation = looked_up
    else:
        entry, generation = await lookup_following_stubs(job)
    now = cache.clock()
    if entry is not None and not directives.no_cache:
        if entry.is_fresh(now) and (
            directives.max_age is None or entry.age(now) <= directives.max_age
        ):
            cache.counters.hits += 1
            return _answer_job(job, entry, "hit", "HIT")
        if entry.is_servable_stale(now) and directives.max_age is None:
            cache.counters.stale_hits += 1
            cache.flights.start_refresh(job.key, refresh(job, generation))
            return _answer_job(job, entry, "hit; fwd=stale", "STALE")
    cache.counters.misses += 1
    if directives.only_if_cached:
        return _marked(web.Response(status=504), "MISS", "fwd=miss; detail=only-if-cached")
    if request.method == "HEAD" or directives.no_store:
        # A handler may answer HEAD with an empty body; that must never become the GET entry.
        reason = "head" if request.method == "HEAD" else "no-store"
        return await run_marked(call, "MISS", f"fwd=miss; detail={reason}")
    fallback = entry if entry is not None and entry.can_replace_error(now) else None
    running = cache.flights.fills.get(job.key)
    if running is not None:
        return await _join(job, running, rerouted)
    task = cache.flights.start_fill(job.key, fill(job, generation, fallback))
    # shield: a client that goes away must not cancel the fill that others wait for.
    return _answer_initiator(job, await asyncio.shield(task))


async def _base_with_callables(
    cache: Cache, spec: HandlerSpec, request: web.Request
) -> tuple[str | None, str]:
    """The base key when `unless` or a key callable must run: (key, "") or (None, reason)."""
    try:
        if spec.unless is not None:
            verdict = spec.unless(request)
            if not isinstance(verdict, bool):
                verdict = await verdict
            if verdict:
                return None, "unless"
        return await spec.base_key(request), ""
    except Exception:
        cache.counters.errors += 1
        log.exception("cache key or `unless` of %s failed; serving uncached", spec.name)
        return None, "key-error"


def answer(
    request: web.Request,
    entry: CachedResponse,
    now: float,
    status: str,
    x_cache: str,
    *,
    emit_cache_control: bool,
) -> web.Response:
    """A response from a stored entry, as a 304 when the request's validators match."""
    headers = request.headers
    matched = False
    if hdrs.IF_NONE_MATCH in headers or hdrs.IF_MODIFIED_SINCE in headers:
        matched = conditional.not_modified(
            entry.status,
            entry.etag,
            entry.headers,
            headers.get("If-None-Match"),
            headers.get("If-Modified-Since"),
        )
    return from_entry(
        entry, now, status, x_cache, not_modified=matched, emit_cache_control=emit_cache_control
    )


async def run_marked(call: Call, x_cache: str, status: str) -> web.StreamResponse:
    """Run the handler and label its response (or raised HTTPException) as not cached."""
    try:
        response = await call()
    except web.HTTPException as exc:
        mark(exc.headers, x_cache, status)
        raise
    return _marked(response, x_cache, status)


def _marked(response: web.StreamResponse, x_cache: str, status: str) -> web.StreamResponse:
    if not response.prepared:
        mark(response, x_cache, status)
    return response


def _answer_job(job: Job, entry: CachedResponse, status: str, x_cache: str) -> web.Response:
    return answer(
        job.request,
        entry,
        job.cache.clock(),
        status,
        x_cache,
        emit_cache_control=job.emit_cache_control,
    )


def _answer_initiator(job: Job, outcome: FillOutcome) -> web.StreamResponse:
    error, response, shared = outcome.error, outcome.response, outcome.shared
    headers = job.request.headers
    conditional = "If-None-Match" in headers or "If-Modified-Since" in headers
    # Answered from the entry: when the fill produced no response of its own (another
    # process filled it, or a stale copy replaced an error), and when a stored answer must
    # become a 304 or came from a raised HTTPException (a new response carries our headers).
    if shared is not None and (
        (error is None and response is None)
        or (
            outcome.status == STORED
            and (isinstance(error, web.HTTPException) or (response is not None and conditional))
        )
    ):
        return _answer_job(job, shared, outcome.status, outcome.x_cache)
    if error is not None:
        if isinstance(error, web.HTTPException):
            mark(error.headers, outcome.x_cache, outcome.status)
        raise error
    assert response is not None  # a fill yields a response, an error or an entry
    return _marked(response, outcome.x_cache, outcome.status)


async def _join(job: Job, running: asyncio.Task[FillOutcome], rerouted: bool) -> web.StreamResponse:
    job.cache.counters.coalesced += 1
    outcome = await asyncio.shield(running)
    shared = outcome.shared
    if shared is not None:
        own_key = job.key_for(outcome.vary)
        if own_key == outcome.key:
            if outcome.x_cache == "STALE":
                return _answer_job(job, shared, STALE_IF_ERROR, "STALE")
            return _answer_job(job, shared, COLLAPSED, "MISS")
        if not rerouted:
            # The fill learned that responses vary on headers this request sends
            # differently: go through the cache again for this request's own variant, so
            # its peers still share one fill.
            job.key = own_key
            return await _respond(job, rerouted=True)
    if outcome.error is not None and not isinstance(outcome.error, web.HTTPException):
        raise outcome.error
    # Not shareable (a cookie, a private or streamed response): this request runs its own.
    return await run_marked(job.call, "MISS", "fwd=miss; detail=uncollapsible")
