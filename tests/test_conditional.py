"""`conditional`: validators, If-None-Match / If-Modified-Since, and when a 304 answers."""

from __future__ import annotations

from collections import Counter
from typing import Any

from aiohttp import web

from cachekit import cached
from cachekit.conditional import none_match, not_modified, parse_etags
from cachekit.entry import body_etag
from tests.apps import make_app


def test_etag_lists_star_and_weak_comparison() -> None:
    assert parse_etags('"a", W/"b" ,"c"') == ['"a"', 'W/"b"', '"c"']
    assert parse_etags(" * ") is None
    assert parse_etags('junk, "ok"') == ['"ok"']
    assert none_match('W/"x"', '"x"') and none_match('"y", "x"', 'W/"x"')
    assert none_match("*", '"anything"') and not none_match('"y"', '"x"')


def test_not_modified_rules() -> None:
    lines = [("Last-Modified", "Tue, 01 Jan 2030 00:00:00 GMT")]
    assert not_modified(200, '"e"', lines, '"e"', None)
    assert not not_modified(404, '"e"', lines, '"e"', None)  # only 2xx entries
    assert not_modified(200, '"e"', lines, None, "Wed, 02 Jan 2030 00:00:00 GMT")
    assert not not_modified(200, '"e"', lines, None, "Mon, 31 Dec 2029 00:00:00 GMT")
    # If-None-Match wins over If-Modified-Since.
    assert not not_modified(200, '"e"', lines, '"other"', "Wed, 02 Jan 2030 00:00:00 GMT")
    assert not not_modified(200, '"e"', [], None, "Wed, 02 Jan 2030 00:00:00 GMT")


def etag_routes(calls: Counter[str]) -> web.RouteTableDef:
    routes = web.RouteTableDef()

    @routes.get("/doc")
    @cached(ttl=30)
    async def doc(request: web.Request) -> web.Response:
        calls["doc"] += 1
        return web.Response(
            text="document", headers={"Cache-Control": "max-age=30", "X-Extra": "dropped-in-304"}
        )

    @routes.get("/gone")
    @cached(ttl=30)
    async def gone(request: web.Request) -> web.Response:
        raise web.HTTPNotFound(text="gone")

    return routes


async def test_if_none_match_answers_304_on_hits_and_misses(aiohttp_client: Any) -> None:
    calls: Counter[str] = Counter()
    client = await aiohttp_client(make_app(etag_routes(calls))[0])
    etag = body_etag(b"document")
    first = await client.get("/doc", headers={"If-None-Match": f'"x", W/{etag}'})
    assert first.status == 304 and await first.read() == b""
    assert calls["doc"] == 1  # produced after the handler ran and the entry was stored
    second = await client.get("/doc", headers={"If-None-Match": etag})
    assert second.status == 304 and second.headers["X-Cache"] == "HIT"
    assert second.headers["ETag"] == etag and second.headers["Cache-Control"] == "max-age=30"
    assert "X-Extra" not in second.headers
    full = await client.get("/doc", headers={"If-None-Match": '"stale"'})
    assert full.status == 200 and await full.text() == "document"
    assert calls["doc"] == 1


async def test_no_304_for_a_404_entry(aiohttp_client: Any) -> None:
    calls: Counter[str] = Counter()
    client = await aiohttp_client(make_app(etag_routes(calls))[0])
    for _ in range(2):
        response = await client.get("/gone", headers={"If-None-Match": "*"})
        assert response.status == 404
