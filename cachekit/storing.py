"""Storing: a handler's response becomes an entry, if the policy allows it and for how long."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from aiohttp import web

from cachekit import keys, policy
from cachekit.cache import Cache
from cachekit.entry import CachedResponse
from cachekit.handler_spec import HandlerSpec
from cachekit.responses import (
    ETAG_HEADER,
    SURROGATE_LINE,
    add_freshness,
    header_lines,
    storable_body,
    to_entry,
)
from cachekit.tagging import runtime_tags, surrogate_keys_line

log = logging.getLogger("cachekit")

#: The handler, bound to the request's arguments.
Call = Callable[[], Awaitable[web.StreamResponse]]
# Reasons a response was not stored that still allow handing it to collapsed requests.
SHAREABLE_REASONS: Final = frozenset({"status", "ttl-zero", "too-large", "not-stored"})
STORED: Final = "fwd=miss; stored"


@dataclass(slots=True)
class Job:
    """One request on its way to the handler. `key` is `base` plus the Vary suffix."""

    cache: Cache
    spec: HandlerSpec
    request: web.Request
    call: Call
    base: str
    key: str
    directives: policy.RequestDirectives
    #: The ticket of the lookup made before the handler ran (see `Cache.save`).
    generation: int

    def key_for(self, vary: tuple[str, ...]) -> str:
        """This request's key when its handler varies on `vary`."""
        return keys.request_key(self.base, self.request, vary, self.cache.settings.max_key_length)

    @property
    def emit_cache_control(self) -> bool:
        """Whether answers tell browsers and CDNs how long they may keep the response."""
        return self.cache.emits_cache_control(self.spec)


@dataclass(frozen=True, slots=True)
class Stored:
    """What `store_response` did: the `Cache-Status` detail, the entry requests that
    joined the fill may share (None: they run the handler themselves), and the key and
    Vary names that entry is valid for."""

    status: str
    shared: CachedResponse | None
    key: str
    vary: tuple[str, ...]


async def store_response(job: Job, response: web.StreamResponse) -> Stored:
    """Store the handler's response if the policy allows it."""
    cache, spec, request = job.cache, job.spec, job.request
    vary = cache.vary_names(spec)
    body = storable_body(response)
    if body is None:
        return Stored("fwd=miss; detail=streaming", None, job.key, vary)
    lines = header_lines(response)
    facts = policy.response_facts(response.status, lines, cache.settings.targeted_cache_control)
    decision = policy.storable(
        facts,
        statuses=spec.statuses,
        statuses_declared=spec.statuses_declared,
        body_size=len(body),
        max_entry_bytes=cache.settings.max_entry_bytes,
    )
    key = job.key
    if decision.allowed:
        learned = await _learn_vary(job, facts)
        if learned is None:
            decision = policy.Decision(False, "vary-limit")
        else:
            vary, key = learned
    try:
        tags = cache.tag_names(
            [
                *await spec.tags_for(request),
                *runtime_tags(request, lines),
                keys.path_tag(request.rel_url),
            ]
        )
    except Exception:
        cache.count("errors")
        log.exception("cache tags of %s failed; not storing", spec.name)
        decision, tags = policy.Decision(False, "tag-error"), ()
    surrogate_header = cache.settings.surrogate_key_header
    added: tuple[tuple[str, str], ...] = ()
    if surrogate_header is not None and tags:
        # Replaces any line of that name the handler set (its tags are among `tags`).
        line = surrogate_keys_line(surrogate_header, tags)
        lines = [kept for kept in lines if kept[0].lower() != surrogate_header.lower()]
        response.headers[surrogate_header] = line[1]
        response[SURROGATE_LINE] = line
        added = (line,)
    life = policy.lifetime(facts, cache.configured(spec), cache.clock())
    entry = to_entry(
        response.status,
        lines,
        body,
        stored_at=life.stored_at,
        ttl=life.ttl,
        grace=life.grace,
        stale_if_error=life.stale_if_error,
        tags=tags,
        generation=job.generation,
        compress=isinstance(response, web.Response) and bool(response.compression),
        added=added,
    )
    if not decision.allowed:
        reason = decision.reason
    elif entry.ttl <= 0:
        reason = "ttl-zero"
    elif await cache.save(key, entry):
        if ETAG_HEADER not in response.headers:
            response.headers[ETAG_HEADER] = entry.etag
        if job.emit_cache_control:
            add_freshness(response.headers, entry.headers, int(entry.ttl))
        return Stored(STORED, entry, key, vary)
    else:
        reason = "not-stored"
    shared = entry if reason in SHAREABLE_REASONS else None
    return Stored(f"fwd=miss; detail={reason}", shared, key, vary)


async def _learn_vary(job: Job, facts: policy.ResponseFacts) -> tuple[tuple[str, ...], str] | None:
    """Key the entry on every header its response varies on; leave a stub where other
    processes (which have not learned yet) will look. None: too many names to learn."""
    cache, spec = job.cache, job.spec
    known = cache.vary_names(spec)
    if set(facts.vary) <= set(known):
        return known, job.key
    learned = cache.learn_vary(spec, facts.vary)
    if learned is None:
        return None
    key = job.key_for(learned)
    if cache.store.remote and key != job.key:
        stub = CachedResponse(
            status=200,
            headers=(("Vary", ", ".join(learned)),),
            body=b"",
            stored_at=cache.clock(),
            ttl=cache.settings.lock_ttl + cache.settings.default_ttl,
            generation=job.generation,
            vary_stub=True,
        )
        await cache.save(job.key, stub)
    return learned, key
