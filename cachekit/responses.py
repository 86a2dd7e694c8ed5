"""Conversion between aiohttp responses and stored entries, and the headers we add."""

from __future__ import annotations

from email.utils import formatdate
from http import HTTPStatus
from itertools import chain
from typing import Final

from aiohttp import hdrs, web
from aiohttp.http import SERVER_SOFTWARE
from multidict import CIMultiDict, MutableMultiMapping, istr

from cachekit import conditional, directives
from cachekit.entry import CachedResponse, body_etag, header_name
from cachekit.hit_response import HitResponse, Wire, build_wire, header_version

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
    headers = [
        line for line in directives.storable_headers(lines) if line[0].lower() != "cache-tag"
    ]
    etags = directives.header_values(headers, "ETag")
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
    age = int(now - entry.stored_at)  # entry.age() and entry.remaining(), without the calls
    probe = (age, int(entry.fresh_until - now), status, x_cache, emit_cache_control, entry.ttl)
    if not_modified:
        lines = (*conditional.not_modified_lines(entry.headers), *_ours(entry.headers, probe))
        return web.Response(status=304, headers=lines)
    # The header block changes at most once a second: hits within that second share one
    # multidict (each response gets a copy), instead of formatting and hashing every line.
    # Keyed by the stored lines, so that each newly decoded copy of a Redis entry finds it.
    stored = entry.headers
    memo = _BLOCKS.get(stored)
    if memo is not None and memo[0] == probe:
        headers: CIMultiDict[str] = memo[1]
        wire = memo[2]
    else:
        headers, wire = _header_block(stored, probe, entry)
    template = _RESPONSE_TEMPLATE
    if entry.compress or template is None:
        response = web.Response(status=entry.status, body=entry.body, headers=headers)
        if entry.compress:
            response.enable_compression()
        return response
    return _new_response(entry.status, entry.body, headers, template, wire)


def _new_response(
    status: int,
    body: bytes,
    headers: CIMultiDict[str],
    template: dict[str, object],
    wire: Wire | None = None,
) -> web.Response:
    """`HitResponse(status=status, body=body, headers=headers)` without running its
    constructor's argument checks (half the cost of a hit): the instance gets the
    attributes the constructor would set, `template` holding those that never vary; with
    `wire`, the prebuilt bytes of `headers` (see `hit_response`)."""
    response: web.Response = _object_new(HitResponse)
    state = template.copy()
    state["_state"] = {}
    state["_headers"] = copy = headers.copy()
    state["_status"] = status
    state["_reason"] = _REASONS.get(status, "")
    state["_body"] = body
    if wire is not None:
        state["_wire"] = wire
        state["_wire_version"] = header_version(copy)
    response.__dict__ = state
    return response


_object_new = object.__new__
_REASONS: Final = {int(status): status.phrase for status in HTTPStatus}
_PER_RESPONSE: Final = frozenset({"_state", "_headers", "_status", "_reason", "_body"})
_IMMUTABLE: Final = (type(None), bool, int, float, str, bytes)


def fast_response_template() -> dict[str, object] | None:
    """The constant attributes `web.Response.__init__` sets, if `_new_response` builds
    exactly what this aiohttp's constructor builds (as a `HitResponse`); None otherwise.

    Checked once at import: every attribute beyond the per-response ones must be an
    immutable constant (a per-instance list or cookie jar would be shared between
    responses), and the instances of both must be equal for a few probes. Any difference
    — a new aiohttp release that sets other fields — turns the shortcut off.
    """
    try:
        fields = vars(web.Response(status=200, body=b"", headers=CIMultiDict()))
        template = {name: value for name, value in fields.items() if name not in _PER_RESPONSE}
        if not fields.keys() >= _PER_RESPONSE or not all(
            type(value) in _IMMUTABLE for value in template.values()
        ):
            return None
        for status, body in ((200, b"probe"), (404, b""), (203, b"x" * 100), (599, b"?")):
            headers = CIMultiDict([("Content-Type", "text/plain"), ("X-A", "1"), ("x-a", "2")])
            built = HitResponse(status=status, body=body, headers=headers)
            fast = _new_response(status, body, headers, template)
            if vars(built) != vars(fast) or type(built) is not type(fast):
                return None
    except Exception:  # any surprise means: use the constructor
        return None
    return template


#: None when the shortcut is off (see `fast_response_template`).
_RESPONSE_TEMPLATE: Final = fast_response_template()


def _header_block(
    stored: tuple[tuple[str, str], ...], probe: Probe, entry: CachedResponse
) -> tuple[CIMultiDict[str], Wire | None]:
    # Stored and decoded entries name their lines with istr (`entry.header_name`): aiohttp
    # iterates the lines to send them, and a CIMultiDict turns every plain-str name into a
    # new istr on each iteration.
    headers = CIMultiDict(stored)
    headers.extend(_ours(stored, probe))
    if hdrs.SERVER not in headers:
        # What `prepare` would add: set here, it leaves the block as `hit_response` sends it.
        headers.add(hdrs.SERVER, SERVER_SOFTWARE)
    wire = None
    if len(stored) <= BLOCK_MAX_LINES and sum(map(len, chain(*stored))) <= BLOCK_MAX_BYTES:
        # Worth its bytes only when kept: for this entry's status and body length (another
        # entry with equal lines but another status or length finds it and falls back).
        status = entry.status
        wire = build_wire(status, _REASONS.get(status, ""), headers, len(entry.body))
        if len(_BLOCKS) >= BLOCK_ENTRIES:
            _BLOCKS.clear()
        _BLOCKS[stored] = (probe, headers, wire)
    return headers, wire


#: (age, seconds of freshness left, Cache-Status label, X-Cache, emit Cache-Control, ttl):
#: everything besides the stored lines that the header block of a hit depends on.
Probe = tuple[int, int, str, str, bool, float]

#: Header blocks of recently hit entries, by their stored lines (equal lines, equal probe:
#: equal block), with their bytes on the wire. Bounded: at most BLOCK_ENTRIES blocks of
#: entries with at most BLOCK_MAX_LINES stored lines of at most BLOCK_MAX_BYTES in all
#: (kept twice: the multidict and the wire bytes; ~1.5 KB per block for typical headers,
#: ~6 MB in all, 20 MB at worst) per process, whatever the store holds; an entry's own
#: memory is untouched.
BLOCK_ENTRIES: Final = 4096
BLOCK_MAX_LINES: Final = 24
BLOCK_MAX_BYTES: Final = 2048
_BLOCKS: Final[dict[tuple[tuple[str, str], ...], tuple[Probe, CIMultiDict[str], Wire | None]]] = {}


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
