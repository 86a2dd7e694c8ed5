"""Filling: the one fill of a key (the cross-process fill lock, or waiting for its holder),
background refreshes, and lookups that follow Vary stubs."""

from __future__ import annotations

import asyncio
import time
from typing import Final

from aiohttp import web

from cachekit import directives, keys, tracing
from cachekit.backends.base import UNKNOWN_GENERATION, Answer
from cachekit.cache import Cache
from cachekit.entry import CachedResponse
from cachekit.fill_locks import FillLock
from cachekit.flight import FillOutcome
from cachekit.guard import RateLimitedLog
from cachekit.handler_spec import HandlerSpec
from cachekit.handler_state import varied_names
from cachekit.revalidation import conditional_request, validators
from cachekit.storing import Job, store_response, store_revalidated

_refresh_log = RateLimitedLog()

STALE_IF_ERROR: Final = "hit; fwd=stale; detail=stale-if-error"
COLLAPSED: Final = "fwd=miss; collapsed"


async def look_up(job: Job) -> Answer:
    """The answer for `job.key`; a Vary stub there moves `job.key` (and `job.vary`) to the
    variant this request needs (once)."""
    answer = await job.cache.lookup(job.key)
    stub = answer[0]
    if stub is None or not stub.vary_stub:
        return answer
    job.key, job.vary, answer = await follow_vary_stub(
        job.cache, job.spec, job.request, base=job.base, key=job.key, answer=answer
    )
    return answer


async def follow_vary_stub(
    cache: Cache, spec: HandlerSpec, request: web.Request, *, base: str, key: str, answer: Answer
) -> tuple[str, tuple[str, ...], Answer]:
    """For an `answer` at `key` that is a Vary stub: the key of the variant this request
    needs, the names it varies on, and the variant's answer. Names past the bounds of
    `varied_names` are neither served nor stored (`UNKNOWN_GENERATION`)."""
    stub = answer[0]
    assert stub is not None
    declared = cache.vary_names(spec)
    names = varied_names(
        declared, directives.vary_names(directives.header_values(stub.headers, "Vary"))
    )
    if names is None:
        return key, declared, (None, UNKNOWN_GENERATION)
    variant = keys.request_key(base, request, names, cache.max_key_length)
    if variant == key:
        return key, names, (None, answer[1])
    answer = await cache.lookup(variant)
    if answer[0] is not None and answer[0].vary_stub:
        return variant, names, (None, answer[1])
    return variant, names, answer


async def fill(job: Job, fallback: CachedResponse | None) -> FillOutcome:
    """The one fill of a key: take the cross-process lock, or wait for its holder's entry
    (a `cachekit.fill` span when the application traces)."""
    with tracing.span("cachekit.fill", job.spec.name, job.key) as current:
        outcome = await _fill(job, fallback)
        tracing.annotate(current, status=outcome.status, x_cache=outcome.x_cache)
        return outcome


async def _fill(job: Job, fallback: CachedResponse | None) -> FillOutcome:
    cache = job.cache
    lock = FillLock(cache.locks, job.key)  # named after the key looked up, even if a stub moves it
    if cache.locks.is_stuck(lock.key):
        # Its holder stopped answering and this process already waited once: while the
        # lock is still held, serve at once (not stored) instead of waiting again.
        if await cache.locks.held(lock.key) is not False:
            job.generation = UNKNOWN_GENERATION
            return await _run_and_store(job, fallback)
        cache.locks.forget_stuck(lock.key)
    if _lockable(job) and await lock.take() is False:
        waited = await _wait_for_holder(job, lock)
        if waited is not None:
            return _collapsed(job, waited)
        if not lock.held:
            job.generation = UNKNOWN_GENERATION  # the holder is stuck: serve, do not store
            cache.locks.remember_stuck(lock.key)
    try:
        # The previous holder may have stored the entry just before we got the lock.
        if lock.held and (entry := await _fresh_entry(job)) is not None:
            return _collapsed(job, entry)
        return await _run_and_store(job, fallback)
    finally:
        await lock.release()


async def refresh(job: Job) -> None:
    """Background revalidation of a stale entry; at most one per key across processes."""
    cache = job.cache
    lock = FillLock(cache.locks, job.key)
    if _lockable(job) and await lock.take() is False:
        return
    try:
        if lock.held and await _fresh_entry(job) is not None:
            return
        cache.count("refreshes")
        response, _, asked = await _ask_handler(job)
        if asked is not None and response.status == 304:
            await store_revalidated(job, asked, response)
            return
        if response.status >= 500:
            raise RuntimeError(f"refresh answered {response.status}")
        await store_response(job, response)
    except Exception as exc:
        cache.count("refresh_errors")
        _refresh_log.warning("background refresh of %s failed: %r", job.spec.name, exc)
    finally:
        await lock.release()


async def _fresh_entry(job: Job) -> CachedResponse | None:
    """The entry of `job.key` if it is fresh now (moving `job.key` to a learned variant)."""
    cache = job.cache
    entry, ticket = await look_up(job)
    if ticket != UNKNOWN_GENERATION:
        job.generation = ticket  # the latest ticket read before the handler runs
    return entry if entry is not None and entry.is_fresh(cache.clock()) else None


async def _wait_for_holder(job: Job, lock: FillLock) -> CachedResponse | None:
    """Wait for another process's fill: its entry; or None once we took over a lock it
    released without storing (`lock.held`), or after `lock_timeout` or a store failure.

    Polls with backoff (5 ms doubling to 100 ms): never a tight loop against Redis.
    """
    cache = job.cache
    cache.count("lock_waits")
    tracing.event("cachekit.lock_wait")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + cache.settings.lock_timeout
    delay = 0.005
    while (remaining := deadline - loop.time()) > 0:
        await asyncio.sleep(min(delay, remaining))
        delay = min(delay * 2, 0.1)
        entry, generation = await look_up(job)
        if generation == UNKNOWN_GENERATION:
            break
        job.generation = generation  # the latest ticket read before the handler runs
        if entry is not None and entry.is_fresh(cache.clock()):
            return entry
        held = await cache.locks.held(lock.key)
        if held is None:
            break
        # Released with nothing stored (the fill failed or was not storable): take over.
        if not held and await lock.take():
            return None
    cache.count("lock_timeouts")
    tracing.event("cachekit.lock_timeout")
    return None


def _collapsed(job: Job, entry: CachedResponse) -> FillOutcome:
    return FillOutcome(None, None, entry, COLLAPSED, "MISS", job.key, job.vary)


def _lockable(job: Job) -> bool:
    return job.cache.store.remote and job.generation != UNKNOWN_GENERATION


async def _ask_handler(
    job: Job,
) -> tuple[web.StreamResponse, web.HTTPException | None, CachedResponse | None]:
    """Call the handler: with the stale entry's validators when it has some (`revalidation`),
    else as the client asked. Returns its response (a raised HTTPException as one), that
    exception, and the entry a 304 would refresh (None: an ordinary call). Its time is
    added to the handler's fill time (the dashboard's fill latency) and goes to
    `cachekit_fill_duration_seconds` when the app serves metrics."""
    # Timed always: two clock reads are nothing beside a handler call, and the dashboard
    # (cachekit.stats_history) needs fill latency without prometheus-client.
    started = time.perf_counter()
    try:
        return await _call_handler(job)
    finally:
        seconds = time.perf_counter() - started
        job.cache.time_fill(job.spec, seconds)
        metrics = job.cache.metrics
        if metrics is not None:
            metrics.fill_duration.labels(job.spec.name).observe(seconds)


async def _call_handler(
    job: Job,
) -> tuple[web.StreamResponse, web.HTTPException | None, CachedResponse | None]:
    stale, call = job.stale, job.call
    asked = None
    if stale is not None and job.call_with is not None and (lines := validators(stale)):
        conditional = conditional_request(job.request, lines)
        if conditional is not None:
            asked, call = stale, job.call_with(conditional)
            job.cache.count("revalidations")
    if asked is None:
        try:
            return await call(), None, None
        except web.HTTPException as exc:
            return exc, exc, None
    with tracing.span("cachekit.revalidate", job.spec.name, job.key) as current:
        try:
            response: web.StreamResponse = await call()
            error = None
        except web.HTTPException as exc:
            response = error = exc
        tracing.annotate(current, fwd_status=response.status)
        return response, error, asked


async def _run_and_store(job: Job, fallback: CachedResponse | None) -> FillOutcome:
    try:
        response, error, asked = await _ask_handler(job)
    except Exception as exc:
        if fallback is not None:
            return _stale_instead(job, fallback)
        return FillOutcome(None, exc, None, "fwd=miss", "MISS", job.key, ())
    if asked is not None and response.status == 304:
        revalidated = await store_revalidated(job, asked, response)
        return FillOutcome(
            None, None, revalidated.shared, revalidated.status, "REVALIDATED", job.key, job.vary
        )
    if response.status >= 500 and fallback is not None:
        return _stale_instead(job, fallback)
    stored = await store_response(job, response)
    return FillOutcome(
        None if error else response,
        error,
        stored.shared,
        stored.status,
        "MISS",
        stored.key,
        stored.vary,
    )


def _stale_instead(job: Job, fallback: CachedResponse) -> FillOutcome:
    job.cache.count("stale_if_error")
    return FillOutcome(None, None, fallback, STALE_IF_ERROR, "STALE", job.key, job.vary)
