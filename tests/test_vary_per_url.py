"""Vary is recorded per URL, never per handler (RFC 9111 §4.1): a catch-all handler whose
URLs answer with different `Vary` lists keeps every URL's entries reachable, serves each
URL's variants apart, and never serves a variant left over from an older Vary list."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from aiohttp import web

from cachekit import cached
from tests.apps import client_for


def catch_all(calls: Counter[str], vary_of: dict[str, str]) -> web.RouteTableDef:
    """One handler for every path; `vary_of[path]` is the Vary that path answers with (the
    test may change it between requests), and the body echoes what the handler read."""
    routes = web.RouteTableDef()

    @routes.get("/{tail:.*}")
    @cached(ttl=60)
    async def origin(request: web.Request) -> web.Response:
        vary = vary_of.get(request.path, "")
        seen = ",".join(
            f"{name}={request.headers.get(name, '-')}" for name in vary.split(",") if name.strip()
        )
        calls[request.path] += 1
        headers = {"Vary": vary} if vary else {}
        return web.Response(text=f"{request.path}|{seen}", headers=headers)

    return routes


HOST = {"Host": "shop.example"}


async def test_one_urls_vary_changes_nothing_for_the_others(
    aiohttp_client: Any, request: pytest.FixtureRequest, store_kind: str
) -> None:
    calls: Counter[str] = Counter()
    client = await client_for(
        aiohttp_client, request, store_kind, catch_all(calls, {"/a": "X-Foo"})
    )
    assert (await client.get("/b", headers=HOST)).headers["X-Cache"] == "MISS"
    assert (await client.get("/b", headers=HOST)).headers["X-Cache"] == "HIT"
    # /a answers Vary: X-Foo; /b's entry stays reachable and keeps hitting, whatever X-Foo says.
    await client.get("/a", headers={**HOST, "X-Foo": "1"})
    for foo in ("1", "2", None):
        headers = {**HOST, **({"X-Foo": foo} if foo else {})}
        hit = await client.get("/b", headers=headers)
        assert hit.headers["X-Cache"] == "HIT" and await hit.text() == "/b|"
    assert calls["/b"] == 1


async def test_each_variant_of_a_varying_url_is_served_apart(
    aiohttp_client: Any, request: pytest.FixtureRequest, store_kind: str
) -> None:
    calls: Counter[str] = Counter()
    client = await client_for(
        aiohttp_client, request, store_kind, catch_all(calls, {"/a": "X-Foo"})
    )
    seen = []
    for foo in ("1", "2", "1", "2", "3"):
        response = await client.get("/a", headers={**HOST, "X-Foo": foo})
        seen.append((response.headers["X-Cache"], await response.text()))
    assert seen == [
        ("MISS", "/a|X-Foo=1"),
        ("MISS", "/a|X-Foo=2"),
        ("HIT", "/a|X-Foo=1"),
        ("HIT", "/a|X-Foo=2"),
        ("MISS", "/a|X-Foo=3"),
    ]
    assert calls["/a"] == 3


async def test_a_changed_vary_list_leaves_no_wrong_variant_servable(
    aiohttp_client: Any, request: pytest.FixtureRequest, store_kind: str
) -> None:
    calls: Counter[str] = Counter()
    vary_of = {"/a": "X-Foo"}
    client = await client_for(aiohttp_client, request, store_kind, catch_all(calls, vary_of))
    first = await client.get("/a", headers={**HOST, "X-Foo": "1", "X-Bar": "1"})
    assert await first.text() == "/a|X-Foo=1"
    # The origin now varies on X-Bar instead (its X-Foo=1 variant is still fresh).
    vary_of["/a"] = "X-Bar"
    refill = await client.get("/a", headers={**HOST, "X-Foo": "2", "X-Bar": "1"})
    assert await refill.text() == "/a|X-Bar=1"
    # X-Foo=1's old variant is never served again: this URL now varies on X-Bar only.
    other = await client.get("/a", headers={**HOST, "X-Foo": "1", "X-Bar": "2"})
    assert await other.text() == "/a|X-Bar=2"
    again = await client.get("/a", headers={**HOST, "X-Foo": "9", "X-Bar": "2"})
    assert again.headers["X-Cache"] == "HIT" and await again.text() == "/a|X-Bar=2"
    # And when the URL stops varying, one entry serves everyone.
    vary_of["/a"] = ""
    plain = await client.get("/a", headers={**HOST, "X-Foo": "5", "X-Bar": "5"})
    assert plain.headers["X-Cache"] == "MISS" and await plain.text() == "/a|"
    for foo in ("1", "2"):
        hit = await client.get("/a", headers={**HOST, "X-Foo": foo, "X-Bar": foo})
        assert hit.headers["X-Cache"] == "HIT" and await hit.text() == "/a|"
