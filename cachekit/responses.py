"""Conversion between aiohttp responses and stored entries, and the headers we add."""

from __future__ import annotations

from collections.abc import Sequence
from email.utils import formatdate
from sys import getsizeof
from typing import Final

from aiohttp import hdrs, web
from aiohttp.http import SERVER_SOFTWARE
from multidict import CIMultiDict, MutableMultiMapping, istr

from cachekit import conditional, directives, encodings
from cachekit.aiohttp_internals import Wire, build_wire, new_hit_response
from cachekit.entry import CachedResponse, body_etag, header_name, lines_size, strings_size
from cachekit.memo import BoundedMemo
from cachekit.ranges import ByteRange, Unsatisfiable

X_CACHE: Final = "X-Cache"
ETAG_HEADER: Final = "ETag"
#: A response header through which a handler may name tags; stripped before sending.
CACHE_TAG_HEADER: Final = "Cache-Tag"
#: The surrogate-key line a fill put on its response (`surrogate_key_header`), kept by `mark`.
SURROGATE_LINE: Final = web.ResponseKey("cachekit_surrogate_line", tuple[str, str])
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
    added: Sequence[tuple[str, str]] = (),
    no_cache: bool = False,
    encoded: tuple[tuple[str, bytes], ...] = (),
) -> CachedResponse:
    """Build the entry to store from a response the policy found storable.

    The entry always carries a strong ETag (the handler's, or a hash of the body, equal in
    every process) and the origin `Date`, so hits report when the response was made.
    `added`: lines of cachekit's own (the surrogate keys), kept even if named `Cache-Tag`.
    """
    headers = [
        line for line in directives.storable_headers(lines) if line[0].lower() != "cache-tag"
    ]
    headers.extend(added)
    etags = directives.header_values(headers, "ETag")
    handler_etag = bool(etags)
    if not etags:
        etags = [body_etag(body)]
        headers.append(("ETag", etags[0]))
    if not directives.header_values(headers, "Date"):
        headers.append(("Date", formatdate(stored_at, usegmt=True)))
    return CachedResponse(
        status=status,
        headers=tuple((header_name(name), value) for name, value in headers),
        body=body,
        stored_at=stored_at,
        ttl=ttl,
        grace=grace,
        stale_if_error=stale_if_error,
        etag=etags[0],
        tags=tags,
        generation=generation,
        compress=compress,
        handler_etag=handler_etag,
        no_cache=no_cache,
        encoded=encoded,
    )


def from_entry(  # noqa: PLR0917  (positional: a keyword call costs more on every hit)
    entry: CachedResponse,
    now: float,
    status: str,
    x_cache: str,
    not_modified: bool = False,
    emit_cache_control: bool = False,
    coding: str | None = None,
) -> web.Response:
    """A new response from a stored entry: its status, header lines and body (or a 304 with
    the fields RFC 9110 §15.4.5 lists), plus `Age`, `Cache-Status` and `X-Cache`. `coding`:
    one of the entry's content codings to send (None: the identity body)."""
    # entry.age() and entry.remaining(), without the calls
    probe = (
        int(now - entry.stored_at),
        int(entry.fresh_until - now),
        status,
        x_cache,
        emit_cache_control,
        entry.ttl,
    )
    stored = entry.headers
    encoded = entry.encoded
    if not_modified:
        lines = representation_lines(entry, coding) if encoded else stored
        ours = _ours(lines, probe)
        return web.Response(status=304, headers=(*conditional.not_modified_lines(lines), *ours))
    # The header block changes at most once a second: hits within that second share one
    # multidict (each response gets a copy), instead of formatting and hashing every line.
    # Keyed by the stored lines (and the coding sent, for an entry that has codings), so
    # that each newly decoded copy of a Redis entry finds it.
    memo_key: _BlockKey = (stored, coding or "") if encoded else stored
    body = entry.body if coding is None else _coded(encoded, coding)  # `coded_body`, inline
    known = _BLOCKS.get(memo_key)
    if known is not None and known[0] == probe:
        _, headers, wire = known
    else:
        lines = representation_lines(entry, coding) if encoded else stored
        headers, wire = _header_block(memo_key, lines, probe, entry.status, len(body))
    if entry.compress:
        response = web.Response(status=entry.status, body=body, headers=headers)
        response.enable_compression()
        return response
    return new_hit_response(entry.status, body, headers, wire)


def coded_body(entry: CachedResponse, coding: str | None) -> bytes:
    """The bytes an entry sends in `coding` (None: its identity body)."""
    return entry.body if coding is None else _coded(entry.encoded, coding)


def _coded(encoded: tuple[tuple[str, bytes], ...], coding: str) -> bytes:
    for name, data in encoded:
        if name == coding:
            return data
    raise KeyError(coding)


def representation_lines(entry: CachedResponse, coding: str | None) -> tuple[tuple[str, str], ...]:
    """The header lines of the representation sent from an entry that has content codings:
    `Vary: Accept-Encoding` added (every answer from it depends on that header), and for a
    coding its `Content-Encoding` and its own ETag (RFC 9110 §8.8.3)."""
    lines = list(entry.headers)
    if coding is not None:
        etag = encodings.encoded_etag(entry.etag, coding)
        lines = [(name, etag) if name.lower() == "etag" else (name, value) for name, value in lines]
        lines.append((_CONTENT_ENCODING, coding))
    varies = directives.vary_names(directives.header_values(lines, "Vary"))
    if "accept-encoding" not in varies and "*" not in varies:
        lines.append((_VARY, "Accept-Encoding"))
    return tuple(lines)


_CONTENT_ENCODING: Final = hdrs.CONTENT_ENCODING
_VARY: Final = hdrs.VARY


def part_from_entry(
    entry: CachedResponse,
    part: ByteRange | Unsatisfiable,
    now: float,
    status: str,
    x_cache: str,
    *,
    coding: str | None = None,
) -> web.Response:
    """A `206 Partial Content` with `part` of a stored 200 (of the representation in
    `coding`: its header lines, the part's `Content-Range`), or a `416` naming the
    representation's length (RFC 9110 §15.3.7, §15.5.17)."""
    probe = (int(now - entry.stored_at), int(entry.fresh_until - now), status, x_cache, False, 0.0)
    stored = representation_lines(entry, coding) if entry.encoded else entry.headers
    if isinstance(part, Unsatisfiable):
        lines = ((hdrs.CONTENT_RANGE, part.content_range), *_ours(stored, probe))
        return web.Response(status=416, headers=lines)
    body = coded_body(entry, coding)
    headers = CIMultiDict(stored)
    headers.extend(_ours(stored, probe))
    headers[hdrs.CONTENT_RANGE] = part.content_range
    return web.Response(status=206, body=body[part.first : part.last + 1], headers=headers)


def _header_block(
    memo_key: _BlockKey,
    stored: tuple[tuple[str, str], ...],
    probe: Probe,
    status_code: int,
    body_length: int,
) -> tuple[CIMultiDict[str], Wire | None]:
    # Stored and decoded entries name their lines with istr (`entry.header_name`): aiohttp
    # iterates the lines to send them, and a CIMultiDict turns every plain-str name into a
    # new istr on each iteration.
    headers = CIMultiDict(stored)
    ours = _ours(stored, probe)
    headers.extend(ours)
    if hdrs.SERVER not in headers:
        # What `prepare` would add: set here, it leaves the block as the prebuilt bytes
        # (`aiohttp_internals.Wire`) send it, with the shortcut on or off.
        headers.add(hdrs.SERVER, SERVER_SOFTWARE)
    # For this status and body length: another entry with equal lines but another status
    # or length finds the block and sends it the ordinary way.
    wire = build_wire(status_code, headers, body_length)
    _BLOCKS.put(memo_key, (probe, headers, wire), _block_size(stored, headers, ours, wire))
    return headers, wire


#: (age, seconds of freshness left, Cache-Status label, X-Cache, emit Cache-Control, ttl):
#: everything besides the stored lines that the header block of a hit depends on.
Probe = tuple[int, int, str, str, bool, float]

#: Header blocks of recently hit entries, by their stored lines (equal lines, equal probe:
#: equal block), with their bytes on the wire.
BLOCKS_MAX_BYTES: Final = 4 << 20
_Lines = tuple[tuple[str, str], ...]
#: The stored lines; or, for an entry with content codings, the lines and the coding sent.
_BlockKey = _Lines | tuple[_Lines, str]
_Block = tuple[Probe, CIMultiDict[str], Wire | None]
_BLOCKS: Final[BoundedMemo[_BlockKey, _Block]] = BoundedMemo("header blocks", BLOCKS_MAX_BYTES)

# Per block: the (probe, headers, wire) tuple, the probe with its two ints and float, and
# the wire (a tuple) with its ints, `Content-Length` text and bytes object.
_BLOCK_FIXED: Final = (
    getsizeof((0, 0, 0)) + getsizeof((0, 0, 0, 0, 0, 0)) + 2 * getsizeof(1 << 20) + getsizeof(0.0)
)
_WIRE_FIXED: Final = (
    getsizeof(Wire(0, "", 0, "", b"")) + getsizeof(1 << 20) + getsizeof("1234567") + getsizeof(b"")
)


def _block_size(
    stored: tuple[tuple[str, str], ...],
    headers: CIMultiDict[str],
    ours: tuple[tuple[str, str], ...],
    wire: Wire | None,
) -> int:
    # `ours` names are shared constants; their values are the block's own.
    size = _BLOCK_FIXED + lines_size(stored) + getsizeof(headers)
    size += strings_size(tuple(value for _, value in ours))
    if wire is not None:
        size += _WIRE_FIXED + len(wire.data)
    return size


def _ours(stored: tuple[tuple[str, str], ...], probe: Probe) -> tuple[tuple[str, str], ...]:
    age, remaining, status, x_cache, emit_cache_control, ttl = probe
    ours: tuple[tuple[str, str], ...] = (
        (_AGE, str(age) if age > 0 else "0"),
        (_CACHE_STATUS, f"{CACHE_NAME}; {status}; ttl={remaining}"),
        (_X_CACHE, x_cache),
    )
    if emit_cache_control and not _declares_freshness(stored):
        # The whole lifetime: with `Age` beside it, downstream sees exactly what remains.
        ours += ((hdrs.CACHE_CONTROL, f"public, max-age={max(0, int(ttl))}"),)
    return ours


_AGE: Final = hdrs.AGE
_CACHE_STATUS: Final = istr(CACHE_STATUS)
_X_CACHE: Final = istr(X_CACHE)


def _declares_freshness(stored: tuple[tuple[str, str], ...]) -> bool:
    return bool(directives.header_values(stored, "Cache-Control")) or bool(
        directives.header_values(stored, "Expires")
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
    if isinstance(headers, web.StreamResponse):
        surrogate = headers.get(SURROGATE_LINE)
        if surrogate is not None:  # ours, which may be named Cache-Tag too (Cloudflare)
            target[surrogate[0]] = surrogate[1]
