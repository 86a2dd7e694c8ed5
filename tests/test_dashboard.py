"""The admin dashboard without a browser (`cachekit.dashboard`, `cachekit.admin_auth`):
signing in with the form, the session cookie's attributes and reach, the one 401 (JSON
or the sign-in form) of every path, the page, its assets and `/history`.
The real browser: tests/test_dashboard_browser.py."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from aiohttp import web

from cachekit import cached
from cachekit.admin import setup_admin
from cachekit.admin_auth import (
    SESSION_COOKIE,
    SESSION_SECONDS,
    session_is_valid,
    session_value,
)
from cachekit.dashboard import ASSETS, render_page, scope_text
from tests.apps import make_app

TOKEN = "s3cret-" + "t" * 40
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HTML = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


@pytest.fixture
async def site(aiohttp_client: Any) -> Any:
    routes = web.RouteTableDef()

    @routes.get("/products/{id}")
    @cached(ttl=60)
    async def get_product(request: web.Request) -> web.Response:
        return web.Response(text=f"product {request.match_info['id']}")

    @routes.get("/odd")
    @cached(ttl=60, name="<b>odd&name</b>")
    async def odd(request: web.Request) -> web.Response:
        return web.Response(text="odd")

    app, _ = make_app(routes, admin_token=TOKEN)
    setup_admin(app)
    return await aiohttp_client(app)


async def sign_in(site: Any) -> str:
    """The session cookie's value after a successful sign-in."""
    answer = await site.post("/_cache/login", data={"token": TOKEN}, allow_redirects=False)
    assert answer.status == 303
    assert answer.headers["Location"] == "/_cache/"
    morsel = answer.cookies[SESSION_COOKIE]
    return morsel.value


async def test_signing_in_sets_a_session_cookie_that_is_not_the_token(site: Any) -> None:
    answer = await site.post("/_cache/login", data={"token": TOKEN}, allow_redirects=False)
    assert answer.status == 303 and answer.headers["Cache-Control"] == "no-store"
    (header,) = answer.headers.getall("Set-Cookie")
    attributes = {part.strip().split("=")[0].lower() for part in header.split(";")}
    assert {"httponly", "samesite", "path", "max-age"} <= attributes
    assert "secure" not in attributes  # plain http here: see the https test
    assert "SameSite=Strict" in header and "Path=/_cache;" in header + ";"
    assert f"Max-Age={SESSION_SECONDS}" in header
    value = answer.cookies[SESSION_COOKIE].value
    assert TOKEN not in header and TOKEN[7:20] not in value
    assert re.fullmatch(r"\d+\.[0-9a-f]{64}", value)
    assert session_is_valid(TOKEN.encode(), value, time.time())


async def test_the_cookie_opens_reading_only(site: Any) -> None:
    cookie = {"Cookie": f"{SESSION_COOKIE}={await sign_in(site)}"}
    for path in ("/_cache/", "/_cache/stats", "/_cache/history", "/_cache/dashboard.js"):
        answer = await site.get(path, headers=cookie)
        assert answer.status == 200, path
        assert answer.headers["Cache-Control"] == "no-store"
    assert (await site.head("/_cache/stats", headers=cookie)).status == 200
    # A purge needs the bearer header: another site cannot make a signed-in browser purge.
    purge = await site.post("/_cache/purge", json={"namespace": True}, headers=cookie)
    assert purge.status == 401
    assert (await site.post("/_cache/purge", json={"namespace": True}, headers=AUTH)).status == 200


async def test_signing_out_deletes_the_cookie(site: Any) -> None:
    cookie = {"Cookie": f"{SESSION_COOKIE}={await sign_in(site)}"}
    answer = await site.post("/_cache/logout", headers=cookie, allow_redirects=False)
    assert answer.status == 303 and answer.headers["Location"] == "/_cache/"
    header = answer.headers["Set-Cookie"]
    assert header.startswith(f'{SESSION_COOKIE}=""') and "Max-Age=0" in header
    assert "Path=/_cache" in header
    # Without credentials, /logout is a path like any other.
    assert (await site.post("/_cache/logout")).status == 401


@pytest.mark.parametrize(
    "cookie",
    [
        "",
        "garbage",
        "123.abc",
        session_value(b"another token of more than thirty-two chars", int(time.time()) + 60),
        session_value(TOKEN.encode(), int(time.time()) - 1),  # expired
        session_value(TOKEN.encode(), int(time.time()) + 10 * SESSION_SECONDS),  # too long
        TOKEN,
    ],
)
async def test_a_bad_cookie_is_no_cookie(site: Any, cookie: str) -> None:
    answer = await site.get("/_cache/stats", headers={"Cookie": f"{SESSION_COOKIE}={cookie}"})
    assert answer.status == 401
    assert await answer.json() == {"error": "unauthorized"}


def test_a_session_ends_after_its_max_age() -> None:
    token, now = TOKEN.encode(), 1_700_000_000.0
    value = session_value(token, int(now) + SESSION_SECONDS)
    assert session_is_valid(token, value, now)
    assert session_is_valid(token, value, now + SESSION_SECONDS - 1)
    assert not session_is_valid(token, value, now + SESSION_SECONDS)
    tampered = value[:-1] + ("0" if value[-1] != "0" else "1")
    assert not session_is_valid(token, tampered, now)
    later = value.replace(str(int(now) + SESSION_SECONDS), str(int(now) + SESSION_SECONDS + 5))
    assert not session_is_valid(token, later, now)  # the expiry is under the MAC


async def test_the_cookie_is_secure_over_https(aiohttp_client: Any) -> None:
    @web.middleware
    async def behind_a_tls_proxy(request: web.Request, handler: Any) -> web.StreamResponse:
        # What a reverse proxy's forwarded-headers middleware does (aiohttp-remotes).
        return await handler(request.clone(scheme="https"))

    app, _ = make_app(web.RouteTableDef(), admin_token=TOKEN)
    app.middlewares.append(behind_a_tls_proxy)
    setup_admin(app)
    client = await aiohttp_client(app)
    answer = await client.post("/_cache/login", data={"token": TOKEN}, allow_redirects=False)
    assert answer.status == 303
    assert "Secure" in answer.headers["Set-Cookie"].split("; ")


@pytest.mark.parametrize(
    "form", [{"token": "wrong"}, {"token": TOKEN[:-1]}, {}, {"token": ""}, {"other": TOKEN}]
)
async def test_a_wrong_sign_in_is_the_same_401(site: Any, form: dict[str, str]) -> None:
    wrong = await site.post("/_cache/login", data=form, headers=HTML, allow_redirects=False)
    anywhere = await site.get("/_cache/no-such-page", headers=HTML)
    assert wrong.status == anywhere.status == 401
    assert await wrong.read() == await anywhere.read()
    assert SESSION_COOKIE not in wrong.cookies


async def test_the_sign_in_form_is_the_same_for_every_path(site: Any) -> None:
    bodies = set()
    for method, path in [
        ("GET", "/_cache/"),
        ("GET", "/_cache/stats"),
        ("GET", "/_cache/no-such-page"),
        ("GET", "/_cache/dashboard.js"),
        ("POST", "/_cache/purge"),
        ("DELETE", "/_cache/history"),
        ("POST", "/_cache/logout"),
        ("GET", "/_cache/login"),
    ]:
        answer = await site.request(method, path, headers=HTML)
        assert answer.status == 401, path
        assert answer.headers["Content-Type"] == "text/html; charset=utf-8"
        assert answer.headers["WWW-Authenticate"] == 'Bearer realm="cachekit"'
        assert "frame-ancestors 'none'" in answer.headers["Content-Security-Policy"]
        bodies.add(await answer.read())
    (body,) = bodies
    assert b"action='/_cache/login'" in body and b"name=token" in body
    assert TOKEN.encode() not in body
    # Clients that do not ask for HTML get the JSON 401, as before.
    assert await (await site.get("/_cache/")).json() == {"error": "unauthorized"}


async def test_the_page(site: Any) -> None:
    await site.get("/products/1")
    await site.get("/products/1")
    await site.get("/odd")
    answer = await site.get("/_cache/", headers=AUTH)
    assert answer.status == 200
    assert answer.headers["Content-Type"] == "text/html; charset=utf-8"
    policy = answer.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "default-src 'none'" in policy
    page = await answer.text()
    assert '<script src="dashboard.js" defer></script>' in page
    assert "<td>get_product</td>" in page
    assert "&lt;b&gt;odd&amp;name&lt;/b&gt;" in page and "<b>odd" not in page
    assert 'id="hit-ratio">33.3 %<' in page  # one hit of three requests
    assert "http://" not in page and "https://" not in page  # nothing from elsewhere
    assert TOKEN not in page


@pytest.mark.parametrize(("name", "media_type"), sorted(ASSETS.items()))
async def test_the_assets_are_served_from_the_package(
    site: Any, name: str, media_type: str
) -> None:
    answer = await site.get(f"/_cache/{name}", headers=AUTH)
    assert answer.status == 200
    assert answer.content_type == media_type
    body = await answer.text()
    assert len(body) > 100
    # No CDN, no font or script from anywhere else (the SVG names its XML namespace).
    assert not re.search(r"(src|href|url)\s*[=(]\s*[\"']?(https?:)?//", body), name


async def test_history_json(site: Any) -> None:
    await site.get("/products/1")
    await site.get("/products/1")
    data = await (await site.get("/_cache/history", headers=AUTH)).json()
    assert data["interval_seconds"] == 10 and data["capacity"] == 90
    assert len(data["times"]) == 1
    product = data["handlers"]["get_product"]
    assert product["requests"] == [2] and product["hit_ratio"] == [0.5]
    assert product["totals"]["miss"] == 1 and product["totals"]["fills"] == 1
    # The embedded store: only this worker's figures, and the page says so.
    assert (data["scope"], data["workers"]) == ("process", 1)
    page = await (await site.get("/_cache/", headers=AUTH)).text()
    assert "Figures of this worker" in page and 'id="scope"' in page


@pytest.mark.parametrize(
    ("scope", "workers", "text"),
    [
        ("cluster", 3, "all 3 workers"),
        ("cluster", 1, "all 1 worker"),
        ("process", 1, "this worker"),
        ("cluster", None, "this worker"),  # a field missing: the narrower claim
        (None, 2, "this worker"),
        ("cluster", "<b>", "this worker"),
    ],
)
def test_the_page_says_whose_figures_it_shows(scope: Any, workers: Any, text: str) -> None:
    assert scope_text(scope, workers) == text
    page = render_page({}, {}, "/_cache/logout", scope_text(scope, workers))
    assert f'<span id="scope">Figures of {text}</span>' in page


def test_the_page_ignores_what_it_does_not_know() -> None:
    """`/stats` may gain fields (or lose the store's sizes): the page still renders."""
    handlers = {
        "page": {
            "requests": [3],
            "hit_ratio": [1.0],
            "fill_ms": [None],
            "totals": {
                **dict.fromkeys(("hit", "stale", "revalidated", "miss", "collapsed"), 0),
                "bypass": 0,
                "hit": 3,
                "requests": 3,
                "fills": 0,
                "fill_ms": None,
            },
        }
    }
    process = {"store": "redis", "breaker_open": True, "workers": {"a": 1}, "keys": [1, 2]}
    page = render_page(process, handlers, "/_cache/logout")
    assert 'id="breaker">open<' in page and 'id="store-size">\u2013<' in page
    assert 'id="hit-ratio">100.0 %<' in page and "redis store" in page
