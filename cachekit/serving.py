"""The request story, told once: admit → key → join a running fill | peek or look up →
verdict → answer, serve stale while refreshing, or fill.

Every decision is a call into `policy` (admit, freshness) or `keys`; this module only
carries them out, in order. Filling and refreshing live in `filling`, storing in `storing`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, cast

from aiohttp import hdrs, web

from cachekit import keys, policy
from cachekit.aiohttp_internals import app_value
from cachekit.answers import answer_from, answer_initiator, answer_job, bypass, unstored_miss
from cachekit.app import CACHE_APP_KEY, cache_of
from cachekit.cache import Cache
from cachekit.entry import CachedResponse
from cachekit.filling import COLLAPSED, STALE_IF_ERROR, fill, follow_vary_stub, refresh
from cachekit.flight import FillOutcome
from cachekit.handler_calls import (
    call_with,
    called_as,
    find_request,
    handed,
    handed_later,
    job_for,
)
from cachekit.handler_spec import HandlerSpec
from cachekit.handler_state import HandlerState
from cachekit.storing import Call, Job

log = logging.getLogger("cachekit")

Handler = Callable[..., Awaitable[web.StreamResponse]]
_FRESH, _STALE = policy.Freshness.FRESH, policy.Freshness.STALE


# One page for the whole story, in order (ARCHITECTURE.md): its length is the story's.
def request_handler(spec: HandlerSpec, handler: Handler) -> Handler:  # noqa: PLR0915
    """The coroutine function `@cached` puts in place of `handler`."""

    async def handle(*args: Any, **kwargs: Any) -> web.StreamResponse:  # noqa: PLR0915
        request = args[-1] if args and type(args[-1]) is web.Request else find_request(args)
        cache = app_value(request, CACHE_APP_KEY) or cache_of(request, spec.name)
        if not cache.enabled:
            return await handler(*args, **kwargs)
        # 1. Admit: may this request use the cache at all?
        admitted = policy.admit(
            request.method, hdrs.AUTHORIZATION in request.headers, spec.authorization_keyed
        )
        if not admitted.allowed:
            return await bypass(cache, spec, called_as(handler, args, kwargs), admitted.reason)
        state = cache.resolved(spec.name) or cache.handler(spec)
        # 2. Key: from what aiohttp hands the handler (see `keys`); on the default key, less
        # the ignored query parameters, which the handler is then never handed (`handed`).
        if (sync_key := state.sync_key) is not None and spec.unless is None:
            base = sync_key(request)
        else:
            computed, reason = await _base_with_callables(cache, spec, state, request)
            if computed is None:
                return await bypass(cache, spec, called_as(handler, args, kwargs), reason)
            base = computed
        directives = (
            policy.request_directives(request.headers.get(hdrs.CACHE_CONTROL))
            if state.honor_request_cache_control
            else policy.NO_DIRECTIVES
        )
        key = keys.request_key(base, request, vary := state.vary, cache.max_key_length)
        rerouted = False
        while True:
            # 3. A fill of this key is running in this process: share its answer.
            running = None if directives.no_store else cache.running_fill(key)
            if running is not None:
                joined = await _join(
                    running,
                    cache=cache,
                    spec=spec,
                    request=request,
                    call=handed_later(
                        state,
                        request,
                        called_as(handler, args, kwargs),
                        partial(call_with, handler, args, kwargs),
                    ),
                    base=base,
                    rerouted=rerouted,
                )
                if isinstance(joined, tuple):  # the fill found this URL varies: our variant
                    (key, vary), rerouted = joined, True
                    continue
                return joined
            # 4. Peek (no I/O), else look up (following a Vary stub).
            now = cache.clock()
            answer = cache.store.peek(key, now)
            if answer is None:
                answer = await cache.fetch(key, spec.name)
                now = cache.clock()
            entry, generation = answer
            if entry is not None and entry.vary_stub:
                key, vary, (entry, generation) = await follow_vary_stub(
                    cache, spec, request, base=base, key=key, answer=answer
                )
                now = cache.clock()
            # 5. Verdict, and the answer it calls for.
            verdict = policy.freshness(entry, now, directives)
            if verdict is _FRESH:
                state.hits += 1  # the total is the handlers' sum (`Cache.counters`)
                assert entry is not None
                return answer_from(request, entry, now, "hit", "HIT", state.emit_cache_control)
            # The handler's request for this key (`handed`), from here on the job's.
            asks = partial(call_with, handler, args, kwargs)
            call = called_as(handler, args, kwargs)  # (made off the hit path: a hit never calls)
            handed_to = handed(state, request, call, asks)
            if handed_to is None:  # aiohttp cannot clone it: served as sent, nothing stored
                return await unstored_miss(cache, spec, call, "uncloneable")
            request_handed, call = handed_to
            job = job_for(
                Job(cache, spec, request_handed, call, base, key, directives, generation, vary),
                asks,
                entry,
            )
            if verdict is _STALE:
                cache.count("stale_hits", spec, "stale")
                cache.start_refresh(key, refresh(job))
                # `freshness` says STALE only of an entry.
                return answer_job(job, cast(CachedResponse, entry), "hit; fwd=stale", "STALE")
            cache.count("misses")
            if directives.only_if_cached:
                return await unstored_miss(cache, spec, None, "only-if-cached")
            if request.method == "HEAD" or directives.no_store:
                # A handler may answer HEAD with an empty body; it must never become the GET entry.
                reason = "head" if request.method == "HEAD" else "no-store"
                return await unstored_miss(cache, spec, call, reason)
            if cache.running_fill(key) is not None:
                continue  # one started while we looked up: join it
            # 6. Fill: this request runs the handler for everyone asking the same key.
            fallback = entry if entry is not None and entry.can_replace_error(now) else None
            task = cache.start_fill(key, fill(job, fallback))
            # shield: a client that goes away must not cancel the fill that others wait for.
            return answer_initiator(job, await asyncio.shield(task))

    return handle


async def _base_with_callables(
    cache: Cache, spec: HandlerSpec, state: HandlerState, request: web.Request
) -> tuple[str | None, str]:
    """The base key when `unless` or a key callable must run: (key, "") or (None, reason).
    `unless` sees the request as sent (a bypassed request reaches the handler as sent)."""
    try:
        if spec.unless is not None:
            verdict = spec.unless(request)
            if not isinstance(verdict, bool):
                verdict = await verdict
            if verdict:
                return None, "unless"
        sync_key = state.sync_key
        return (sync_key(request) if sync_key is not None else await spec.base_key(request)), ""
    except Exception:
        cache.count("errors")
        log.exception("cache key or `unless` of %s failed; serving uncached", spec.name)
        return None, "key-error"


async def _join(
    running: asyncio.Task[FillOutcome],
    *,
    cache: Cache,
    spec: HandlerSpec,
    request: web.Request,
    call: Call,
    base: str,
    rerouted: bool,
) -> web.StreamResponse | tuple[str, tuple[str, ...]]:
    """The answer of a fill this request joined; or the key (and Vary names) to retry with,
    when the fill found that this URL's responses vary on headers this request sends
    differently (its peers then still share one fill)."""
    cache.count("coalesced")
    outcome = await asyncio.shield(running)
    shared = outcome.shared
    if shared is not None:
        own_key = keys.request_key(base, request, outcome.vary, cache.max_key_length)
        if own_key == outcome.key:
            cache.tally(spec, "stale" if outcome.x_cache == "STALE" else "collapsed")
            emit = cache.emits_cache_control(spec)
            status, x_cache = (
                (STALE_IF_ERROR, "STALE") if outcome.x_cache == "STALE" else (COLLAPSED, "MISS")
            )
            return answer_from(
                request, shared, cache.clock(), status, x_cache, emit_cache_control=emit
            )
        if not rerouted:
            return own_key, outcome.vary
    if outcome.error is not None and not isinstance(outcome.error, web.HTTPException):
        raise outcome.error
    # Not shareable (a cookie, a private or streamed response): this request runs its own.
    return await unstored_miss(cache, spec, call, "uncollapsible")
