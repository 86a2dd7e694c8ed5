"""Storing: a handler's response becomes an entry, if the policy allows it and for how long."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from aiohttp import web

from cachekit import encodings, keys, policy
from cachekit.cache import Cache
from cachekit.directives import header_values
from cachekit.entry import CachedResponse, header_name
from cachekit.handler_spec import HandlerSpec
from cachekit.handler_state import varied_names
from cachekit.responses import (
    ETAG_HEADER,
    SURROGATE_LINE,
    add_freshness,
    header_lines,
    storable_body,
    to_entry,
)
from cachekit.revalidation import updated_lines
from cachekit.tagging import runtime_tags, surrogate_keys_line

log = logging.getLogger("cachekit")

#: The handler, bound to the request's arguments.
Call = Callable[[], Awaitable[web.StreamResponse]]
# Reasons a response was not stored that still allow handing it to collapsed requests.
SHAREABLE_REASONS: Final = frozenset({"status", "ttl-zero", "too-large", "not-stored"})
STORED: Final = "fwd=miss; stored"
#: The handler answered a revalidation with 304 (RFC 9211 `fwd-status`).
REVALIDATED: Final = "fwd=stale; fwd-status=304"


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
    #: The request headers `key` varies on (the declared ones, or a Vary stub's).
    vary: tuple[str, ...] = ()
    #: The stored entry this request found unusable as it is (stale, no-cache): the fill
    #: asks the handler with its validators (`revalidation`) when it has some.
    stale: CachedResponse | None = None
    #: The handler bound to another request (a conditional clone of `request`).
    call_with: Callable[[web.Request], Call] | None = None

    def key_for(self, vary: tuple[str, ...]) -> str:
        """This request's key when its handler varies on `vary`."""
        return keys.request_key(self.base, self.request, vary, self.cache.max_key_length)

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
    vary = job.vary
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
        varied = _varied_key(job, facts)
        if varied is None:
            decision = policy.Decision(False, "vary-limit")
        else:
            vary, key = varied
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
    codings = cache.handler(spec).codings
    encoded: tuple[tuple[str, bytes], ...] = ()
    if (
        decision.allowed
        and codings
        and encodings.compressible(
            response.status, lines, len(body), cache.settings.compress_min_bytes
        )
    ):
        # Once per fill, into every configured coding; hits send these bytes untouched.
        encoded = encodings.compress_all(body, codings)
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
        # aiohttp's own compression (`enable_compression()`) on every hit, unless cachekit
        # stores codings of its own: then the body is stored as the handler rendered it.
        compress=not encoded and isinstance(response, web.Response) and bool(response.compression),
        added=added,
        no_cache=life.no_cache,
        encoded=encoded,
    )
    if not decision.allowed:
        reason = decision.reason
    elif entry.ttl <= 0:
        reason = "ttl-zero"
    elif await cache.save(key, entry):
        await _stored(job, key, vary, entry)
        if ETAG_HEADER not in response.headers:
            response.headers[ETAG_HEADER] = entry.etag
        if job.emit_cache_control:
            add_freshness(response.headers, entry.headers, int(entry.ttl))
        return Stored(STORED, entry, key, vary)
    else:
        reason = "not-stored"
    # Never a 304 or a 206 for requests that joined the fill: each asked for the whole page.
    partial = response.status in (206, 304)
    shared = entry if reason in SHAREABLE_REASONS and not partial else None
    return Stored(f"fwd=miss; detail={reason}", shared, key, vary)


async def _stored(job: Job, key: str, vary: tuple[str, ...], entry: CachedResponse) -> None:
    """What follows storing a fill's entry: counting its key, and a Vary stub when its
    response varies on more than the handler declared."""
    _count_key(job, key)
    if vary != job.cache.vary_names(job.spec):
        await _leave_stub(job, vary, entry)


def _count_key(job: Job, key: str) -> None:
    """Count a key just stored for its handler (`key_census.py`); only fills count."""
    spec = job.spec
    url_keyed = spec.template is None and spec.key_function is None
    prefix = keys.default_key_prefix(spec.name) if url_keyed else None
    job.cache.key_census.add(spec.name, key, prefix)


def _varied_key(job: Job, facts: policy.ResponseFacts) -> tuple[tuple[str, ...], str] | None:
    """Where this response goes: keyed on every header it varies on (`varied_names`), or
    None when those are too many to store."""
    names = varied_names(job.cache.vary_names(job.spec), facts.vary)
    if names is None:
        return None
    return names, (job.key if names == job.vary else job.key_for(names))


async def _leave_stub(job: Job, names: tuple[str, ...], entry: CachedResponse) -> None:
    """A Vary stub at this URL's declared key naming `names`, as long-lived as `entry`: how
    every process finds the variants of this URL (and only of this URL)."""
    declared_key = job.key_for(job.cache.vary_names(job.spec))
    stub = CachedResponse(
        status=200,
        headers=(("Vary", ", ".join(names)),),
        body=b"",
        stored_at=entry.stored_at,
        ttl=entry.keep_for(),
        generation=job.generation,
        vary_stub=True,
    )
    await job.cache.save(declared_key, stub)


async def store_revalidated(
    job: Job, stale: CachedResponse, not_modified: web.StreamResponse
) -> Stored:
    """Refresh `stale` from the handler's 304: its header lines updated (`updated_lines`),
    its freshness restarted, its body and tags kept. The refreshed entry is answered with
    even when the updated response may no longer be stored (then it is not saved)."""
    cache, spec = job.cache, job.spec
    lines = updated_lines(stale.headers, header_lines(not_modified))
    facts = policy.response_facts(stale.status, lines, cache.settings.targeted_cache_control)
    decision = policy.storable(
        facts,
        statuses=spec.statuses,
        statuses_declared=spec.statuses_declared,
        body_size=len(stale.body),
        max_entry_bytes=cache.settings.max_entry_bytes,
    )
    life = policy.lifetime(facts, cache.configured(spec), cache.clock())
    etags = header_values(lines, "ETag")
    entry = CachedResponse(
        status=stale.status,
        headers=tuple((header_name(name), value) for name, value in lines),
        body=stale.body,
        stored_at=life.stored_at,
        ttl=life.ttl,
        grace=life.grace,
        stale_if_error=life.stale_if_error,
        etag=etags[0] if etags else stale.etag,
        tags=stale.tags,
        generation=job.generation,
        compress=stale.compress,
        encoded=stale.encoded,  # the codings of the same body, still valid
        handler_etag=stale.handler_etag
        or bool(header_values(not_modified.headers.items(), "ETag")),
        no_cache=life.no_cache,
    )
    if not decision.allowed:
        reason = decision.reason
    elif entry.ttl <= 0:
        reason = "ttl-zero"
    elif await cache.save(job.key, entry):
        _count_key(job, job.key)
        return Stored(REVALIDATED, entry, job.key, job.vary)
    else:
        reason = "not-stored"
    return Stored(f"{REVALIDATED}; detail={reason}", entry, job.key, job.vary)
