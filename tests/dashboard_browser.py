"""Driving the admin dashboard in a real browser: Debian's `chromium` through Playwright's
Python package (its own browser download is not used: `executable_path`), and serving an
app on a free 127.0.0.1 port. Used by tests/test_dashboard_browser.py and by
`python -m tests.dashboard_screenshot` (the README's picture).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from playwright.async_api import async_playwright

#: Where Debian's package puts it; PATH first, for other systems.
DEBIAN_CHROMIUM = "/usr/bin/chromium"


def chromium_path() -> str | None:
    """The chromium binary to drive, or None when the machine has none."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    return DEBIAN_CHROMIUM if os.access(DEBIAN_CHROMIUM, os.X_OK) else None


@contextlib.asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    """Serve `app` on 127.0.0.1 and a free port (startup and cleanup hooks run); yields
    the base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def browser_page(executable: str, **context: Any) -> AsyncIterator[Any]:
    """A fresh page of a headless chromium (Playwright's async API)."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, headless=True)
        try:
            browser_context = await browser.new_context(**context)
            yield await browser_context.new_page()
        finally:
            await browser.close()


async def sign_in(page: Any, base: str, token: str, prefix: str = "/_cache") -> None:
    """Open the dashboard (the sign-in form, as any path would answer) and sign in."""
    await page.goto(f"{base}{prefix}/")
    await submit_token(page, token)


async def submit_token(page: Any, token: str) -> None:
    """Type the token into the sign-in form on the page and send it."""
    await page.fill("input[name=token]", token)
    async with page.expect_navigation():
        await page.click("button")
