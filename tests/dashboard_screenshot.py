"""`python -m tests.dashboard_screenshot [docs/dashboard.png]` (`make dashboard-screenshot`):
the README's picture of the admin dashboard, taken with Debian's chromium after a few
minutes of made-up traffic on a small shop app (five cached handlers with different hit
ratios, fill times, stale hits and bypasses; a tag purge half way through).

Everything runs on 127.0.0.1; the token is made up for the run and never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import secrets
import sys
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from cachekit import CacheSettings, cached, setup_cache
from cachekit.admin import setup_admin
from cachekit.dashboard import HISTORY
from tests.dashboard_browser import browser_page, chromium_path, serving, sign_in

ROOT = Path(__file__).resolve().parent.parent
CONCURRENCY = 8


def shop_app(token: str) -> tuple[web.Application, web.Application]:
    """Five cached handlers whose responses take a few milliseconds to make, and the admin
    sub-application."""
    routes = web.RouteTableDef()

    async def work(low: float, high: float) -> None:
        await asyncio.sleep(random.uniform(low, high))

    @routes.get("/products/{id}")
    @cached(ttl=20, key="product:{match_info[id]}", tags=["products"])
    async def get_product(request: web.Request) -> web.Response:
        await work(0.01, 0.03)
        return web.json_response({"id": request.match_info["id"]})

    @routes.get("/products")
    @cached(ttl=10, tags=["products"])
    async def list_products(request: web.Request) -> web.Response:
        await work(0.03, 0.06)
        return web.json_response({"page": request.query.get("page", "1")})

    @routes.get("/search")
    @cached(ttl=30)
    async def search(request: web.Request) -> web.Response:
        await work(0.04, 0.09)
        return web.json_response({"q": request.query.get("q", "")})

    @routes.get("/users/{id}")
    @cached(ttl=60)
    async def get_profile(request: web.Request) -> web.Response:
        await work(0.005, 0.01)
        return web.json_response({"user": request.match_info["id"]})

    @routes.get("/reports/daily")
    @cached(ttl=3, stale_ttl=60)
    async def daily_report(request: web.Request) -> web.Response:
        await work(0.1, 0.15)
        return web.json_response({"report": "daily"})

    app = web.Application()
    app.add_routes(routes)
    setup_cache(app, CacheSettings(redis_url=None, admin_token=token))
    return app, setup_admin(app)


def next_path(rng: random.Random) -> tuple[str, dict[str, str]]:
    """One request of the made-up traffic: a path and its headers."""
    roll = rng.random()
    if roll < 0.45:
        return f"/products/{min(int(rng.paretovariate(1.2)), 300)}", {}
    if roll < 0.6:
        return f"/products?page={rng.randint(1, 4)}", {}
    if roll < 0.75:
        return f"/search?q={rng.choice('abcdefghij')}{rng.randint(0, 60)}", {}
    if roll < 0.9:
        signed_in = rng.random() < 0.4
        headers = {"Authorization": "Bearer user"} if signed_in else {}
        return f"/users/{rng.randint(1, 20)}", headers
    return "/reports/daily", {}


async def traffic(base: str, seconds: float, purge: tuple[str, str]) -> int:
    """Requests at a varying pace for `seconds`; purges the `products` tag half way."""
    rng = random.Random(7)
    deadline = time.monotonic() + seconds
    purge_at = time.monotonic() + seconds / 2
    sent = 0
    async with aiohttp.ClientSession(base) as session:

        async def one() -> None:
            path, headers = next_path(rng)
            async with session.get(path, headers=headers) as answer:
                await answer.read()

        while time.monotonic() < deadline:
            await asyncio.gather(*(one() for _ in range(CONCURRENCY)))
            sent += CONCURRENCY
            if purge_at and time.monotonic() >= purge_at:
                url, token = purge
                async with session.post(
                    url, json={"tags": ["products"]}, headers={"Authorization": f"Bearer {token}"}
                ) as answer:
                    answer.raise_for_status()
                purge_at = 0.0
            await asyncio.sleep(rng.uniform(0.0, 0.05))
    return sent


async def take(path: Path, seconds: float, interval: float) -> None:
    """Serve the shop, send traffic, sign in with chromium and screenshot the page."""
    executable = chromium_path()
    if executable is None:
        raise SystemExit("chromium not found (Debian: apt-get install chromium)")
    token = secrets.token_urlsafe(32)
    app, admin = shop_app(token)
    admin[HISTORY].interval = interval  # the sampler reads it at each turn
    async with serving(app) as base:
        sent = await traffic(base, seconds, ("/_cache/purge", token))
        viewport = {"width": 1100, "height": 1000}
        async with browser_page(executable, viewport=viewport, color_scheme="light") as page:
            await sign_in(page, base, token)
            await page.wait_for_selector("#chart svg circle")
            await page.screenshot(path=str(path), full_page=True)
    print(f"{path}: {sent} requests over {seconds:.0f} s, sampled every {interval:g} s")


def main() -> None:
    """Command line: the output path, the traffic's length and the sampling interval."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("path", nargs="?", default=str(ROOT / "docs" / "dashboard.png"))
    parser.add_argument("--seconds", type=float, default=150.0, help="length of the traffic")
    parser.add_argument("--interval", type=float, default=5.0, help="history sampling interval")
    args = parser.parse_args()
    path = Path(args.path)
    path.parent.mkdir(parents=True, exist_ok=True)
    asyncio.run(take(path, args.seconds, args.interval))


if __name__ == "__main__":
    sys.exit(main())
