"""Conversion between aiohttp responses and stored entries, and the headers we add."""

from __future__ import annotations

from typing import Final

from aiohttp import web
from multidict import CIMultiDict

from cachekit import policy
from cachekit.entry import CachedResponse, body_etag

X_CACHE: Final = "X-Cache"
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
    """Build the entry to store from a response the policy found storable."""
    headers = tuple(policy.storable_headers(lines))
    etags = policy.header_values(headers, "ETag")
    return CachedResponse(
        status=status,
        headers=headers,
        body=body,
        stored_at=stored_at,
        ttl=ttl,
        grace=grace,
        stale_if_error=stale_if_error,
        etag=etags[0] if etags else body_etag(body),
        tags=tags,
        generation=generation,
        compress=compress,
    )


def from_entry(entry: CachedResponse, now: float, status: str, x_cache: str) -> web.Response:
    """A new response carrying the stored status, header lines and body, plus `Age`,
    `Cache-Status` (`status` is its detail, e.g. `hit`) and `X-Cache`."""
    headers = CIMultiDict(entry.headers)
    headers["Age"] = str(entry.age(now))
    headers.add(CACHE_STATUS, f"{CACHE_NAME}; {status}; ttl={int(entry.remaining(now))}")
    headers[X_CACHE] = x_cache
    response = web.Response(status=entry.status, body=entry.body, headers=headers)
    if entry.compress:
        response.enable_compression()
    return response


def mark(headers: CIMultiDict[str] | web.StreamResponse, x_cache: str, status: str) -> None:
    """Add `X-Cache` and `Cache-Status` to a response (or an HTTPException's headers)."""
    target = headers.headers if isinstance(headers, web.StreamResponse) else headers
    target[X_CACHE] = x_cache
    target.add(CACHE_STATUS, f"{CACHE_NAME}; {status}")
