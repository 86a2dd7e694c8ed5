"""Revalidation with the handler (RFC 9111 §4.3): instead of re-rendering a stale entry,
ask the handler "has it changed?" with the entry's own validators, and refresh the entry
from a `304 Not Modified`.

Pure except `conditional_request` and `unconditional_request`, which clone an aiohttp
request. Only validators the
handler produced are sent (never cachekit's body-hash ETag: the handler could not know
it), and never the client's own conditionals: the answer is for every client.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from email.utils import formatdate
from typing import Final

from aiohttp import web
from multidict import CIMultiDict

from cachekit import conditional
from cachekit.directives import header_values, storable_headers
from cachekit.entry import CachedResponse
from cachekit.http_dates import parse_http_date

Lines = Sequence[tuple[str, str]]

#: What a client may send to make its own request conditional or partial: none of it
#: reaches the handler on a revalidation, which is made on behalf of every client.
CLIENT_CONDITIONALS: Final = (
    "If-None-Match",
    "If-Modified-Since",
    "If-Match",
    "If-Unmodified-Since",
    "If-Range",
    "Range",
)
#: Fields a 304 may not change in the stored response (RFC 9111 §3.2: Content-Length; the
#: others describe the stored body, which a 304 leaves as it is), nor cookies: the answer
#: to a revalidation is shared by every client, so a cookie set in it is dropped.
NOT_UPDATED: Final = frozenset(
    {
        "content-length",
        "content-type",
        "content-encoding",
        "content-range",
        "transfer-encoding",
        "set-cookie",
        "cache-tag",
    }
)


def validators(entry: CachedResponse) -> tuple[tuple[str, str], ...]:
    """The request lines that ask the handler whether `entry` changed: its ETag when the
    handler set it, its Last-Modified when valid. Empty: it cannot be revalidated."""
    lines: list[tuple[str, str]] = []
    if entry.handler_etag and entry.etag:
        lines.append(("If-None-Match", entry.etag))
    modified = header_values(entry.headers, "Last-Modified")
    if len(modified) == 1 and parse_http_date(modified[0]) is not None:
        lines.append(("If-Modified-Since", modified[0]))
    return tuple(lines)


def conditional_headers(request_lines: Lines, asked: Lines) -> CIMultiDict[str]:
    """The request's header lines without the client's conditionals, plus `asked`."""
    dropped = {name.lower() for name in CLIENT_CONDITIONALS}
    headers = CIMultiDict(
        (name, value) for name, value in request_lines if name.lower() not in dropped
    )
    headers.extend(asked)
    return headers


def conditional_request(request: web.Request, asked: Lines) -> web.Request | None:
    """A clone of `request` asking with `asked` instead of the client's conditionals (its
    match_info, app, scheme and host kept); None when aiohttp cannot clone it (a body
    already read)."""
    headers = conditional_headers(list(request.headers.items()), asked)
    try:
        # Scheme and host given explicitly: `request` may itself be a clone that set them
        # (a narrowed request, a proxy's `clone(host=...)`), which a clone would forget,
        # reading the host from the Host header: not the host of the key.
        return request.clone(headers=headers, scheme=request.scheme, host=request.host)
    except RuntimeError:
        return None


def unconditional_request(request: web.Request) -> web.Request | None:
    """`request` as a fill asks the handler with it: without the client's conditionals and
    `Range` (cachekit answers those from the entry it stores), so that the handler renders
    the whole representation every client may share. `request` itself when it has none of
    them; None when aiohttp cannot clone it."""
    headers = request.headers
    if not any(name in headers for name in CLIENT_CONDITIONALS):
        return request
    return conditional_request(request, ())


def updated_lines(stored: Lines, not_modified: Lines) -> tuple[tuple[str, str], ...]:
    """The stored response's lines updated by a 304's (RFC 9111 §3.2, §4.3.4): every field
    the 304 carries replaces all lines of that name, in place of the first; the others stay.
    Hop-by-hop fields and `NOT_UPDATED` ones of the 304 are ignored."""
    fresh = [
        (name, value)
        for name, value in storable_headers(not_modified)
        if name.lower() not in NOT_UPDATED
    ]
    replaced = {name.lower() for name, _ in fresh}
    lines: list[tuple[str, str]] = []
    placed: set[str] = set()
    for name, value in stored:
        lower = name.lower()
        if lower not in replaced:
            lines.append((name, value))
        elif lower not in placed:
            placed.add(lower)
            lines.extend(line for line in fresh if line[0].lower() == lower)
    lines.extend(line for line in fresh if line[0].lower() not in placed)
    return tuple(lines)


def not_modified(
    request: web.BaseRequest,
    *,
    etag: str | None = None,
    last_modified: datetime | float | str | None = None,
) -> web.Response | None:
    """A `304 Not Modified` carrying the current validators when the request's own
    (`If-None-Match`, else `If-Modified-Since`) match them; None: render the full response
    (and set the same `ETag` / `Last-Modified` on it, so it can be revalidated later).

    The handler's side of revalidation: when cachekit asks whether a stale entry changed,
    a handler that checks a version first answers without rendering::

        version = await db.product_version(product_id)
        if (unchanged := cachekit.not_modified(request, etag=f'"{version}"')) is not None:
            return unchanged

    `etag` is an entity-tag; a bare value is quoted. `last_modified` is a POSIX timestamp,
    an aware datetime or an HTTP date.
    """
    lines: list[tuple[str, str]] = []
    if etag is not None:
        if not (etag.startswith('"') or etag.startswith('W/"')):
            etag = f'"{etag}"'
        lines.append(("ETag", etag))
    if last_modified is not None:
        lines.append(("Last-Modified", _http_date(last_modified)))
    matched = conditional.not_modified(
        200,
        etag or "",
        lines,
        request.headers.get("If-None-Match") if etag is not None else None,
        request.headers.get("If-Modified-Since") if last_modified is not None else None,
    )
    return web.Response(status=304, headers=lines) if matched else None


def _http_date(value: datetime | float | str) -> str:
    if isinstance(value, str):
        if parse_http_date(value) is None:
            raise ValueError(f"not an HTTP date: {value!r}")
        return value
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("last_modified must be an aware datetime")
        value = value.timestamp()
    return formatdate(value, usegmt=True)
