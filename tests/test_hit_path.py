"""The hot path's shortcuts: they must answer exactly what the plain code path answers."""

from __future__ import annotations

import asyncio
import time
import tracemalloc
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, make_mocked_request
from multidict import istr

from cachekit import cached, keys, responses
from cachekit import entry as entry_format
from cachekit.entry import CachedResponse
from cachekit.hit_response import HitResponse
from tests.apps import make_app, make_store

Client = TestClient[web.Request, web.Application]


def entry(**overrides: Any) -> CachedResponse:
    values: dict[str, Any] = {
        "status": 200,
        "headers": (("Content-Type", "application/json"), ("ETag", '"e1"'), ("X-Multi", "a")),
        "body": b'{"ok": true}',
        "stored_at": time.time(),
        "ttl": 60.0,
        "etag": '"e1"',
    }
    values.update(overrides)
    return CachedResponse(**values)


# ---------------------------------------------------------------- the response shortcut


def test_the_response_shortcut_is_on_for_this_aiohttp() -> None:
    # If a new aiohttp release turns it off, hits still work (the constructor runs) but
    # cost more: this test says so instead of a benchmark.
    assert responses.fast_response_template() is not None


@pytest.mark.parametrize("status", [200, 203, 404, 410, 299])
def test_the_shortcut_builds_what_the_constructor_builds(status: int) -> None:
    stored = entry(status=status)
    fast = responses.from_entry(stored, time.time(), "hit", "HIT")
    slow = HitResponse(status=status, body=stored.body, headers=fast.headers)
    assert type(fast) is HitResponse and isinstance(fast, web.Response)
    assert vars(fast).keys() - {"_wire", "_wire_version"} == vars(slow).keys()
    assert (fast.status, fast.reason, fast.body) == (slow.status, slow.reason, slow.body)
    assert list(fast.headers.items()) == list(slow.headers.items())


def test_a_mutable_constant_in_the_constructor_turns_the_shortcut_off(monkeypatch) -> None:
    original = web.Response.__init__

    def with_a_list(self: web.Response, **kwargs: Any) -> None:
        original(self, **kwargs)
        self._shared_by_mistake = []  # type: ignore[attr-defined]

    monkeypatch.setattr(web.Response, "__init__", with_a_list)
    assert responses.fast_response_template() is None


def test_an_immutable_constant_is_carried_over(monkeypatch) -> None:
    original = web.Response.__init__

    def with_a_flag(self: web.Response, **kwargs: Any) -> None:
        original(self, **kwargs)
        self._new_flag = 7  # type: ignore[attr-defined]

    monkeypatch.setattr(web.Response, "__init__", with_a_flag)
    template = responses.fast_response_template()
    assert template is not None and template["_new_flag"] == 7


def test_a_field_that_depends_on_the_arguments_turns_the_shortcut_off(monkeypatch) -> None:
    original = web.Response.__init__

    def with_derived(self: web.Response, **kwargs: Any) -> None:
        original(self, **kwargs)
        self._status_text = str(kwargs.get("status"))  # type: ignore[attr-defined]

    monkeypatch.setattr(web.Response, "__init__", with_derived)
    assert responses.fast_response_template() is None


async def _raw_exchange(port: int, path: str) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    await writer.wait_closed()
    return data


async def test_hits_on_the_wire_are_byte_identical_with_and_without_the_shortcut(
    aiohttp_client, monkeypatch
) -> None:
    routes = web.RouteTableDef()

    @routes.get("/page")
    @cached(ttl=600)
    async def page(request: web.Request) -> web.Response:
        response = web.Response(body=b"<p>x</p>" * 50, content_type="text/html", status=203)
        response.headers.add("X-Multi", "1")
        response.headers.add("X-Multi", "2")
        return response

    app, cache = make_app(routes)
    client: Client = await aiohttp_client(app)
    port = client.port
    assert port is not None
    frozen = time.time()
    cache.clock = lambda: frozen  # the same Age and ttl in both answers
    await _raw_exchange(port, "/page")  # fill
    fast = await _raw_exchange(port, "/page")
    monkeypatch.setattr(responses, "_RESPONSE_TEMPLATE", None)
    slow = await _raw_exchange(port, "/page")

    # The stored Date travels with the entry, so aiohttp adds none of its own.
    assert b"X-Cache: HIT" in fast
    assert fast == slow


# ---------------------------------------------------------------- the shared header block


def _block_of(stored: CachedResponse) -> Any:
    memo = responses._BLOCKS.get(stored.headers)
    assert memo is not None
    return memo[1]


def test_hits_within_a_second_share_one_header_block_but_not_one_multidict() -> None:
    stored = entry(stored_at=1000.0)
    first = responses.from_entry(stored, 1000.2, "hit", "HIT")
    block = _block_of(stored)
    second = responses.from_entry(stored, 1000.7, "hit", "HIT")
    assert _block_of(stored) is block
    first.headers["X-Changed-By-Middleware"] = "yes"
    assert "X-Changed-By-Middleware" not in second.headers
    assert "X-Changed-By-Middleware" not in block
    assert second.headers["Age"] == "0"
    assert second.headers["Cache-Status"] == "cachekit; hit; ttl=59"
    later = responses.from_entry(stored, 1001.3, "hit", "HIT")
    assert _block_of(stored) is not block
    assert later.headers["Age"] == "1"
    assert later.headers["Cache-Status"] == "cachekit; hit; ttl=58"
    assert later.headers.getall("X-Multi") == ["a"]


def test_a_different_label_never_reuses_the_block() -> None:
    stored = entry(stored_at=1000.0)
    hit = responses.from_entry(stored, 1000.1, "hit", "HIT")
    stale = responses.from_entry(stored, 1000.1, "hit; fwd=stale", "STALE")
    emitted = responses.from_entry(stored, 1000.1, "hit", "HIT", emit_cache_control=True)
    assert hit.headers["X-Cache"] == "HIT" and "Cache-Control" not in hit.headers
    assert stale.headers["X-Cache"] == "STALE"
    assert emitted.headers["Cache-Control"] == "public, max-age=60"


def test_entries_with_equal_lines_share_one_block() -> None:
    # A Redis entry is a new object for every lookup batch: the block is found by the
    # stored lines, not by the entry object.
    lines = (("Content-Type", "application/json"), ("ETag", '"e1"'))
    first = entry(stored_at=1000.0, headers=lines)
    second = entry(stored_at=1000.0, headers=tuple(tuple(line) for line in lines))
    assert first.headers is not second.headers
    responses.from_entry(first, 1000.2, "hit", "HIT")
    block = _block_of(first)
    answered = responses.from_entry(second, 1000.3, "hit", "HIT")
    assert _block_of(second) is block
    assert answered.headers == block and answered.headers is not block


def test_decoded_copies_of_an_entry_share_their_header_lines() -> None:
    raw = entry_format.encode(entry(stored_at=1000.0))
    first, second = entry_format.decode(raw), entry_format.decode(raw)
    assert first is not second and first.headers is second.headers
    assert first == second == entry(stored_at=1000.0)


def test_the_header_lines_memo_stays_bounded() -> None:
    entries = [entry(headers=(("X-N", str(n)),)) for n in range(entry_format.LINES_KEPT + 10)]
    for item in entries:
        assert entry_format.decode(entry_format.encode(item)) == item
    assert len(entry_format._LINES) <= entry_format.LINES_KEPT
    big = entry(headers=(("X-Big", "v" * entry_format.LINES_BLOCK_MAX),))
    assert entry_format.decode(entry_format.encode(big)) == big
    assert all(len(block) <= entry_format.LINES_BLOCK_MAX for block in entry_format._LINES)


def test_a_head_seen_before_is_not_parsed_again(monkeypatch: pytest.MonkeyPatch) -> None:
    stored = entry(stored_at=1000.0, tags=("t1", "t2"), grace=5.0, generation=3)
    raw = entry_format.encode(stored)
    entry_format.decode(raw)  # remembered

    def parse(data: bytes) -> CachedResponse:
        raise AssertionError("parsed again")

    monkeypatch.setattr(entry_format, "_decode", parse)
    again = entry_format.decode(bytes(raw))
    assert again == stored and again.size == len(raw)
    # Same head, another body of the same length: the body is always the data's own.
    other = raw[: -len(stored.body)] + b"x" * len(stored.body)
    assert entry_format.decode(other).body == b"x" * len(stored.body)


def test_a_remembered_head_builds_every_field_the_constructor_would() -> None:
    assert set(entry_format.HEAD_FIELDS) | {"body", "size"} == set(CachedResponse.__slots__)
    stored = entry(stored_at=1000.5, grace=3.0, stale_if_error=9.0, tags=("a",), compress=True)
    raw = entry_format.encode(stored)
    entry_format._HEADS.clear()
    parsed = entry_format.decode(raw)
    remembered = entry_format.decode(raw)
    for name in CachedResponse.__slots__:
        assert getattr(remembered, name) == getattr(parsed, name), name
    assert remembered.size == len(raw) and remembered.drop_at == 1000.5 + 60 + 9


def _decoded_or_error(data: bytes) -> object:
    try:
        return entry_format.decode(data)
    except entry_format.CorruptEntry:
        return entry_format.CorruptEntry


def test_a_remembered_head_decides_nothing_the_full_parse_would_not() -> None:
    # Every truncation, extension and single-byte change of an entry decodes exactly as it
    # does with the memo empty (where it must be parsed and checked in full).
    raw = entry_format.encode(entry(stored_at=1000.0, tags=("t",)))
    changed = [raw[:cut] for cut in range(len(raw))] + [raw + b"x", raw + raw]
    for at in range(len(raw)):
        changed += [raw[:at] + bytes([value]) + raw[at + 1 :] for value in (0, 255)]
    for data in changed:
        entry_format._HEADS.clear()
        cold = _decoded_or_error(data)
        entry_format.decode(raw)  # the original head remembered
        assert _decoded_or_error(data) == cold, data


def test_the_head_memo_stays_bounded() -> None:
    for n in range(entry_format.HEADS_KEPT + 10):
        item = entry(stored_at=1000.0 + n)
        assert entry_format.decode(entry_format.encode(item)) == item
    assert 0 < len(entry_format._HEADS) <= entry_format.HEADS_KEPT
    entry_format._HEADS.clear()
    big = entry(headers=(("X-Big", "v" * entry_format.HEAD_MAX_BYTES),))
    assert entry_format.decode(entry_format.encode(big)) == big
    assert not entry_format._HEADS


def test_equal_lines_with_other_lifetimes_never_share_a_block() -> None:
    # Same lines, same Age (0) and same whole seconds left (59) at 1000.5, but the
    # Cache-Control line states the whole lifetime: 60 vs 59.
    lines = (("Content-Type", "text/plain"),)
    longer = entry(stored_at=1000.0, ttl=60.2, headers=lines)
    shorter = entry(stored_at=1000.0, ttl=59.9, headers=lines)
    for stored, expected in ((longer, "60"), (shorter, "59"), (longer, "60")):
        answered = responses.from_entry(stored, 1000.5, "hit", "HIT", emit_cache_control=True)
        assert answered.headers["Age"] == "0"
        assert answered.headers["Cache-Status"] == "cachekit; hit; ttl=59"
        assert answered.headers["Cache-Control"] == f"public, max-age={expected}"


def test_a_new_entry_at_a_dead_entry_s_address_gets_its_own_block() -> None:
    old = entry(stored_at=1000.0, headers=(("X-Which", "old"),))
    responses.from_entry(old, 1000.1, "hit", "HIT")
    address = id(old)
    del old
    for _ in range(1000):  # CPython reuses freed addresses quickly
        new = entry(stored_at=1000.0, headers=(("X-Which", "new"),))
        if id(new) == address:
            break
    answered = responses.from_entry(new, 1000.1, "hit", "HIT")
    assert answered.headers["X-Which"] == "new"


def test_header_blocks_stay_bounded_and_leave_entries_untouched() -> None:
    stored = [
        entry(stored_at=1000.0, headers=(("X-N", str(n)),))
        for n in range(responses.BLOCK_ENTRIES + 100)
    ]
    for item in stored:
        responses.from_entry(item, 1000.1, "hit", "HIT")
    assert len(responses._BLOCKS) <= responses.BLOCK_ENTRIES
    many_lines = entry(headers=tuple((f"X-{n}", "v") for n in range(50)))
    responses.from_entry(many_lines, time.time(), "hit", "HIT")
    assert many_lines.headers not in responses._BLOCKS
    long_lines = entry(headers=(("Content-Security-Policy", "x" * responses.BLOCK_MAX_BYTES),))
    answered = responses.from_entry(long_lines, time.time(), "hit", "HIT")
    assert long_lines.headers not in responses._BLOCKS
    assert answered.headers["Content-Security-Policy"] == "x" * responses.BLOCK_MAX_BYTES
    assert stored[0] == entry(stored_at=1000.0, headers=(("X-N", "0"),))
    assert not hasattr(stored[0], "__dict__")


# ---------------------------------------------------------------- keys keep nothing


def test_keys_keep_nothing_of_client_input() -> None:
    """Key building memoises nothing: a flood of unique long targets and hosts leaves no
    memory behind (it once held up to 4,096 inputs of 512 characters per memo)."""
    long_tail = "a" * 8000

    def one_key(n: int, tail: str) -> None:
        request = make_mocked_request(
            "GET", f"/{tail}{n}?q={tail}", headers={"Host": f"{tail}{n}.example"}
        )
        keys.request_key(keys.default_key("h", request.rel_url), request, ("host",), 250)

    tracemalloc.start()
    try:
        for n in range(600):
            one_key(n, long_tail if n % 2 else "")
        # What is still alive of what keys.py allocated (yarl's own bounded caches of
        # parsed URLs are yarl's, and aiohttp fills them whether or not we cache).
        kept = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(True, keys.__file__)])
    finally:
        tracemalloc.stop()
    assert sum(stat.size for stat in kept.statistics("filename")) < 4 << 10


# ---------------------------------------------------------------- the unsafe-method receiver


def _receivers(app: web.Application) -> int:
    return len(app.on_response_prepare)


async def test_a_read_only_app_pays_no_response_signal(aiohttp_client) -> None:
    routes = web.RouteTableDef()

    @routes.get("/r")
    @cached(ttl=60)
    async def read(request: web.Request) -> web.Response:
        return web.Response(text="r")

    app, _ = make_app(routes)
    assert _receivers(app) == 1
    await aiohttp_client(app)
    assert _receivers(app) == 0


@pytest.mark.parametrize("kind", ["post-route", "any-method", "middleware", "sub-app"])
async def test_an_app_that_can_answer_unsafe_methods_keeps_the_receiver(
    aiohttp_client, kind: str
) -> None:
    routes = web.RouteTableDef()

    @routes.get("/r")
    @cached(ttl=60)
    async def read(request: web.Request) -> web.Response:
        return web.Response(text="r")

    async def write(request: web.Request) -> web.Response:
        return web.Response(text="w")

    app, _ = make_app(routes)
    if kind == "post-route":
        app.router.add_post("/w", write)
    elif kind == "any-method":
        app.router.add_route("*", "/w", write)
    elif kind == "middleware":

        @web.middleware
        async def passthrough(request: web.Request, handler: Any) -> web.StreamResponse:
            return await handler(request)

        app.middlewares.append(passthrough)
    else:
        sub = web.Application()
        sub.router.add_get("/s", write)
        app.add_subapp("/sub", sub)
    await aiohttp_client(app)
    assert _receivers(app) == 1


async def test_invalidation_still_works_after_the_startup_check(aiohttp_client) -> None:
    routes = web.RouteTableDef()
    calls = {"n": 0}

    @routes.get("/item")
    @cached(ttl=60)
    async def item(request: web.Request) -> web.Response:
        calls["n"] += 1
        return web.Response(text=str(calls["n"]))

    @routes.post("/item")
    async def update(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app, _ = make_app(routes)
    client: Client = await aiohttp_client(app)
    assert await (await client.get("/item")).text() == "1"
    assert await (await client.get("/item")).text() == "1"
    assert (await client.post("/item")).status == 200
    assert await (await client.get("/item")).text() == "2"


# ---------------------------------------------------------------- compiled key templates


@pytest.mark.parametrize(
    "template",
    [
        "p:{match_info[id]}",
        "{match_info[id]}",
        "{match_info[id]}:end",
        "x:{match_info[id]}:y",
        "p:{query[page]}",
        "p:{match_info[id]}:{query[page]}",
        "fixed",
    ],
)
@pytest.mark.parametrize("value", ["7", "a b/%", "", "é" * 600, None])
def test_compiled_templates_render_what_render_renders(template: str, value: str | None) -> None:
    match_info = {} if value is None else {"id": value}
    request = make_mocked_request("GET", "/p?page=2&page=3", match_info=match_info)
    compiled = keys.KeyTemplate(template).compiled()
    assert compiled(request) == keys.KeyTemplate(template).render(request)


# ---------------------------------------------------------------- shared istr header names


def test_decoded_and_stored_entries_name_their_lines_with_shared_istr() -> None:
    lines = [("X-Custom", "1"), ("content-type", "text/plain")]
    made = responses.to_entry(
        200, lines, b"b", stored_at=1.0, ttl=60.0, grace=0.0, stale_if_error=0.0,
        tags=(), generation=0, compress=False,
    )  # fmt: skip
    decoded = entry_format.decode(entry_format.encode(made))
    for stored in (made, decoded):
        assert all(type(name) is istr for name, _ in stored.headers)
    assert [name for name, _ in made.headers] == [name for name, _ in decoded.headers]
    assert all(a is b for (a, _), (b, _) in zip(made.headers, decoded.headers, strict=True))
    assert decoded == made  # istr names compare equal to the plain strings they came from


def test_the_header_name_table_stays_bounded() -> None:
    table = entry_format._HEADER_NAMES
    saved = dict(table)
    try:
        for n in range(entry_format.HEADER_NAMES_MAX + 300):
            assert entry_format.header_name(f"X-Name-{n}") == f"X-Name-{n}"
        assert len(table) <= entry_format.HEADER_NAMES_MAX
    finally:  # other tests expect shared names
        table.clear()
        table.update(saved)


# ---------------------------------------------------------------- Redis: one lookup per request


@pytest.mark.parametrize("kind", ["fakeredis", "redis"])
async def test_a_plain_redis_request_looks_the_store_up_once(
    aiohttp_client, request: pytest.FixtureRequest, kind: str
) -> None:
    # `fresh_hit` computes the key and `request_handler` makes the lookup; a request that is
    # not a fresh hit continues in `serve` with that lookup, without a second one.
    routes = web.RouteTableDef()
    calls = [0]

    @routes.get("/items/{n}")
    @cached(ttl=0.4, stale_ttl=30, key="items:{match_info[n]}")
    async def item(request: web.Request) -> web.Response:
        calls[0] += 1
        return web.json_response({"n": request.match_info["n"], "call": calls[0]})

    url = request.getfixturevalue("real_redis_url") if kind == "redis" else None
    store = make_store(kind, url)
    app, cache = make_app(routes, store=store)
    client: Client = await aiohttp_client(app)

    async def looked_up_keys(path: str) -> tuple[str, int]:
        before = cache.stats()["lookup_keys"]
        response = await client.get(path)
        assert response.status == 200
        return response.headers["X-Cache"], cache.stats()["lookup_keys"] - before

    # A miss: the request's lookup, then the fill's re-check once it holds the fill lock.
    assert await looked_up_keys("/items/1") == ("MISS", 2)
    assert await looked_up_keys("/items/1") == ("HIT", 1)
    assert (await client.get("/items/1", headers={"If-None-Match": '"x"'})).status == 200
    await asyncio.sleep(0.45)
    assert await looked_up_keys("/items/1") == ("STALE", 1)  # then one refresh runs
    for _ in range(100):
        if calls[0] == 2:
            break
        await asyncio.sleep(0.01)
    assert calls[0] == 2
    assert cache.stats()["hits"] == 2 and cache.stats()["stale_hits"] == 1
