"""Conversion between aiohttp responses and stored entries, and the headers we add."""

from __future__ import annotations

from email.utils import formatdate
from typing import Final

from aiohttp import web
from multidict import MutableMultiMapping

from cachekit import conditional, policy
from cachekit.entry import CachedResponse, body_etag

X_CACHE: Final = "X-Cache"
ETAG_HEADER: Final = "ETag"
#: A response header through which a handler may name tags; stripped before sending.
CACHE_TAG_HEADER: Final = "Cache-Tag"
CACHE_STATUS: Final = "Cache-Status"
CACHE_NAME: Final = "cachekit"


def storable_body(response: web.StreamResponse) -> bytes | None:
    """The complete body of a plain, unsent `web.Response`; None for anything streamed."""
    if type(response) is web.FileResponse or not isinstance(response, web.Response):
        return None
    if response.prepared:
        return None
    body = response.body
    if body is None:
        return b""
    if isinstance(body, bytes | bytearray):
        return bytes(body)
    return None


def header_lines(response: web.StreamResponse) -> list[tuple[str, str]]:
    """Every header line the handler set, in order, including `Set-Cookie` from cookies."""
    lines = list(response.headers.items())
    for morsel in response.cookies.values():
        lines.append(("Set-Cookie", morsel.OutputString()))
    return lines


def to_entry(
    status: int,
    lines: list[tuple[str, str]],
    body: bytes,
    *,
    stored_at: float,
    ttl: float,
    grace: float,
    stale_if_error: float,
    tags: tuple[str, ...],
    generation: int,
    compress: bool,
) -> CachedResponse:
    """Build the entry to store from a response the policy found storable.

    The entry always carries a strong ETag (the handler's, or a hash of the body, equal in
    every process) and the origin `Date`, so hits report when the response was made.
    """
    headers = [line for line in policy.storable_headers(lines) if line[0].lower() != "cache-tag"]
    etags = policy.header_values(headers, "ETag")
    if not etags:
        etags = [body_etag(body)]
        headers.append(("ETag", etags[0]))
    if not policy.header_values(headers, "Date"):
        headers.append(("Date", formatdate(stored_at, usegmt=True)))
    return CachedResponse(
        status=status,
        headers=tuple(headers),
        body=body,
        stored_at=stored_at,
        ttl=ttl,
        grace=grace,
        stale_if_error=stale_if_error,
        etag=etags[0],
        tags=tags,
        generation=generation,
        compress=compress,
    )


def from_entry(
    entry: CachedResponse,
    now: float,
    status: str,
    x_cache: str,
    *,
    not_modified: bool = False,
    emit_cache_control: bool = False,
) -> web.Response:
    """A new response from a stored entry: its status, header lines and body (or a 304 with
    the fields RFC 9110 §15.4.5 lists), plus `Age`, `Cache-Status` and `X-Cache`."""
    age = now - entry.stored_at  # entry.age() and entry.remaining(), without the calls
    ours: tuple[tuple[str, str], ...] = (
        ("Age", str(int(age)) if age > 0 else "0"),
        (CACHE_STATUS, f"{CACHE_NAME}; {status}; ttl={int(entry.fresh_until - now)}"),
        (X_CACHE, x_cache),
    )
    if emit_cache_control and not _declares_freshness(entry.headers):
        # The whole lifetime: with `Age` beside it, downstream sees exactly what remains.
        ours += (("Cache-Control", f"public, max-age={max(0, int(entry.ttl))}"),)
    if not_modified:
        lines = (*conditional.not_modified_lines(entry.headers), *ours)
        return web.Response(status=304, headers=lines)
    # One header multidict per hit: web.Response copies whatever it is given.
    response = web.Response(status=entry.status, body=entry.body, headers=entry.headers + ours)
    if entry.compress:
        response.enable_compression()
    return response


def _declares_freshness(stored: tuple[tuple[str, str], ...]) -> bool:
    return bool(policy.header_values(stored, "Cache-Control")) or bool(
        policy.header_values(stored, "Expires")
    )


def add_freshness(
    headers: MutableMultiMapping[str], stored: tuple[tuple[str, str], ...], lifetime: int
) -> None:
    """Tell browsers and CDNs how long the copy stays fresh, unless the handler did."""
    if not _declares_freshness(stored):
        headers["Cache-Control"] = f"public, max-age={max(0, lifetime)}"


def mark(headers: MutableMultiMapping[str] | web.StreamResponse, x_cache: str, status: str) -> None:
    """Label a response the handler made (or an HTTPException's headers) on its way out:
    add `X-Cache` and `Cache-Status`, strip the `Cache-Tag` lines meant for the cache."""
    target = headers.headers if isinstance(headers, web.StreamResponse) else headers
    target[X_CACHE] = x_cache
    target.add(CACHE_STATUS, f"{CACHE_NAME}; {status}")
    target.popall(CACHE_TAG_HEADER, None)
