"""Answers: responses made from stored entries and from fill outcomes, labelled with
`X-Cache` and `Cache-Status` (RFC 9211)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from aiohttp import hdrs, web

from cachekit import conditional, encodings
from cachekit.entry import CachedResponse
from cachekit.flight import FillOutcome
from cachekit.ranges import RangeAnswer, if_range_holds, select_range
from cachekit.responses import coded_body, from_entry, mark, part_from_entry
from cachekit.storing import STORED, Call, Job

if TYPE_CHECKING:
    from cachekit.cache import Cache
    from cachekit.handler_spec import HandlerSpec


def answer_initiator(job: Job, outcome: FillOutcome) -> web.StreamResponse:
    """The answer for the request that ran the fill."""
    error, response, shared = outcome.error, outcome.response, outcome.shared
    job.cache.tally(job.spec, request_result(outcome))
    headers = job.request.headers
    # A conditional or Range request is answered from the entry (a 304, a part of it).
    conditional_request = (
        "If-None-Match" in headers
        or "If-Modified-Since" in headers
        or "Range" in headers
        # The entry has content codings this client may take instead of the identity body.
        or (shared is not None and bool(shared.encoded) and "Accept-Encoding" in headers)
    )
    # Answered from the entry: when the fill produced no response of its own (another
    # process filled it, or a stale copy replaced an error), and when a stored answer must
    # become a 304 or a part, or came from a raised HTTPException (a new response carries
    # our headers).
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


#: `cachekit_requests_total`'s result of a fill's initiator, by its `X-Cache`.
_RESULTS: Final = {"REVALIDATED": "revalidated", "STALE": "stale"}


def request_result(outcome: FillOutcome) -> str:
    """What a fill's outcome was for the request that ran it: miss, revalidated, stale
    (an error replaced by a stale copy) or collapsed (another process's fill answered)."""
    if outcome.status.endswith("collapsed"):
        return "collapsed"
    return _RESULTS.get(outcome.x_cache, "miss")


def answer_from(  # noqa: PLR0917  (positional: a keyword call costs more on every hit)
    request: web.Request,
    entry: CachedResponse,
    now: float,
    status: str,
    x_cache: str,
    emit_cache_control: bool,
) -> web.Response:
    """A response from a stored entry: a 304 when the request's validators match, else a
    206 or 416 for a `Range` of a stored 200 (RFC 9110 §13.2.2 orders them so)."""
    headers = request.headers
    coding = None
    etag = entry.etag
    if entry.encoded and (accept := headers.get(hdrs.ACCEPT_ENCODING)):
        # The best of its codings this request accepts (None: identity).
        coding = encodings.negotiate(accept, tuple(name for name, _ in entry.encoded))
        if coding is not None:
            etag = encodings.encoded_etag(etag, coding)
    matched = False
    if hdrs.IF_NONE_MATCH in headers or hdrs.IF_MODIFIED_SINCE in headers:
        matched = conditional.not_modified(
            entry.status,
            etag,
            entry.headers,
            headers.get(hdrs.IF_NONE_MATCH),
            headers.get(hdrs.IF_MODIFIED_SINCE),
        )
    if not matched and hdrs.RANGE in headers:
        part = _range_of(request, entry, etag, coding)
        if part is not None:
            return part_from_entry(entry, part, now, status, x_cache, coding=coding)
    # Positional: a call with keyword arguments costs more, and this one runs on every hit.
    return from_entry(entry, now, status, x_cache, matched, emit_cache_control, coding)


def _range_of(
    request: web.Request, entry: CachedResponse, etag: str, coding: str | None
) -> RangeAnswer:
    # Ranges of a GET's stored 200 only (of the representation sent: RFC 9110 §14.1); not
    # of a body aiohttp will compress on the way.
    if request.method != "GET" or entry.status != 200 or entry.compress:
        return None
    if not if_range_holds(request.headers.get(hdrs.IF_RANGE), etag, entry.headers):
        return None
    return select_range(request.headers[hdrs.RANGE], len(coded_body(entry, coding)))


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


async def bypass(cache: Cache, spec: HandlerSpec, call: Call, reason: str) -> web.StreamResponse:
    """The handler's own answer to a request the cache stays out of, labelled BYPASS."""
    cache.count("bypasses", spec, "bypass", reason)
    return await run_marked(call, "BYPASS", f"fwd=bypass; detail={reason}")


async def unstored_miss(
    cache: Cache, spec: HandlerSpec, call: Call | None, reason: str
) -> web.StreamResponse:
    """A miss answered without filling: the handler's own answer (None: a 504)."""
    cache.tally(spec, "miss")
    if call is None:
        return marked(web.Response(status=504), "MISS", f"fwd=miss; detail={reason}")
    return await run_marked(call, "MISS", f"fwd=miss; detail={reason}")
