"""Answers: responses made from stored entries and from fill outcomes, labelled with
`X-Cache` and `Cache-Status` (RFC 9211)."""

from __future__ import annotations

from aiohttp import hdrs, web

from cachekit import conditional
from cachekit.entry import CachedResponse
from cachekit.flight import FillOutcome
from cachekit.responses import from_entry, mark
from cachekit.storing import STORED, Call, Job


def answer_initiator(job: Job, outcome: FillOutcome) -> web.StreamResponse:
    """The answer for the request that ran the fill."""
    error, response, shared = outcome.error, outcome.response, outcome.shared
    headers = job.request.headers
    conditional_request = "If-None-Match" in headers or "If-Modified-Since" in headers
    # Answered from the entry: when the fill produced no response of its own (another
    # process filled it, or a stale copy replaced an error), and when a stored answer must
    # become a 304 or came from a raised HTTPException (a new response carries our headers).
    if shared is not None and (
        (error is None and response is None)
        or (
            outcome.status == STORED
            and (
                isinstance(error, web.HTTPException)
                or (response is not None and conditional_request)
            )
        )
    ):
        return answer_job(job, shared, outcome.status, outcome.x_cache)
    if error is not None:
        if isinstance(error, web.HTTPException):
            mark(error.headers, outcome.x_cache, outcome.status)
        raise error
    assert response is not None  # a fill yields a response, an error or an entry
    return marked(response, outcome.x_cache, outcome.status)


def answer_from(
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
            headers.get(hdrs.IF_NONE_MATCH),
            headers.get(hdrs.IF_MODIFIED_SINCE),
        )
    return from_entry(
        entry, now, status, x_cache, not_modified=matched, emit_cache_control=emit_cache_control
    )


def answer_job(job: Job, entry: CachedResponse, status: str, x_cache: str) -> web.Response:
    """`answer_from` for a request on its way through a fill or a refresh."""
    return answer_from(
        job.request,
        entry,
        job.cache.clock(),
        status,
        x_cache,
        emit_cache_control=job.emit_cache_control,
    )


async def run_marked(call: Call, x_cache: str, status: str) -> web.StreamResponse:
    """Run the handler and label its response (or raised HTTPException) as not cached."""
    try:
        response = await call()
    except web.HTTPException as exc:
        mark(exc.headers, x_cache, status)
        raise
    return marked(response, x_cache, status)


def marked(response: web.StreamResponse, x_cache: str, status: str) -> web.StreamResponse:
    """`response`, labelled as not answered from the cache (unless already sent)."""
    if not response.prepared:
        mark(response, x_cache, status)
    return response
