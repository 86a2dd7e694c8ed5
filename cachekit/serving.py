"""The request story: policy → key → lookup → hit, stale hit, or one shared fill."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from cachekit import conditional, policy
from cachekit.app import cache_of
from cachekit.cache import Cache
from cachekit.entry import CachedResponse
from cachekit.filling import (
    STALE_IF_ERROR,
    STORED,
    Call,
    Job,
    fill,
    lookup_following_stubs,
    refresh,
)
from cachekit.flight import FillOutcome
from cachekit.handler_spec import HandlerSpec
from cachekit.responses import CACHE_TAG_HEADER, from_entry, mark

log = logging.getLogger("cachekit")


async def serve(spec: HandlerSpec, request: web.Request, call: Call) -> web.StreamResponse:
    """Answer `request` from the cache, or run `call` once for everyone asking the same key."""
    cache = cache_of(request, spec.name)
    if not cache.settings.enabled:
        return await call()
    job = _prepare(cache, spec, request, call)
    if job is None:
        job = await _prepare_with_callables(cache, spec, request, call)
    if isinstance(job, str):
        cache.counters.bypasses += 1
        return await run_marked(call, "BYPASS", f"fwd=bypass; detail={job}")
    return await _respond(job)


async def _respond(job: Job, rerouted: bool = False) -> web.StreamResponse:
    """Hit, stale hit, or join/start the one fill of `job.key`."""
    cache, request, call = job.cache, job.request, job.call
    directives = job.directives
    running = cache.flights.fills.get(job.key)
    if running is not None and not directives.no_store:
        return await _join(job, running, rerouted)
    memory = cache.memory
    if memory is not None:  # no I/O, no Vary stubs: skip the coroutine
        entry, generation = memory.get_now(job.key), 0
    else:
        entry, generation = await lookup_following_stubs(job)
    now = cache.clock()
    if entry is not None and not directives.no_cache:
        if entry.is_fresh(now) and (
            directives.max_age is None or entry.age(now) <= directives.max_age
        ):
            cache.counters.hits += 1
            return answer(job, entry, now, "hit", "HIT")
        if entry.is_servable_stale(now) and directives.max_age is None:
            cache.counters.stale_hits += 1
            cache.flights.start_refresh(job.key, refresh(job, generation))
            return answer(job, entry, now, "hit; fwd=stale", "STALE")
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


def _prepare(cache: Cache, spec: HandlerSpec, request: web.Request, call: Call) -> Job | str | None:
    """The job for this request, the reason it bypasses the cache, or None when a callable
    (`unless`, a key function) must be awaited first."""
    decision = policy.request_decision(
        request.method, "Authorization" in request.headers, spec.authorization_keyed
    )
    if not decision.allowed:
        return decision.reason
    base = spec.base_key_now(request) if spec.unless is None else None
    if base is None:
        return None
    return _job(cache, spec, request, call, base)


async def _prepare_with_callables(
    cache: Cache, spec: HandlerSpec, request: web.Request, call: Call
) -> Job | str:
    try:
        if spec.unless is not None:
            verdict = spec.unless(request)
            if not isinstance(verdict, bool):
                verdict = await verdict
            if verdict:
                return "unless"
        base = await spec.base_key(request)
    except Exception:
        cache.counters.errors += 1
        log.exception("cache key or `unless` of %s failed; serving uncached", spec.name)
        return "key-error"
    return _job(cache, spec, request, call, base)


def _job(cache: Cache, spec: HandlerSpec, request: web.Request, call: Call, base: str) -> Job:
    honor = spec.honor_request_cache_control
    if honor if honor is not None else cache.settings.honor_request_cache_control:
        directives = policy.request_directives(request.headers.get("Cache-Control"))
    else:
        directives = policy.NO_DIRECTIVES
    job = Job(cache, spec, request, call, base, "", directives)
    job.key = job.key_for(cache.vary_names(spec.name, spec.vary))
    return job


def answer(job: Job, entry: CachedResponse, now: float, status: str, x_cache: str) -> web.Response:
    """A response from a stored entry, as a 304 when the request's validators match."""
    headers = job.request.headers
    if_none_match = headers.get("If-None-Match")
    if_modified_since = headers.get("If-Modified-Since")
    matched = (if_none_match is not None or if_modified_since is not None) and (
        conditional.not_modified(
            entry.status, entry.etag, entry.headers, if_none_match, if_modified_since
        )
    )
    return from_entry(
        entry,
        now,
        status,
        x_cache,
        not_modified=matched,
        emit_cache_control=job.emit_cache_control,
    )


async def run_marked(call: Call, x_cache: str, status: str) -> web.StreamResponse:
    """Run the handler and label its response (or raised HTTPException) as not cached."""
    try:
        response = await call()
    except web.HTTPException as exc:
        mark(exc.headers, x_cache, status)
        exc.headers.popall(CACHE_TAG_HEADER, None)
        raise
    return _marked(response, x_cache, status)


def _marked(response: web.StreamResponse, x_cache: str, status: str) -> web.StreamResponse:
    if not response.prepared:
        mark(response, x_cache, status)
        response.headers.popall(CACHE_TAG_HEADER, None)
    return response


def _answer_initiator(job: Job, outcome: FillOutcome) -> web.StreamResponse:
    now = job.cache.clock()
    if outcome.error is not None:
        if isinstance(outcome.error, web.HTTPException):
            if outcome.shared is not None and outcome.status == STORED:
                return answer(job, outcome.shared, now, outcome.status, outcome.x_cache)
            mark(outcome.error.headers, outcome.x_cache, outcome.status)
            outcome.error.headers.popall(CACHE_TAG_HEADER, None)
        raise outcome.error
    if outcome.response is not None:
        stored = outcome.shared is not None and outcome.status == STORED
        if stored and (
            "If-None-Match" in job.request.headers or "If-Modified-Since" in job.request.headers
        ):
            assert outcome.shared is not None
            return answer(job, outcome.shared, now, outcome.status, outcome.x_cache)
        return _marked(outcome.response, outcome.x_cache, outcome.status)
    assert outcome.shared is not None  # a fill yields a response, an error or an entry
    return answer(job, outcome.shared, now, outcome.status, outcome.x_cache)


async def _join(job: Job, running: asyncio.Task[FillOutcome], rerouted: bool) -> web.StreamResponse:
    job.cache.counters.coalesced += 1
    outcome = await asyncio.shield(running)
    shared = outcome.shared
    if shared is not None:
        own_key = job.key_for(outcome.vary)
        if own_key == outcome.key:
            now = job.cache.clock()
            if outcome.x_cache == "STALE":
                return answer(job, shared, now, STALE_IF_ERROR, "STALE")
            return answer(job, shared, now, "fwd=miss; collapsed", "MISS")
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
