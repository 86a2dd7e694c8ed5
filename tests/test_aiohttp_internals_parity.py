"""The aiohttp shortcuts send exactly the bytes aiohttp's plain path sends, for any hit.

A property test over hostile input: stored header lines (odd case, repeats, latin-1 and other
non-ASCII values, control characters, many and long lines), statuses with and without a
body, empty and large bodies, GET and HEAD, HTTP/1.1 and 1.0, keep-alive and closing
connections, pipelined requests, compression, and middlewares and `on_response_prepare`
receivers that change headers, cookies, status, body, chunking or compression. Each case
is answered by aiohttp's real server protocol (over an in-memory transport, see
`tests/memory_http.py`) with each shortcut on and off; the bytes written must be equal.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from unittest import mock

import pytest
from aiohttp import http_writer, web
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from cachekit import aiohttp_internals, memo, responses
from cachekit.entry import CachedResponse, header_name
from tests.memory_http import serve

NOW = 1_800_000_000.0
FIXED_DATE = "Fri, 15 Jan 2027 08:00:00 GMT"
#: (wire, template): every combination of the two shortcuts.
MODES = ((True, True), (False, False), (True, False), (False, True))

# ---------------------------------------------------------------- hostile input

KNOWN_NAMES = (
    "Content-Type", "Date", "Server", "ETag", "Content-Length", "Transfer-Encoding",
    "Connection", "Set-Cookie", "Vary", "Cache-Control", "Expires", "Age", "X-Cache",
    "Cache-Status", "Content-Encoding", "Keep-Alive", "Last-Modified", "Link",
)  # fmt: skip


def _any_case(name: str) -> st.SearchStrategy[str]:
    return st.sampled_from([name, name.lower(), name.upper(), name.swapcase()])


token_names = st.one_of(
    st.sampled_from(KNOWN_NAMES).flatmap(_any_case),
    st.text("abcdefghijklmnopqrstuvwxyzABCXYZ0123456789-_!#$%&'*+.^`|~", min_size=1, max_size=20),
)
names = st.one_of(token_names, st.text(max_size=8))  # the latter: even what aiohttp refuses
printable = st.characters(blacklist_categories=("Cc", "Cs"))
printable_values = st.one_of(
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=40),  # latin-1
    st.text(printable, max_size=20),  # beyond latin-1
    st.sampled_from(["", " ", "text/html; charset=utf-8", "gzip", "chunked", "close"]),
    st.integers(0, 10**6).map(str),  # a number, for Content-Length
    st.integers(1, 9000).map(lambda n: "v" * n),
)
values = st.one_of(printable_values, st.text(max_size=20))  # the latter: control characters
lines = st.one_of(
    st.lists(st.tuples(token_names, printable_values), max_size=40),
    st.lists(st.tuples(token_names, printable_values), max_size=40),
    st.lists(st.tuples(names, values), max_size=40),
)
bodies = st.one_of(
    st.binary(min_size=1, max_size=300),
    st.binary(min_size=1, max_size=300),
    st.sampled_from([b"", b"0\r\n\r\n", b"HTTP/1.1 200 OK\r\n"]),
    st.integers(1, 300_000).map(lambda n: b"b" * n),
)
statuses = st.one_of(
    st.integers(200, 599), st.sampled_from([100, 101, 103, 199, 204, 205, 304, 600, 999])
)


#: Bodies of plain hits: an empty one now and then (no shortcut for it).
plain_bodies = st.one_of(*[bodies.filter(bool)] * 5, st.just(b""))
#: True one time in ten.
rarely = st.sampled_from([False] * 9 + [True])


@st.composite
def entries(draw: st.DrawFn, plain: bool = False) -> CachedResponse:
    """Any entry; with `plain`, one whose block gets prebuilt bytes (a status with a body,
    a `Content-Type` and a `Date`, printable lines, not compressed): where the shortcut
    applies unless something changes the response."""
    if plain:
        stored = draw(st.lists(st.tuples(token_names, printable_values), max_size=12))
        stored = [(name, value) for name, value in stored if name.lower() != "content-length"]
        # Now and then a line that keeps the shortcut from being prepared at all.
        stored += draw(
            st.sampled_from([[]] * 8 + [[("Content-Length", "3")], [("Transfer-Encoding", "x")]])
        )
    else:
        stored = draw(lines)
    # A usual hit's block: a Content-Type and a Date (often), names as shared istr (mostly).
    if plain or draw(st.sampled_from([True, True, True, False])):
        stored = [("Content-Type", "application/json"), ("Date", FIXED_DATE), *stored]
    as_istr = draw(st.booleans())
    headers = tuple((header_name(name) if as_istr else name, value) for name, value in stored)
    status = draw(st.integers(200, 599).filter(lambda code: code not in (204, 304)))
    return CachedResponse(
        status=status if plain else draw(statuses),
        headers=headers,
        body=draw(plain_bodies if plain else bodies),
        stored_at=NOW - draw(st.floats(0, 1e6)),
        ttl=draw(st.floats(0, 1e7)),
        etag='"e"',
        compress=False if plain else draw(rarely),
    )


CHANGE_KINDS = (
    "set", "add", "delete", "same value", "clear", "status", "status and reason", "body",
    "text body", "text", "cookie", "delete cookie", "compress", "chunked", "close",
    "content type", "raise",
)  # fmt: skip
Change = tuple[str, str, str, int]
one_change = st.tuples(st.sampled_from(CHANGE_KINDS), names, values, st.integers(0, 999))
changes = st.one_of(
    st.just([]),
    st.just([]),
    one_change.map(lambda change: [change]),
    one_change.map(lambda change: [change]),
    st.lists(one_change, max_size=3),
)


def _apply(response: web.StreamResponse, todo: list[Change]) -> None:
    for kind, name, value, number in todo:
        try:
            _change(response, kind, name, value, number)
        except Exception as exc:
            if kind == "raise":
                raise
            event(f"change {kind} raised {type(exc).__name__}")


def _change(response: Any, kind: str, name: str, value: str, number: int) -> None:
    headers = response.headers
    if kind == "set":
        headers[name] = value
    elif kind == "add":
        headers.add(name, value)
    elif kind == "delete":
        headers.popall(name, None)
    elif kind == "same value" and name in headers:
        headers[name] = headers[name]
    elif kind == "clear":
        headers.clear()
    elif kind == "status":
        response.set_status(200 + number % 400)  # now and then the status it had
    elif kind == "status and reason":
        response.set_status(response.status, "Custom")
    elif kind == "body":
        response.body = _other_body(response.body, number)
    elif kind == "text body":
        response.body = response.body.decode("latin-1")  # a payload, not bytes
    elif kind == "text":
        response.text = value
    elif kind == "cookie":
        response.set_cookie("c" + str(len(value)), "v")
    elif kind == "delete cookie":
        response.del_cookie("gone")
    elif kind == "compress":
        response.enable_compression()
    elif kind == "chunked":
        response.enable_chunked_encoding()
    elif kind == "close":
        response.force_close()
    elif kind == "content type":
        response.content_type = "text/plain"
    elif kind == "raise" and number % 4 == 0:
        raise RuntimeError("a middleware failed")


def _other_body(body: bytes, number: int) -> bytes | bytearray:
    choice = number % 6
    if choice == 0:
        return bytes(reversed(body))  # same length
    if choice == 1:
        return body + b"x"
    if choice == 2:
        return body[:-1]
    if choice == 3:
        return b""
    if choice == 4:
        return bytearray(body)
    return body  # the same object


@dataclass
class Case:
    entry: CachedResponse
    not_modified: bool
    emit_cache_control: bool
    label: tuple[str, str]
    in_middleware: list[Change]
    in_signal: list[Change]
    request: bytes


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from(["GET", "GET", "GET", "HEAD"]))
    version = draw(st.sampled_from(["1.1", "1.1", "1.1", "1.0"]))
    extra = draw(
        st.just([])
        | st.just([])
        | st.lists(
            st.sampled_from(
                [
                    "Connection: close",
                    "Connection: keep-alive",
                    "Accept-Encoding: gzip",
                    "Accept-Encoding: deflate",
                    "Accept-Encoding: gzip, deflate, br",
                    "Accept-Encoding: identity",
                ]
            ),
            max_size=2,
            unique=True,
        )
    )
    one = f"{method} /hit HTTP/{version}\r\nHost: t\r\n" + "".join(f"{x}\r\n" for x in extra)
    count = draw(st.integers(1, 2))  # two: pipelined on one connection
    return (one + "\r\n").encode() * count


cases = st.builds(
    Case,
    entry=entries(),
    not_modified=rarely,
    emit_cache_control=st.booleans(),
    label=st.sampled_from([("hit", "HIT"), ("hit; fwd=stale; ttl=-3", "STALE")]),
    in_middleware=changes,
    in_signal=changes,
    request=requests(),
)
# ---------------------------------------------------------------- one case, every mode

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _app(case: Case, answered: list[web.StreamResponse]) -> web.Application:
    @web.middleware
    async def changing(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        _apply(response, case.in_middleware)
        return response

    async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
        _apply(response, case.in_signal)

    async def hit(request: web.Request) -> web.StreamResponse:
        status, x_cache = case.label
        response = responses.from_entry(
            case.entry,
            NOW,
            status,
            x_cache,
            not_modified=case.not_modified,
            emit_cache_control=case.emit_cache_control,
        )
        answered.append(response)
        return response

    app = web.Application(middlewares=[changing] if case.in_middleware else [])
    app.router.add_get("/hit", hit)
    if case.in_signal:
        app.on_response_prepare.append(on_prepare)
    return app


def _sent(case: Case, wire: bool, template: bool) -> tuple[bytes, int, list[Any]]:
    """The bytes written for `case` with the shortcuts as given, how many header blocks
    aiohttp serialised, and the responses the handler made."""
    for kept in memo.registered():
        kept.clear()
    serialised = [0]
    original = http_writer._serialize_headers

    def counting(status_line: str, headers: Any) -> bytes:
        serialised[0] += 1
        return original(status_line, headers)

    answered: list[Any] = []
    with (
        mock.patch.object(aiohttp_internals, "WIRE_WORKS", wire),
        mock.patch.object(
            aiohttp_internals,
            "RESPONSE_TEMPLATE",
            aiohttp_internals.RESPONSE_TEMPLATE if template else None,
        ),
        mock.patch.object(http_writer, "_serialize_headers", counting),
        mock.patch("aiohttp.web_response.rfc822_formatted_time", lambda: FIXED_DATE),
    ):
        sent = asyncio.run(serve(_app(case, answered), case.request))
    return sent, serialised[0], answered


def _untouched(case: Case) -> bool:
    request = case.request
    return (
        not case.in_middleware
        and not case.in_signal
        and not case.entry.compress
        and not case.not_modified
        and b"HTTP/1.1" in request
        and b"Connection: close" not in request
    )


def _check(case: Case) -> None:
    assert aiohttp_internals.WIRE_WORKS and aiohttp_internals.RESPONSE_TEMPLATE is not None
    (fast, serialised, answered), *others = [_sent(case, *mode) for mode in MODES]
    for mode, (other, _, _) in zip(MODES[1:], others, strict=True):
        assert fast == other, f"wire, template = {mode}"
    wired = [response for response in answered if getattr(response, "_wire", None) is not None]
    if wired and _untouched(case):
        # Nothing changed these responses: aiohttp serialised no header block for them.
        assert serialised == len(answered) - len(wired)
    event("shortcut taken" if len(answered) > serialised else "aiohttp serialised every block")


EXAMPLES = settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@EXAMPLES
@given(case=cases)
def test_any_hit_is_sent_as_aiohttp_sends_it(case: Case) -> None:
    _check(case)


@pytest.mark.parametrize("place", ["middleware", "signal"])
@pytest.mark.parametrize("kind", ["none", *CHANGE_KINDS])
@settings(EXAMPLES, max_examples=25)
@given(
    entry=entries(plain=True),
    request=requests(),
    emit_cache_control=st.booleans(),
    name=names,
    value=values,
    number=st.integers(0, 999),
)
def test_a_plain_hit_changed_in_any_one_way_is_sent_as_aiohttp_sends_it(
    place: str,
    kind: str,
    entry: CachedResponse,
    request: bytes,
    emit_cache_control: bool,
    name: str,
    value: str,
    number: int,
) -> None:
    # Every way of changing a response, each on its own, against hits the shortcut serves.
    change = [] if kind == "none" else [(kind, name, value, number)]
    in_middleware, in_signal = (change, []) if place == "middleware" else ([], change)
    label = ("hit", "HIT")
    _check(Case(entry, False, emit_cache_control, label, in_middleware, in_signal, request))


def test_the_harness_sees_what_a_socket_sees() -> None:
    entry = CachedResponse(
        status=200,
        headers=(("Content-Type", "a/b"), ("Date", FIXED_DATE)),
        body=b"body",
        stored_at=NOW,
        ttl=60.0,
    )
    case = Case(
        entry, False, False, ("hit", "HIT"), [], [], b"GET /hit HTTP/1.1\r\nHost: t\r\n\r\n"
    )
    sent, serialised, _ = _sent(case, True, True)
    assert serialised == 0
    assert sent.startswith(b"HTTP/1.1 200 OK\r\nContent-Type: a/b\r\n")
    assert sent.endswith(b"Content-Length: 4\r\n\r\nbody")
    assert sent == _sent(case, False, False)[0]


@pytest.fixture(autouse=True)
def _empty_memos() -> None:
    for kept in memo.registered():
        kept.clear()
