"""aiohttp's internals in one module: the shortcuts are on for this aiohttp, off for one that
differs, and hits over real sockets are sent exactly as aiohttp's own path sends them.

(The property tests over hostile input: tests/test_aiohttp_internals_parity.py.)
"""

from __future__ import annotations

import asyncio
import gzip
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import http_writer, web
from aiohttp.test_utils import TestClient
from multidict import CIMultiDict

from cachekit import aiohttp_internals, cached, memo, responses, setup_cache
from cachekit.entry import CachedResponse
from tests.apps import settings

Client = TestClient[web.Request, web.Application]
Change = Callable[[web.StreamResponse], None]
BODY = b'{"items": [1, 2, 3]}' * 40


@pytest.fixture(autouse=True)
def _empty_memos() -> None:
    # A header block kept by an earlier test (with the shortcut off) would be reused.
    for kept in memo.registered():
        kept.clear()


# ---------------------------------------------------------------- a raw keep-alive client


async def _exchange(port: int, request: bytes) -> bytes:
    """Send one request on a fresh connection and read one whole response (by its
    Content-Length or chunked framing, or to EOF), without closing first."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        pairs = (line.split(":", 1) for line in lines[1:] if ":" in line)
        fields = {name.lower(): value.strip() for name, value in pairs}
        if request.startswith(b"HEAD"):
            return head
        if "content-length" in fields:
            return head + await reader.readexactly(int(fields["content-length"]))
        if fields.get("transfer-encoding") == "chunked":
            body = b""
            while not body.endswith(b"0\r\n\r\n"):
                body += await reader.read(65536)
            return head + body
        return head + await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()


def _get(path: str = "/page", version: str = "1.1", extra: str = "") -> bytes:
    return f"GET {path} HTTP/{version}\r\nHost: t\r\n{extra}\r\n".encode()


# ---------------------------------------------------------------- the app


def _app(change: Change | None = None, prepare: Change | None = None) -> web.Application:
    middlewares = []
    if change is not None:

        @web.middleware
        async def changing(
            request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
        ) -> web.StreamResponse:
            response = await handler(request)
            change(response)
            return response

        middlewares.append(changing)
    app = web.Application(middlewares=middlewares)
    routes = web.RouteTableDef()

    @routes.get("/page")
    @cached(ttl=600)
    async def page(request: web.Request) -> web.Response:
        return web.Response(body=BODY, content_type="application/json")

    app.add_routes(routes)
    if prepare is not None:

        async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
            prepare(response)

        app.on_response_prepare.append(on_prepare)
    setup_cache(app, settings()).clock = lambda: 1_800_000_000.0  # same Age, same ttl
    return app


def _serialisations(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Status lines aiohttp serialises from here on (the shortcut serialises none)."""
    seen: list[str] = []
    original = http_writer._serialize_headers

    def counting(status_line: str, headers: Any) -> bytes:
        seen.append(status_line)
        return original(status_line, headers)

    monkeypatch.setattr(http_writer, "_serialize_headers", counting)
    return seen


async def _hit_both_ways(
    aiohttp_client: Any, monkeypatch: pytest.MonkeyPatch, app: web.Application, request: bytes
) -> tuple[bytes, bytes, list[str]]:
    """The same hit with the shortcuts and without them, and what the first serialised."""
    client: Client = await aiohttp_client(app)
    port = client.port
    assert port is not None
    await _exchange(port, _get())  # fill
    responses._BLOCKS.clear()
    seen = _serialisations(monkeypatch)
    fast = await _exchange(port, request)
    serialised_by_fast = list(seen)
    monkeypatch.setattr(aiohttp_internals, "WIRE_WORKS", False)
    monkeypatch.setattr(aiohttp_internals, "RESPONSE_TEMPLATE", None)
    responses._BLOCKS.clear()
    slow = await _exchange(port, request)
    return fast, slow, serialised_by_fast


# ---------------------------------------------------------------- tests


def test_the_shortcuts_are_on_for_this_aiohttp() -> None:
    # If a new aiohttp release turns them off, hits still work (the constructor runs and
    # aiohttp serialises) but cost more: this test says so instead of a benchmark.
    assert aiohttp_internals.WIRE_WORKS
    assert aiohttp_internals.RESPONSE_TEMPLATE is not None
    assert aiohttp_internals.response_template() == aiohttp_internals.RESPONSE_TEMPLATE


async def test_a_plain_hit_sends_prebuilt_bytes_identical_to_aiohttps(
    aiohttp_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast, slow, serialised = await _hit_both_ways(aiohttp_client, monkeypatch, _app(), _get())
    assert serialised == []  # the shortcut was taken
    assert fast == slow
    assert b"X-Cache: HIT\r\n" in fast and f"Content-Length: {len(BODY)}\r\n".encode() in fast
    assert fast.endswith(BODY)


def _set_header(response: web.StreamResponse) -> None:
    response.headers["X-Frame-Options"] = "DENY"


def _set_status(response: web.StreamResponse) -> None:
    response.set_status(299, "Custom")


def _longer_body(response: web.StreamResponse) -> None:
    assert isinstance(response, web.Response)
    response.body = BODY + b"tail"


def _same_length_body(response: web.StreamResponse) -> None:
    assert isinstance(response, web.Response)
    response.body = BODY.upper()


def _cookie(response: web.StreamResponse) -> None:
    response.set_cookie("seen", "1")


def _compress(response: web.StreamResponse) -> None:
    response.enable_compression()


def _chunked(response: web.StreamResponse) -> None:
    response.enable_chunked_encoding()


def _drop_server(response: web.StreamResponse) -> None:
    response.headers.popall("Server", None)


CHANGES: dict[str, tuple[Change | None, Change | None, bytes, bytes]] = {
    # name: (middleware change, on_response_prepare change, request, expected in the answer)
    "middleware header": (_set_header, None, _get(), b"X-Frame-Options: DENY\r\n"),
    "signal header": (None, _set_header, _get(), b"X-Frame-Options: DENY\r\n"),
    "middleware status": (_set_status, None, _get(), b"HTTP/1.1 299 Custom\r\n"),
    "longer body": (_longer_body, None, _get(), f"Length: {len(BODY) + 4}\r\n".encode()),
    "same-length body": (_same_length_body, None, _get(), BODY.upper()),
    "cookie": (_cookie, None, _get(), b"Set-Cookie: seen=1; Path=/\r\n"),
    "compression": (_compress, None, _get(extra="Accept-Encoding: gzip\r\n"), b"gzip"),
    "chunked": (_chunked, None, _get(), b"Transfer-Encoding: chunked\r\n"),
    "no server line": (None, _drop_server, _get(), b"HTTP/1.1 200 OK\r\n"),
    "HTTP/1.0": (None, None, _get(version="1.0"), b"HTTP/1.0 200 OK\r\n"),
    "HTTP/1.0 keep-alive": (
        None,
        None,
        _get(version="1.0", extra="Connection: keep-alive\r\n"),
        b"Connection: keep-alive\r\n",
    ),
    "closing connection": (None, None, _get(extra="Connection: close\r\n"), b"Connection: close"),
    "HEAD": (None, None, b"HEAD /page HTTP/1.1\r\nHost: t\r\n\r\n", b"X-Cache: HIT\r\n"),
}


@pytest.mark.parametrize("case", CHANGES)
async def test_whatever_changes_the_response_is_sent_as_aiohttp_sends_it(
    aiohttp_client: Any, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    change, prepare, request, expected = CHANGES[case]
    app = _app(change, prepare)
    fast, slow, _ = await _hit_both_ways(aiohttp_client, monkeypatch, app, request)
    assert expected in fast
    assert fast == slow


async def test_a_changed_body_is_sent_with_its_own_length(
    aiohttp_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast, _, _ = await _hit_both_ways(aiohttp_client, monkeypatch, _app(_longer_body), _get())
    assert fast.endswith(BODY + b"tail")
    assert f"Content-Length: {len(BODY) + 4}\r\n".encode() in fast
    assert f"Content-Length: {len(BODY)}\r\n".encode() not in fast


async def test_a_compressed_hit_still_decodes_to_the_body(
    aiohttp_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    request = _get(extra="Accept-Encoding: gzip\r\n")
    fast, _, _ = await _hit_both_ways(aiohttp_client, monkeypatch, _app(_compress), request)
    head, body = fast.split(b"\r\n\r\n", 1)
    assert b"Content-Encoding: gzip" in head
    assert gzip.decompress(body) == BODY


async def test_a_head_hit_sends_the_length_without_the_body(
    aiohttp_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    request = b"HEAD /page HTTP/1.1\r\nHost: t\r\n\r\n"
    fast, slow, serialised = await _hit_both_ways(aiohttp_client, monkeypatch, _app(), request)
    assert serialised == []  # nothing changed the headers: the prebuilt ones fit HEAD too
    assert fast == slow and f"Content-Length: {len(BODY)}\r\n".encode() in fast


def test_the_shortcut_is_off_when_aiohttp_would_send_something_else(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A release whose writer adds a line of its own as it serialises: the probe's bytes
    # differ, so hits go through aiohttp's writer instead of the prebuilt bytes.
    original = http_writer._serialize_headers
    monkeypatch.setattr(
        http_writer,
        "_serialize_headers",
        lambda status_line, headers: original(status_line, headers) + b"X-New: 1\r\n",
    )
    assert not aiohttp_internals.wire_matches_aiohttp()


def test_the_shortcut_is_off_when_the_writer_keeps_headers_elsewhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A release that renamed the writer's buffered header bytes: what the shortcut leaves
    # in `_headers_buf` would never be sent.
    original_eof = http_writer.StreamWriter.write_eof

    async def write_headers(self: Any, status_line: str, headers: Any) -> None:
        self._pending = http_writer._serialize_headers(status_line, headers)

    async def write_eof(self: Any, chunk: bytes = b"") -> None:
        self._headers_buf = None  # unknown to this release
        self._write(getattr(self, "_pending", b""))
        await original_eof(self, chunk)

    monkeypatch.setattr(http_writer.StreamWriter, "write_headers", write_headers)
    monkeypatch.setattr(http_writer.StreamWriter, "write_eof", write_eof)
    assert not aiohttp_internals.wire_matches_aiohttp()


def test_blocks_that_prepare_would_change_get_no_wire() -> None:
    build_wire = aiohttp_internals.build_wire
    plain = CIMultiDict({"Content-Type": "a/b", "Date": "x", "Server": "s"})
    assert build_wire(200, plain, 10) is not None
    for missing in ("Content-Type", "Date", "Server"):
        lacking = CIMultiDict((name, value) for name, value in plain.items() if name != missing)
        assert build_wire(200, lacking, 10) is None
    for stated in ({"Content-Length": "10"}, {"Transfer-Encoding": "chunked"}):
        assert build_wire(200, CIMultiDict({**plain, **stated}), 10) is None
    assert build_wire(200, plain, 0) is None
    for status in (100, 199, 204, 304):
        assert build_wire(status, plain, 10) is None


@pytest.mark.parametrize("value", ["a\r\nX-Injected: 1", "a\nb", "\x00", "\x7f"])
def test_lines_aiohttp_refuses_to_send_get_no_wire(value: str) -> None:
    # aiohttp's own path raises when it sends them; a wire would have raised in the handler.
    # (A lone surrogate is not refused by aiohttp's C serialiser, which drops it: the wire
    # drops it alike, see tests/test_aiohttp_internals_parity.py.)
    block = CIMultiDict({"Content-Type": "a/b", "Date": "x", "Server": "s", "X-Bad": value})
    assert aiohttp_internals.build_wire(200, block, 10) is None


def test_with_the_wire_off_hits_are_plain_responses(monkeypatch: pytest.MonkeyPatch) -> None:
    # An aiohttp whose private methods changed shape must never call cachekit's overrides.
    monkeypatch.setattr(aiohttp_internals, "WIRE_WORKS", False)
    responses._BLOCKS.clear()
    lines = (("Content-Type", "text/plain"), ("Date", "Tue, 24 Nov 2026 07:00:00 GMT"))
    now = time.time()
    for template in (aiohttp_internals.RESPONSE_TEMPLATE, None):
        monkeypatch.setattr(aiohttp_internals, "RESPONSE_TEMPLATE", template)
        answered = responses.from_entry(_entry(lines, b"body", now), now, "hit", "HIT")
        assert type(answered) is web.Response


def test_a_block_shared_by_an_entry_of_another_length_is_not_sent_for_it() -> None:
    # Equal stored lines, other body: the block is shared, its wire is not used.
    lines = (("Content-Type", "text/plain"), ("Date", "Tue, 24 Nov 2026 07:00:00 GMT"))
    now = time.time()
    first = responses.from_entry(_entry(lines, b"short", now), now, "hit", "HIT")
    second = responses.from_entry(_entry(lines, b"a longer body", now), now, "hit", "HIT")
    assert isinstance(first, aiohttp_internals.HitResponse)
    assert first._wire is second._wire is not None
    assert first._wire.content_length == 5  # `HitResponse._start` checks the length


def _entry(lines: tuple[tuple[str, str], ...], body: bytes, now: float) -> Any:
    return CachedResponse(status=200, headers=lines, body=body, stored_at=now, ttl=60.0, etag='"e"')


def test_the_shortcut_is_off_when_prepare_changes_every_response(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A release whose `prepare` adds a line to every response: the prebuilt bytes would
    # never fit, so the shortcut is reported off rather than silently never taken.
    original = web.StreamResponse._prepare_headers

    async def with_a_line(self: web.StreamResponse) -> None:
        await original(self)
        self.headers["X-Added-By-Aiohttp"] = "1"

    monkeypatch.setattr(web.StreamResponse, "_prepare_headers", with_a_line)
    assert not aiohttp_internals.wire_matches_aiohttp()


# ---------------------------------------------------------------- the response template


@pytest.mark.parametrize("status", [200, 203, 404, 410, 299, 999])
def test_the_template_builds_what_the_constructor_builds(
    status: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    headers = CIMultiDict([("Content-Type", "a/b"), ("X-Multi", "1"), ("x-multi", "2")])
    assert aiohttp_internals.RESPONSE_TEMPLATE is not None
    for response_class in (aiohttp_internals.HitResponse, web.Response):
        # `WIRE_WORKS` picks the class `new_hit_response` builds.
        monkeypatch.setattr(
            aiohttp_internals, "WIRE_WORKS", response_class is aiohttp_internals.HitResponse
        )
        fast = aiohttp_internals.new_hit_response(status, b"b", headers, None)
        slow = response_class(status=status, body=b"b", headers=headers)
        assert type(fast) is response_class
        assert vars(fast) == vars(slow) and fast.headers is not headers


def test_a_mutable_constant_in_the_constructor_turns_the_template_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original = web.Response.__init__

    def with_a_list(self: web.Response, **kwargs: Any) -> None:
        original(self, **kwargs)
        self._shared_by_mistake = []  # type: ignore[attr-defined]

    monkeypatch.setattr(web.Response, "__init__", with_a_list)
    assert aiohttp_internals.response_template() is None


def test_an_immutable_constant_is_carried_over(monkeypatch: pytest.MonkeyPatch) -> None:
    original = web.Response.__init__

    def with_a_flag(self: web.Response, **kwargs: Any) -> None:
        original(self, **kwargs)
        self._new_flag = 7  # type: ignore[attr-defined]

    monkeypatch.setattr(web.Response, "__init__", with_a_flag)
    template = aiohttp_internals.response_template()
    assert template is not None and template["_new_flag"] == 7


def test_a_field_that_depends_on_the_arguments_turns_the_template_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original = web.Response.__init__

    def with_derived(self: web.Response, **kwargs: Any) -> None:
        original(self, **kwargs)
        self._status_text = str(kwargs.get("status"))  # type: ignore[attr-defined]

    monkeypatch.setattr(web.Response, "__init__", with_derived)
    assert aiohttp_internals.response_template() is None


def test_reason_phrases_are_aiohttp_s() -> None:
    for status in range(100, 1000):
        expected = web.Response(status=status).reason
        assert aiohttp_internals.REASONS.get(status, "") == expected, status


# ---------------------------------------------------------------- the handler's app state

_PROBE_KEY = web.AppKey("cachekit_test_probe", str)


def _app_stacks() -> list[tuple[int, frozenset[int]]]:
    # Apps nested `depth` deep (a sub-app of a sub-app ...), the key set in the levels named.
    stacks = []
    for depth in (1, 2, 3):
        for mask in range(1 << depth):
            stacks.append((depth, frozenset(level for level in range(depth) if mask >> level & 1)))
    return stacks


@pytest.mark.parametrize(("depth", "holding"), _app_stacks())
async def test_the_direct_app_read_is_what_request_app_get_reads(
    aiohttp_client: Callable[..., Awaitable[TestClient]], depth: int, holding: frozenset[int]
) -> None:
    # Real routing through sub-apps, and a middleware that clones the request: in every
    # handler of every level, `app_value` answers what `request.app.get` answers.
    seen: list[tuple[object, object]] = []

    async def echo(request: web.Request) -> web.Response:
        seen.append((aiohttp_internals.app_value(request, _PROBE_KEY), request.app.get(_PROBE_KEY)))
        return web.Response(text="ok")

    @web.middleware
    async def cloning(request: web.Request, handler: Any) -> web.StreamResponse:
        return await handler(request.clone(headers={**request.headers, "X-Cloned": "1"}))

    apps = [web.Application(middlewares=[cloning] if level == 1 else []) for level in range(depth)]
    for level, app in enumerate(apps):
        if level in holding:
            app[_PROBE_KEY] = f"level {level}"
        app.router.add_get("/here", echo)
    for level in range(depth - 1, 0, -1):
        apps[level - 1].add_subapp(f"/l{level}/", apps[level])
    client = await aiohttp_client(apps[0])
    for level in range(depth):
        path = "".join(f"/l{n}" for n in range(1, level + 1)) + "/here"
        assert (await client.get(path)).status == 200
    assert len(seen) == depth
    for level, (direct, public) in enumerate(seen):
        assert direct == public == (f"level {level}" if level in holding else None)


def test_a_direct_read_that_differs_turns_the_shortcut_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aiohttp_internals, "_app_value_direct", lambda request, key: None)
    assert not aiohttp_internals.app_state_matches_aiohttp()


def test_an_app_without_its_state_mapping_turns_the_shortcut_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_state(request: web.Request, key: object) -> object:
        raise AttributeError("_state")

    monkeypatch.setattr(aiohttp_internals, "_app_value_direct", no_state)
    assert not aiohttp_internals.app_state_matches_aiohttp()
    assert aiohttp_internals.APP_STATE_WORKS  # this aiohttp's own passes
