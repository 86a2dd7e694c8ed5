"""`cachekit.admin_auth`'s limit on guessing: wrong tokens per client address and minute,
at `/login` and in bearer headers, answered 429 without comparing; session cookies keep
working; the table of addresses stays bounded. (Signing in, the cookie and the one 401:
tests/test_dashboard.py.)"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from cachekit.admin_auth import (
    FAILED_ATTEMPTS_PER_MINUTE,
    SESSION_COOKIE,
    TRACKED_ADDRESSES,
    AdminAuth,
    FailedAttempts,
    session_value,
)

TOKEN = b"right-" + b"t" * 40
PREFIX = "/_cache"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


async def guarded(aiohttp_client: Any, clock: Clock) -> Any:
    auth = AdminAuth(TOKEN, PREFIX, clock=clock)

    async def stats(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application(middlewares=[auth.middleware])
    app.router.add_get(f"{PREFIX}/stats", stats)
    app.router.add_get(f"{PREFIX}/", stats)
    return await aiohttp_client(app)


async def login(client: Any, token: str) -> Any:
    return await client.post(f"{PREFIX}/login", data={"token": token}, allow_redirects=False)


async def test_wrong_logins_past_the_limit_wait_out_the_minute(aiohttp_client: Any) -> None:
    clock = Clock()
    client = await guarded(aiohttp_client, clock)
    for _ in range(FAILED_ATTEMPTS_PER_MINUTE):
        assert (await login(client, "guess")).status == 401
    blocked = await login(client, TOKEN.decode())  # even the right token is not compared
    assert blocked.status == 429
    assert 1 <= int(blocked.headers["Retry-After"]) <= 60
    assert blocked.headers["Cache-Control"] == "no-store"
    clock.now += 61
    assert (await login(client, TOKEN.decode())).status == 303


async def test_wrong_bearer_tokens_count_and_a_session_cookie_still_reads(
    aiohttp_client: Any,
) -> None:
    clock = Clock()
    client = await guarded(aiohttp_client, clock)
    wrong = {"Authorization": "Bearer guess"}
    for _ in range(FAILED_ATTEMPTS_PER_MINUTE):
        assert (await client.get(f"{PREFIX}/stats", headers=wrong)).status == 401
    right = {"Authorization": "Bearer " + TOKEN.decode()}
    assert (await client.get(f"{PREFIX}/stats", headers=right)).status == 429
    cookie = session_value(TOKEN, int(clock.now) + 3600)
    signed_in = await client.get(f"{PREFIX}/stats", cookies={SESSION_COOKIE: cookie})
    assert signed_in.status == 200
    clock.now += 61
    assert (await client.get(f"{PREFIX}/stats", headers=right)).status == 200


async def test_requests_without_credentials_are_not_counted(aiohttp_client: Any) -> None:
    clock = Clock()
    client = await guarded(aiohttp_client, clock)
    for _ in range(3 * FAILED_ATTEMPTS_PER_MINUTE):
        assert (await client.get(f"{PREFIX}/stats")).status == 401
    assert (await login(client, TOKEN.decode())).status == 303


async def test_fewer_wrong_tokens_than_the_limit_never_block(aiohttp_client: Any) -> None:
    clock = Clock()
    client = await guarded(aiohttp_client, clock)
    for _ in range(3):  # a new window each minute
        for _ in range(FAILED_ATTEMPTS_PER_MINUTE - 1):
            assert (await login(client, "typo")).status == 401
        clock.now += 61
    assert (await login(client, TOKEN.decode())).status == 303


def test_addresses_are_counted_apart_and_the_table_stays_bounded() -> None:
    clock = Clock()
    attempts = FailedAttempts(clock)
    for _ in range(FAILED_ATTEMPTS_PER_MINUTE):
        attempts.failed("192.0.2.1")
    assert attempts.wait("192.0.2.1") > 0
    assert attempts.wait("192.0.2.2") == 0
    for n in range(3 * TRACKED_ADDRESSES):
        attempts.failed(f"10.0.{n // 256}.{n % 256}")
        assert len(attempts._windows) <= TRACKED_ADDRESSES
