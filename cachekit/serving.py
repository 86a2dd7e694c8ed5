"""The request story: policy → key → flight and store → response."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from aiohttp import web

from cachekit import policy
from cachekit.app import cache_of
from cachekit.cache import UNKNOWN_GENERATION, Cache
from cachekit.entry import CachedResponse
from cachekit.flight import FillOutcome
from cachekit.guard import RateLimitedLog
from cachekit.handler_spec import HandlerSpec
from cachekit.responses import from_entry, header_lines, mark, storable_body, to_entry

log = logging.getLogger("cachekit")
_refresh_log = RateLimitedLog()

Call = Callable[[], Awaitable[web.StreamResponse]]
# Reasons a response was not stored that still allow handing it to collapsed requests.
SHAREABLE_REASONS: Final = frozenset({"status", "ttl-zero", "too-large", "not-stored"})
STALE_IF_ERROR: Final = "hit; fwd=stale; detail=stale-if-error"


@dataclass(slots=True)
class Job:
    """One request on its way through the cache."""

    cache: Cache
    spec: HandlerSpec
    request: web.Request
    call: Call
    key: str


async def serve(spec: HandlerSpec, request: web.Request, call: Call) -> web.StreamResponse:
    """Answer `request` from the cache, or run `call` once for everyone asking the same key."""
    cache = cache_of(request, spec.name)
    if not cache.settings.enabled:
        return await call()
    key, reason = await _key_or_bypass_reason(cache, spec, request)
    if key is None:
        cache.counters.bypasses += 1
        return await run_marked(call, "BYPASS", f"fwd=bypass; detail={reason}")
    job = Job(cache, spec, request, call, key)
    running = cache.flights.fills.get(key)
    if running is not None:
        return await _join(job, running)
    entry, generation = await cache.lookup(key)
    now = cache.clock()
    if entry is not None:
        if entry.is_fresh(now):
            cache.counters.hits += 1
            return from_entry(entry, now, "hit", "HIT")
        if entry.is_servable_stale(now):
            cache.counters.stale_hits += 1
            cache.flights.start_refresh(key, _refresh(job, generation))
            return from_entry(entry, now, "hit; fwd=stale", "STALE")
    cache.counters.misses += 1
    if request.method == "HEAD":
        # A handler may answer HEAD with an empty body; that must never become the GET entry.
        return await run_marked(call, "MISS", "fwd=miss; detail=head")
    fallback = entry if entry is not None and entry.can_replace_error(now) else None
    running = cache.flights.fills.get(key)
    if running is not None:
        return await _join(job, running)
    task = cache.flights.start_fill(key, _fill(job, generation, fallback))
    # shield: a client that goes away must not cancel the fill that others wait for.
    return _answer_initiator(cache, await asyncio.shield(task))


async def _key_or_bypass_reason(
    cache: Cache, spec: HandlerSpec, request: web.Request
) -> tuple[str | None, str]:
    decision = policy.request_decision(
        request.method, "Authorization" in request.headers, spec.authorization_keyed
    )
    if not decision.allowed:
        return None, decision.reason
    try:
        if spec.unless is not None:
            verdict = spec.unless(request)
            if not isinstance(verdict, bool):
                verdict = await verdict
            if verdict:
                return None, "unless"
        return await spec.key_for(request, cache.settings.max_key_length), ""
    except Exception:
        cache.counters.errors += 1
        log.exception("cache key or `unless` of %s failed; serving uncached", spec.name)
        return None, "key-error"


async def run_marked(call: Call, x_cache: str, status: str) -> web.StreamResponse:
    """Run the handler and label its response (or raised HTTPException) as not cached."""
    try:
        response = await call()
    except web.HTTPException as exc:
        mark(exc.headers, x_cache, status)
        raise
    if not response.prepared:
        mark(response, x_cache, status)
    return response


def _answer_initiator(cache: Cache, outcome: FillOutcome) -> web.StreamResponse:
    if outcome.error is not None:
        if isinstance(outcome.error, web.HTTPException):
            mark(outcome.error.headers, outcome.x_cache, outcome.status)
        raise outcome.error
    if outcome.response is not None:
        if not outcome.response.prepared:
            mark(outcome.response, outcome.x_cache, outcome.status)
        return outcome.response
    assert outcome.shared is not None  # a fill always yields a response, an error or an entry
    return from_entry(outcome.shared, cache.clock(), outcome.status, outcome.x_cache)


async def _join(job: Job, running: asyncio.Task[FillOutcome]) -> web.StreamResponse:
    job.cache.counters.coalesced += 1
    outcome = await asyncio.shield(running)
    if outcome.shared is not None:
        if outcome.x_cache == "STALE":
            return from_entry(outcome.shared, job.cache.clock(), STALE_IF_ERROR, "STALE")
        return from_entry(outcome.shared, job.cache.clock(), "fwd=miss; collapsed", "MISS")
    if outcome.error is not None and not isinstance(outcome.error, web.HTTPException):
        raise outcome.error
    # Not shareable (a cookie, a private or streamed response): this request runs its own.
    return await run_marked(job.call, "MISS", "fwd=miss; detail=uncollapsible")


async def _fill(job: Job, generation: int, fallback: CachedResponse | None) -> FillOutcome:
    """The one fill of a key: take the cross-process lock, or wait for its holder's entry."""
    cache = job.cache
    token = secrets.token_hex(16)
    locked = await cache.try_lock(job.key, token) if _lockable(cache, generation) else None
    if locked is False:
        entry = await cache.wait_for_entry(job.key)
        if entry is not None:
            return FillOutcome(None, None, entry, "fwd=miss; collapsed", "MISS")
        generation = UNKNOWN_GENERATION  # the holder is stuck: serve, but do not store
    try:
        if locked:
            # The previous holder may have stored the entry just before we got the lock.
            entry, _ = await cache.lookup(job.key)
            if entry is not None and entry.is_fresh(cache.clock()):
                return FillOutcome(None, None, entry, "fwd=miss; collapsed", "MISS")
        return await _run_and_store(job, generation, fallback)
    finally:
        if locked:
            await cache.unlock(job.key, token)


def _lockable(cache: Cache, generation: int) -> bool:
    return cache.store.remote and generation != UNKNOWN_GENERATION


async def _run_and_store(job: Job, generation: int, fallback: CachedResponse | None) -> FillOutcome:
    error: BaseException | None = None
    try:
        response: web.StreamResponse = await job.call()
    except web.HTTPException as exc:
        response = error = exc
    except Exception as exc:
        if fallback is not None:
            return _stale_instead(job.cache, fallback)
        return FillOutcome(None, exc, None, "fwd=miss", "MISS")
    if response.status >= 500 and fallback is not None:
        return _stale_instead(job.cache, fallback)
    status, shared = await store_response(job, generation, response)
    return FillOutcome(None if error else response, error, shared, status, "MISS")


def _stale_instead(cache: Cache, fallback: CachedResponse) -> FillOutcome:
    cache.counters.stale_if_error += 1
    return FillOutcome(None, None, fallback, STALE_IF_ERROR, "STALE")


async def _refresh(job: Job, generation: int) -> None:
    """Background revalidation of a stale entry; at most one per key across processes."""
    cache = job.cache
    token = secrets.token_hex(16)
    locked = await cache.try_lock(job.key, token) if _lockable(cache, generation) else None
    if locked is False:
        return
    try:
        if locked:
            entry, _ = await cache.lookup(job.key)
            if entry is not None and entry.is_fresh(cache.clock()):
                return
        cache.counters.refreshes += 1
        try:
            response: web.StreamResponse = await job.call()
        except web.HTTPException as exc:
            response = exc
        if response.status >= 500:
            raise RuntimeError(f"refresh answered {response.status}")
        await store_response(job, generation, response)
    except Exception as exc:
        cache.counters.refresh_errors += 1
        _refresh_log.warning("background refresh of %s failed: %r", job.spec.name, exc)
    finally:
        if locked:
            await cache.unlock(job.key, token)


async def store_response(
    job: Job, generation: int, response: web.StreamResponse
) -> tuple[str, CachedResponse | None]:
    """Store the response if policy allows. Returns the `Cache-Status` detail and the entry
    that collapsed requests may share (None when they must run the handler themselves)."""
    cache, spec = job.cache, job.spec
    body = storable_body(response)
    if body is None:
        return "fwd=miss; detail=streaming", None
    lines = header_lines(response)
    decision = policy.storable_decision(
        response.status,
        lines,
        statuses=spec.statuses,
        body_size=len(body),
        max_entry_bytes=cache.settings.max_entry_bytes,
        keyed_headers=spec.keyed_headers,
    )
    now = cache.clock()
    settings = cache.settings
    ttl = policy.resolve_ttl(
        settings.ttl_override(spec.name),
        spec.ttl,
        policy.response_ttl(lines, now),
        settings.default_ttl,
    )
    declared_grace, declared_if_error = policy.response_stale_windows(lines)
    try:
        tags = cache.tag_names(await spec.tags_for(job.request)) if decision.allowed else ()
    except Exception:
        cache.counters.errors += 1
        log.exception("cache tags of %s failed; not storing", spec.name)
        decision = policy.Decision(False, "tag-error")
        tags = ()
    entry = to_entry(
        response.status,
        lines,
        body,
        stored_at=now,
        ttl=ttl,
        grace=policy.resolve_ttl(
            settings.stale_ttl_override(spec.name),
            spec.stale_ttl,
            declared_grace,
            settings.stale_ttl,
        ),
        stale_if_error=policy.resolve_ttl(
            None, spec.stale_if_error, declared_if_error, settings.stale_if_error
        ),
        tags=tags,
        generation=generation,
        compress=isinstance(response, web.Response) and bool(response.compression),
    )
    if not decision.allowed:
        reason = decision.reason
    elif ttl <= 0:
        reason = "ttl-zero"
    elif await cache.save(job.key, entry):
        return "fwd=miss; stored", entry
    else:
        reason = "not-stored"
    return f"fwd=miss; detail={reason}", entry if reason in SHAREABLE_REASONS else None
