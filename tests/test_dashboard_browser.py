"""The admin dashboard in a real headless browser: Debian's `chromium` driven by Playwright
(tests/dashboard_browser.py), against a real aiohttp server on 127.0.0.1.

Without chromium the test is skipped, except under `CI=true`, where it fails: CI must run
it (`.ci/run` installs the package when `chromium` is missing).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from playwright.async_api import expect

from cachekit import cached
from cachekit.admin import setup_admin
from cachekit.admin_auth import SESSION_COOKIE
from cachekit.dashboard import HISTORY
from tests.apps import make_app
from tests.conftest import in_ci
from tests.dashboard_browser import browser_page, chromium_path, serving, submit_token

TOKEN = "browser-" + "t" * 40


@pytest.fixture
def chromium() -> Iterator[str]:
    path = chromium_path()
    if path is None:
        message = "chromium not found (Debian: apt-get install chromium)"
        if in_ci():
            pytest.fail(f"{message}; CI=true, so the browser test must run", pytrace=False)
        pytest.skip(message)
    yield path


def shop() -> tuple[web.Application, web.Application]:
    routes = web.RouteTableDef()

    @routes.get("/products/{id}")
    @cached(ttl=60, key="product:{match_info[id]}")
    async def get_product(request: web.Request) -> web.Response:
        await asyncio.sleep(0.002)
        return web.Response(text=f"product {request.match_info['id']}")

    @routes.get("/search")
    @cached(ttl=60)
    async def search(request: web.Request) -> web.Response:
        return web.Response(text=f"results for {request.query.get('q')}")

    app, _ = make_app(routes, admin_token=TOKEN)
    return app, setup_admin(app)


async def send(base: str, paths: list[str]) -> None:
    async with aiohttp.ClientSession(base) as session:
        for path in paths:
            async with session.get(path) as answer:
                assert answer.status == 200


async def test_the_dashboard_in_chromium(chromium: str) -> None:
    app, admin = shop()
    admin[HISTORY].interval = 0.5  # a few samples during the test
    async with serving(app) as base:
        await send(base, [f"/products/{n % 4}" for n in range(20)])
        await send(base, [f"/search?q={n}" for n in range(5)])
        await asyncio.sleep(0.6)
        async with browser_page(chromium) as page:
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("requestfailed", lambda r: errors.append(f"failed {r.url}"))
            responses: list[tuple[int, str]] = []
            page.on("response", lambda r: responses.append((r.status, r.url)))

            # Any path answers the same sign-in form; a wrong token gets it again.
            await page.goto(f"{base}/_cache/stats")
            assert await page.locator("input[name=token]").count() == 1
            await submit_token(page, "not the token")
            assert await page.locator("input[name=token]").count() == 1
            # The browser shows the two 401 documents as console errors: only those.
            assert all("401" in error for error in errors), errors
            errors.clear()
            responses.clear()

            await submit_token(page, TOKEN)
            assert page.url == f"{base}/_cache/"
            await page.wait_for_selector("#chart svg circle")
            points = await page.locator("#chart svg circle title").all_text_contents()
            assert {point.split(" ")[0] for point in points} == {"get_product", "search"}
            table = await page.inner_text("#handlers")
            assert "get_product" in table and "search" in table
            first_row = await page.inner_text("#handlers tbody tr:first-child")
            assert first_row.startswith("search")  # five misses: the most
            legend = await page.inner_text("#legend")
            assert "get_product" in legend and "search" in legend
            assert await page.inner_text("#requests") == "25"
            assert await page.inner_text("#breaker") == "closed"
            assert "entries" in await page.inner_text("#store-size")

            # The page redraws itself from the JSON: more traffic shows up without a reload.
            await send(base, ["/products/9", "/products/9"])
            await expect(page.locator("#requests")).to_have_text("27", timeout=10_000)
            assert errors == [], errors
            assert all(status == 200 for status, _ in responses[1:]), responses
            assert {url.rsplit("/", 1)[1] for _, url in responses} >= {
                "dashboard.js",
                "dashboard.css",
                "favicon.svg",
                "stats",
                "history",
            }

            # The cookie: HttpOnly, SameSite=Strict, only under the prefix, not the token.
            (cookie,) = await page.context.cookies()
            assert cookie["name"] == SESSION_COOKIE and TOKEN not in cookie["value"]
            assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
            assert cookie["path"] == "/_cache"
            assert await page.evaluate("document.cookie") == ""
            # It reads, but it cannot purge: that needs the bearer header.
            purge = await page.evaluate(
                "fetch('purge', {method: 'POST', body: '{\"namespace\": true}'})"
                ".then(r => r.status)"
            )
            assert purge == 401

            async with page.expect_navigation():
                await page.click("text=Sign out")
            assert await page.locator("input[name=token]").count() == 1
            assert await page.context.cookies() == []


async def test_the_page_survives_new_fields_in_stats(chromium: str) -> None:
    """Another version may add to `/stats`: the page reads only what it knows."""
    app, _ = shop()
    async with serving(app) as base:
        await send(base, ["/products/1", "/products/1"])
        async with browser_page(chromium) as page:
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))

            async def grown(route: Any) -> None:
                answer = await route.fetch()
                stats = await answer.json()
                stats["process"].update({"breaker_open": True, "workers": [{"pid": 1}]})
                stats["handlers"]["get_product"]["keys"] = {"estimate": 3}
                stats["cluster"] = None
                await route.fulfill(response=answer, body=json.dumps(stats))

            await page.route("**/_cache/stats", grown)
            await page.goto(f"{base}/_cache/")
            errors.clear()  # the sign-in form's 401
            await submit_token(page, TOKEN)
            await expect(page.locator("#breaker")).to_have_text("open", timeout=10_000)
            await page.wait_for_selector("#chart svg circle")
            assert "get_product" in await page.inner_text("#handlers")
            assert errors == [], errors
