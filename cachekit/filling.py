"""Filling the cache: the one fill per key, background refreshes, and storing a response."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from aiohttp import web

from cachekit import keys, policy
from cachekit.cache import UNKNOWN_GENERATION, Cache
from cachekit.entry import CachedResponse
from cachekit.flight import FillOutcome
from cachekit.guard import RateLimitedLog
from cachekit.handler_spec import HandlerSpec
from cachekit.responses import (
    ETAG_HEADER,
    add_freshness,
    header_lines,
    storable_body,
    to_entry,
)
from cachekit.tagging import runtime_tags

log = logging.getLogger("cachekit")
_refresh_log = RateLimitedLog()

Call = Callable[[], Awaitable[web.StreamResponse]]
# Reasons a response was not stored that still allow handing it to collapsed requests.
SHAREABLE_REASONS: Final = frozenset({"status", "ttl-zero", "too-large", "not-stored"})
STALE_IF_ERROR: Final = "hit; fwd=stale; detail=stale-if-error"
COLLAPSED: Final = "fwd=miss; collapsed"
STORED: Final = "fwd=miss; stored"
STUCK_LOCKS_KEPT: Final = 1024


@dataclass(slots=True)
class Job:
    """One request on its way through the cache. `key` is `base` plus the Vary suffix."""

    cache: Cache
    spec: HandlerSpec
    request: web.Request
    call: Call
    base: str
    key: str
    directives: policy.RequestDirectives
    #: Wall-clock time taken just before the handler ran (see `Cache.save`).
    started_at: float = 0.0

    def key_for(self, vary: tuple[str, ...]) -> str:
        """This request's key when its handler varies on the request headers `vary`."""
        return keys.request_key(self.base, self.request, vary, self.cache.settings.max_key_length)

    @property
    def emit_cache_control(self) -> bool:
        """Whether hits tell browsers and CDNs how long they may keep the response."""
        return emits_cache_control(self.cache, self.spec)


def emits_cache_control(cache: Cache, spec: HandlerSpec) -> bool:
    """The handler's own `emit_cache_control`, else the setting."""
    own = spec.emit_cache_control
    return own if own is not None else cache.settings.emit_cache_control


async def fill(job: Job, generation: int, fallback: CachedResponse | None) -> FillOutcome:
    """The one fill of a key: take the cross-process lock, or wait for its holder's entry."""
    cache = job.cache
    token = secrets.token_hex(16)
    lock = job.key  # named after the key looked up, even if a Vary stub moves `job.key`
    loop_time = asyncio.get_running_loop().time
    if cache.stuck_locks.get(lock, 0.0) > loop_time():
        # Its holder stopped answering and this process already waited once: while the
        # lock is still held, serve at once (not stored) instead of waiting again.
        if await cache.lock_held(lock) is not False:
            return await _run_and_store(job, UNKNOWN_GENERATION, fallback)
        cache.stuck_locks.pop(lock, None)
    locked = await cache.try_lock(lock, token) if _lockable(cache, generation) else None
    if locked is False:
        waited = await _wait_for_holder(job, lock, token)
        if isinstance(waited, CachedResponse):
            return _collapsed(job, waited)
        locked = waited
        if not locked:
            generation = UNKNOWN_GENERATION  # the holder is stuck: serve, but do not store
            # Held for at least lock_timeout already, so it expires within the rest of
            # lock_ttl; until then later requests need not wait for it again.
            settings = cache.settings
            stuck, now = cache.stuck_locks, loop_time()
            if len(stuck) >= STUCK_LOCKS_KEPT:  # bounded: forget the expired ones
                for key in [key for key, until in stuck.items() if until <= now]:
                    del stuck[key]
            stuck[lock] = now + settings.lock_ttl - settings.lock_timeout
    try:
        if locked:
            # The previous holder may have stored the entry just before we got the lock.
            entry, _ = await lookup_following_stubs(job)
            if entry is not None and entry.is_fresh(cache.clock()):
                return _collapsed(job, entry)
        return await _run_and_store(job, generation, fallback)
    finally:
        if locked:
            await cache.unlock(lock, token)


async def _wait_for_holder(job: Job, lock: str, token: str) -> CachedResponse | bool:
    """Wait for another process's fill: its entry, or True once we took over a lock it
    released without storing, or False after `lock_timeout` (or a store failure).

    Polls with backoff (5 ms doubling to 100 ms): never a tight loop against Redis.
    """
    cache = job.cache
    cache.counters.lock_waits += 1
    loop = asyncio.get_running_loop()
    deadline = loop.time() + cache.settings.lock_timeout
    delay = 0.005
    while (remaining := deadline - loop.time()) > 0:
        await asyncio.sleep(min(delay, remaining))
        delay = min(delay * 2, 0.1)
        entry, generation = await lookup_following_stubs(job)
        if generation == UNKNOWN_GENERATION:
            break
        if entry is not None and entry.is_fresh(cache.clock()):
            return entry
        held = await cache.lock_held(lock)
        if held is None:
            break
        # Released with nothing stored (the fill failed or was not storable): take over.
        if not held and await cache.try_lock(lock, token):
            return True
    cache.counters.lock_timeouts += 1
    return False


async def lookup_following_stubs(job: Job) -> tuple[CachedResponse | None, int]:
    """Look the key up; a Vary stub teaches this process the handler's Vary and moves
    `job.key` to the variant this request needs (at most once per lookup)."""
    entry, generation = await job.cache.lookup(job.key)
    if entry is not None and entry.vary_stub:
        names = policy.vary_names(policy.header_values(entry.headers, "Vary"))
        learned = job.cache.learn_vary(job.spec.name, job.spec.vary, names)
        key = job.key_for(learned)
        if key == job.key:
            return None, generation
        job.key = key
        entry, generation = await job.cache.lookup(key)
        if entry is not None and entry.vary_stub:
            return None, generation
    return entry, generation


def _collapsed(job: Job, entry: CachedResponse) -> FillOutcome:
    vary = job.cache.vary_names(job.spec.name, job.spec.vary)
    return FillOutcome(None, None, entry, COLLAPSED, "MISS", job.key, vary)


def _lockable(cache: Cache, generation: int) -> bool:
    return cache.store.remote and generation != UNKNOWN_GENERATION


async def _run_and_store(job: Job, generation: int, fallback: CachedResponse | None) -> FillOutcome:
    error: BaseException | None = None
    job.started_at = time.time()  # before the handler reads anything (see `Cache.save`)
    try:
        response: web.StreamResponse = await job.call()
    except web.HTTPException as exc:
        response = error = exc
    except Exception as exc:
        if fallback is not None:
            return _stale_instead(job, fallback)
        return FillOutcome(None, exc, None, "fwd=miss", "MISS", job.key, ())
    if response.status >= 500 and fallback is not None:
        return _stale_instead(job, fallback)
    status, shared, key, vary = await store_response(job, generation, response)
    return FillOutcome(None if error else response, error, shared, status, "MISS", key, vary)


def _stale_instead(job: Job, fallback: CachedResponse) -> FillOutcome:
    job.cache.counters.stale_if_error += 1
    vary = job.cache.vary_names(job.spec.name, job.spec.vary)
    return FillOutcome(None, None, fallback, STALE_IF_ERROR, "STALE", job.key, vary)


async def refresh(job: Job, generation: int) -> None:
    """Background revalidation of a stale entry; at most one per key across processes."""
    cache = job.cache
    token = secrets.token_hex(16)
    locked = await cache.try_lock(job.key, token) if _lockable(cache, generation) else None
    if locked is False:
        return
    try:
        if locked:
            entry, _ = await lookup_following_stubs(job)
            if entry is not None and entry.is_fresh(cache.clock()):
                return
        cache.counters.refreshes += 1
        job.started_at = time.time()
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
) -> tuple[str, CachedResponse | None, str, tuple[str, ...]]:
    """Store the response if policy allows.

    Returns the `Cache-Status` detail, the entry collapsed requests may share (None when
    they must run the handler themselves), and the key and Vary names it is valid for.
    """
    cache, spec, request = job.cache, job.spec, job.request
    vary = cache.vary_names(spec.name, spec.vary)
    body = storable_body(response)
    if body is None:
        return "fwd=miss; detail=streaming", None, job.key, vary
    lines = header_lines(response)
    decision = policy.storable_decision(
        response.status,
        lines,
        statuses=spec.statuses,
        body_size=len(body),
        max_entry_bytes=cache.settings.max_entry_bytes,
    )
    key = job.key
    if decision.allowed:
        vary, key = await _learn_vary(job, lines, generation)
    try:
        tags = cache.tag_names(
            [
                *await spec.tags_for(request),
                *runtime_tags(request, lines),
                keys.path_tag(request.rel_url),
            ]
        )
    except Exception:
        cache.counters.errors += 1
        log.exception("cache tags of %s failed; not storing", spec.name)
        decision, tags = policy.Decision(False, "tag-error"), ()
    compress = isinstance(response, web.Response) and bool(response.compression)
    entry = _entry(
        job,
        status=response.status,
        lines=lines,
        body=body,
        tags=tags,
        generation=generation,
        compress=compress,
    )
    if not decision.allowed:
        reason = decision.reason
    elif entry.ttl <= 0:
        reason = "ttl-zero"
    elif await cache.save(key, entry, job.started_at):
        if ETAG_HEADER not in response.headers:
            response.headers[ETAG_HEADER] = entry.etag
        if job.emit_cache_control:
            add_freshness(response.headers, entry.headers, int(entry.ttl))
        return STORED, entry, key, vary
    else:
        reason = "not-stored"
    shared = entry if reason in SHAREABLE_REASONS else None
    return f"fwd=miss; detail={reason}", shared, key, vary


async def _learn_vary(
    job: Job, lines: list[tuple[str, str]], generation: int
) -> tuple[tuple[str, ...], str]:
    """Key the entry on every header its response varies on; leave a stub where other
    processes (which have not learned yet) will look."""
    cache, spec = job.cache, job.spec
    known = cache.vary_names(spec.name, spec.vary)
    declared = policy.vary_names(policy.header_values(lines, "Vary"))
    if set(declared) <= set(known):
        return known, job.key
    learned = cache.learn_vary(spec.name, spec.vary, declared)
    key = job.key_for(learned)
    if cache.store.remote and key != job.key:
        now = cache.clock()
        stub = CachedResponse(
            status=200,
            headers=(("Vary", ", ".join(learned)),),
            body=b"",
            stored_at=now,
            ttl=cache.settings.lock_ttl + cache.settings.default_ttl,
            generation=generation,
            vary_stub=True,
        )
        await cache.save(job.key, stub, job.started_at)
    return learned, key


def _entry(
    job: Job,
    *,
    status: int,
    lines: list[tuple[str, str]],
    body: bytes,
    tags: tuple[str, ...],
    generation: int,
    compress: bool,
) -> CachedResponse:
    cache, spec = job.cache, job.spec
    settings = cache.settings
    now = cache.clock()
    declared_grace, declared_if_error = policy.response_stale_windows(lines)
    grace = policy.resolve_ttl(
        settings.stale_ttl_override(spec.name), spec.stale_ttl, declared_grace, settings.stale_ttl
    )
    if_error = policy.resolve_ttl(
        None, spec.stale_if_error, declared_if_error, settings.stale_if_error
    )
    if policy.revalidation_required(lines):
        grace = if_error = 0.0
    return to_entry(
        status,
        lines,
        body,
        # An Age the response arrived with counts towards its freshness and its Age header.
        stored_at=now - policy.received_age(lines),
        ttl=policy.resolve_ttl(
            settings.ttl_override(spec.name),
            spec.ttl,
            policy.response_ttl(lines, now),
            settings.default_ttl,
        ),
        grace=grace,
        stale_if_error=if_error,
        tags=tags,
        generation=generation,
        compress=compress,
    )
