"""End-to-end tests of demo_app: in process with the embedded store, and as a subprocess."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from cachekit import CacheSettings
from demo_app.app import create_app
from demo_app.config import ConfigError, DemoConfig, redact_url
from demo_app.upstream import CATALOGUE

REPO_ROOT = Path(__file__).resolve().parent.parent
# Bounds for the subprocess tests, so a hung child fails the test instead of the CI run.
EXIT_TIMEOUT = 20.0
STARTUP_TIMEOUT = 20.0

Client = TestClient[web.Request, web.Application]


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> web.Application:
    """The demo with the embedded store, whatever CACHEKIT_* the developer has exported."""
    for name in list(os.environ):
        if name.upper().startswith("CACHEKIT_"):
            monkeypatch.delenv(name)
    return create_app(CacheSettings(), upstream_delay=0.01)


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, app: web.Application) -> Client:
    """A test client bound to a running demo app."""
    return await aiohttp_client(app)


def upstream_calls(client: Client) -> int:
    """How many times the fake upstream has been called so far."""
    return client.app[CATALOGUE].calls


async def get_json(client: Client, path: str, status: int = 200) -> tuple[Any, str | None]:
    """GET ``path``, check the status and return the JSON body and the X-Cache header."""
    resp = await client.get(path)
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    return await resp.json(), resp.headers.get("X-Cache")


async def test_second_get_of_a_product_is_a_hit_and_spares_the_upstream(client: Client) -> None:
    first = await client.get("/products/3")
    assert first.status == 200
    assert first.headers["X-Cache"] == "MISS"
    assert "Cache-Status" in first.headers
    body = await first.json()
    assert body["id"] == 3
    assert set(body) == {"id", "name", "price", "updated_at"}

    second = await client.get("/products/3")
    assert second.status == 200
    assert second.headers["X-Cache"] == "HIT"
    assert "Cache-Status" in second.headers
    assert await second.json() == body
    assert upstream_calls(client) == 1


async def test_a_stale_product_is_revalidated_with_a_version_check(
    cache_clock: Any, client: Client
) -> None:
    # cache_clock first: the cache reads the clock when the app is set up.
    first = await client.get("/products/3")
    etag = first.headers["ETag"]
    cache_clock.advance(31)  # past the 30 s TTL
    again = await client.get("/products/3")
    assert again.headers["X-Cache"] == "REVALIDATED" and again.headers["ETag"] == etag
    assert await again.json() == await first.json()
    assert upstream_calls(client) == 1  # the version check is not a slow upstream call
    assert client.app[CATALOGUE].version_checks == 2
    # A changed product: the version differs, the handler renders it anew.
    await client.app[CATALOGUE].update_price(3, 1.5)
    cache_clock.advance(31)
    changed = await client.get("/products/3")
    assert changed.headers["X-Cache"] == "MISS" and (await changed.json())["price"] == 1.5
    assert changed.headers["ETag"] != etag


async def test_list_pages_differ_and_are_cached_separately(client: Client) -> None:
    page1, cache1 = await get_json(client, "/products?page=1")
    page2, cache2 = await get_json(client, "/products?page=2")
    assert (cache1, cache2) == ("MISS", "MISS")
    assert [item["id"] for item in page1["items"]] == list(range(1, 11))
    assert [item["id"] for item in page2["items"]] == list(range(11, 21))
    assert page1["total"] == page2["total"] == 50
    assert page1["pages"] == 5

    again, cache = await get_json(client, "/products?page=2")
    assert (again, cache) == (page2, "HIT")
    # No page means page 1, and shares its entry.
    default, cache = await get_json(client, "/products")
    assert (default, cache) == (page1, "HIT")
    assert upstream_calls(client) == 2


async def test_past_the_last_page_is_empty(client: Client) -> None:
    body, _ = await get_json(client, "/products?page=6")
    assert body["items"] == []
    assert body["page"] == 6


@pytest.mark.parametrize("page", ["0", "-1", "abc", "1.5", ""])
async def test_invalid_page_is_400(client: Client, page: str) -> None:
    body, _ = await get_json(client, f"/products?page={page}", status=400)
    assert "page" in body["error"]


async def test_update_invalidates_the_product_and_the_list(client: Client) -> None:
    before, cache = await get_json(client, "/products/5")
    assert cache == "MISS"
    _, cache = await get_json(client, "/products/5")
    assert cache == "HIT"
    page, _ = await get_json(client, "/products?page=1")

    resp = await client.post("/products/5", json={"price": 123.45})
    assert resp.status == 200, await resp.text()
    updated = await resp.json()
    assert updated["price"] == 123.45
    assert updated["updated_at"] != before["updated_at"]

    after, cache = await get_json(client, "/products/5")
    assert (after["price"], cache) == (123.45, "MISS")
    _, cache = await get_json(client, "/products/5")
    assert cache == "HIT"

    new_page, cache = await get_json(client, "/products?page=1")
    assert cache == "MISS"
    assert new_page != page
    assert new_page["items"][4]["price"] == 123.45


async def test_unknown_product_is_a_cached_404(client: Client) -> None:
    body, cache = await get_json(client, "/products/999", status=404)
    assert cache == "MISS"
    assert body == {"error": "no such product"}
    again, cache = await get_json(client, "/products/999", status=404)
    assert (again, cache) == (body, "HIT")
    assert upstream_calls(client) == 1


@pytest.mark.parametrize("product_id", ["abc", "007", "0", "-1"])
async def test_non_canonical_ids_are_404_without_calling_upstream(
    client: Client, product_id: str
) -> None:
    body, _ = await get_json(client, f"/products/{product_id}", status=404)
    assert body == {"error": "no such product"}
    assert upstream_calls(client) == 0


async def test_stats_report_hits_misses_and_upstream_calls(client: Client) -> None:
    await get_json(client, "/products/1")
    await get_json(client, "/products/1")
    await get_json(client, "/products/2")

    stats, cache = await get_json(client, "/cache/stats")
    assert cache is None  # the stats endpoint itself is never cached
    assert stats["cache"]["hits"] == 1
    assert stats["cache"]["misses"] == 2
    assert stats["upstream"]["calls"] == 2
    assert stats["upstream"]["delay_seconds"] == 0.01

    # Asked again, the stats move: a cached copy would not.
    await get_json(client, "/products/2")
    stats, _ = await get_json(client, "/cache/stats")
    assert stats["cache"]["hits"] == 2


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"",
        b"[12.5]",
        b"{}",
        b'{"price": "cheap"}',
        b'{"price": true}',
        b'{"price": -1}',
        b'{"price": 1e12}',
        b'{"price": NaN}',
        b'{"price": Infinity}',
        b'{"price": 1}\xff',
    ],
)
async def test_bad_update_body_is_400(client: Client, body: bytes) -> None:
    resp = await client.post("/products/5", data=body, headers={"Content-Type": "application/json"})
    assert resp.status == 400
    assert "error" in await resp.json()
    # Validation comes first, so nothing reaches the upstream or the cache.
    assert upstream_calls(client) == 0


async def test_update_of_unknown_product_is_404(client: Client) -> None:
    resp = await client.post("/products/999", json={"price": 1})
    assert resp.status == 404
    assert await resp.json() == {"error": "no such product"}


async def test_index_lists_the_endpoints(client: Client) -> None:
    body, cache = await get_json(client, "/")
    assert cache is None
    paths = {endpoint["path"] for endpoint in body["endpoints"]}
    assert {"/products/{id}", "/cache/stats"} <= paths


async def test_the_same_flow_works_over_real_redis(
    aiohttp_client: AiohttpClient, real_redis_url: str
) -> None:
    client = await aiohttp_client(
        create_app(CacheSettings(redis_url=real_redis_url), upstream_delay=0.01)
    )
    _, cache = await get_json(client, "/products/8")
    assert cache == "MISS"
    _, cache = await get_json(client, "/products/8")
    assert cache == "HIT"
    resp = await client.post("/products/8", json={"price": 9.5})
    assert resp.status == 200
    body, cache = await get_json(client, "/products/8")
    assert (body["price"], cache) == (9.5, "MISS")
    stats, _ = await get_json(client, "/cache/stats")
    assert stats["cache"]["store"] == "redis"
    assert stats["cache"]["errors"] == 0
    assert stats["upstream"]["calls"] == 3


def test_config_defaults_and_overrides() -> None:
    assert DemoConfig.from_env({}) == DemoConfig("127.0.0.1", 8080, 0.05)
    env = {"DEMO_HOST": "0.0.0.0", "DEMO_PORT": "9000", "DEMO_UPSTREAM_DELAY": "0"}
    assert DemoConfig.from_env(env) == DemoConfig("0.0.0.0", 9000, 0.0)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DEMO_PORT", "abc"),
        ("DEMO_PORT", "0"),
        ("DEMO_PORT", "65536"),
        ("DEMO_PORT", "+80"),
        ("DEMO_UPSTREAM_DELAY", "-1"),
        ("DEMO_UPSTREAM_DELAY", "nan"),
        ("DEMO_UPSTREAM_DELAY", "slow"),
    ],
)
def test_config_errors_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        DemoConfig.from_env({name: value})


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        ("redis://:s3cret@cache:6379/0", "redis://:***@cache:6379/0"),
        ("rediss://user:p%40ss@cache/1", "rediss://user:***@cache/1"),
        ("redis://user@cache", "redis://user@cache"),
        ("redis://cache/0?password=s3cret&db=2", "redis://cache/0?password=***&db=2"),
    ],
)
def test_redact_url_hides_passwords(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def demo_env(**overrides: str) -> dict[str, str]:
    """The environment for a ``python -m demo_app`` child: embedded store, importable repo."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("CACHEKIT_", "DEMO_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.update(overrides)
    return env


@pytest.mark.parametrize(
    ("name", "value"),
    [("DEMO_PORT", "abc"), ("DEMO_PORT", "99999"), ("CACHEKIT_DEFAULT_TTL", "-5")],
)
def test_invalid_environment_exits_with_a_message_not_a_traceback(name: str, value: str) -> None:
    # A free DEMO_PORT unless under test: should validation fail to stop the child, it must
    # not take the developer's 8080 while it runs into the timeout.
    env = demo_env(**{"DEMO_PORT": str(free_port()), "DEMO_UPSTREAM_DELAY": "0", name: value})
    result = subprocess.run(
        [sys.executable, "-m", "demo_app"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=EXIT_TIMEOUT,
        check=False,
    )
    assert result.returncode != 0
    assert name in result.stderr
    assert "Traceback" not in result.stderr


def test_invalid_redis_url_error_does_not_echo_the_password() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "demo_app"],
        cwd=REPO_ROOT,
        env=demo_env(DEMO_PORT=str(free_port()), CACHEKIT_REDIS_URL="http://:hunter2@cache:6379"),
        capture_output=True,
        text=True,
        timeout=EXIT_TIMEOUT,
        check=False,
    )
    assert result.returncode != 0
    assert "CACHEKIT_REDIS_URL" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout


def free_port() -> int:
    """A loopback port that was free a moment ago (the child binds it right after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_json(url: str, deadline: float, proc: subprocess.Popen[str]) -> Any:
    """Poll ``url`` until it answers 200 with JSON, the child dies, or ``deadline`` passes."""
    while True:
        assert proc.poll() is None, "the demo exited before it answered"
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return json.load(resp)
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_python_m_demo_app_serves_and_stops_on_sigint() -> None:
    port = free_port()
    with subprocess.Popen(
        [sys.executable, "-m", "demo_app"],
        cwd=REPO_ROOT,
        env=demo_env(DEMO_HOST="127.0.0.1", DEMO_PORT=str(port), DEMO_UPSTREAM_DELAY="0"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as proc:
        try:
            deadline = time.monotonic() + STARTUP_TIMEOUT
            index = wait_for_json(f"http://127.0.0.1:{port}/", deadline, proc)
            assert index["service"] == "cachekit demo"
            product = wait_for_json(f"http://127.0.0.1:{port}/products/1", deadline, proc)
            assert product["id"] == 1
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as metrics:
                assert b"cachekit_requests_total" in metrics.read()
            stats_url = f"http://127.0.0.1:{port}/_cache/stats"
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(stats_url, timeout=5)
            assert refused.value.code == 401
            refused.value.close()
        finally:
            # SIGINT is what Ctrl+C sends: run_app shuts down cleanly on it.
            proc.send_signal(signal.SIGINT)
            try:
                output, _ = proc.communicate(timeout=EXIT_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                output, _ = proc.communicate()
                pytest.fail(f"the demo did not stop on SIGINT:\n{output}")
    assert proc.returncode == 0, output
    assert "store: memory" in output
    assert "Traceback" not in output
    # A made-up admin token, printed once with a command that uses it.
    (line,) = [line for line in output.splitlines() if line.startswith("admin API: curl")]
    assert f"http://127.0.0.1:{port}/_cache/stats" in line
    token = line.split("Bearer ")[1].split("'")[0]
    assert len(token) >= 32
    # The dashboard's address, without the token (it goes into the sign-in form).
    (line,) = [line for line in output.splitlines() if line.startswith("dashboard: ")]
    assert line == f"dashboard: http://127.0.0.1:{port}/_cache/ (sign in with the token above)"


def test_the_demo_mounts_the_admin_api_with_a_token(tmp_path: Path) -> None:
    from demo_app.__main__ import with_operator_extras  # noqa: PLC0415

    settings = with_operator_extras(CacheSettings())
    assert settings.admin_token is not None
    assert len(settings.admin_token.get_secret_value()) >= 32
    assert settings.metrics_path == "/metrics"
    chosen = with_operator_extras(CacheSettings(admin_token="x" * 40, metrics_path="/m"))
    assert chosen.admin_token is not None and chosen.admin_token.get_secret_value() == "x" * 40
    assert chosen.metrics_path == "/m"
