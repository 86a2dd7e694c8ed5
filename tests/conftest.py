"""Shared pytest fixtures for the cachekit test suite.

Sections (add new ones below, each under its own banner):

1. Real Redis processes: ``redis_server`` / ``real_redis_url``, ``make_redis_server``,
   ``redis_cluster`` / ``cluster_url``, ``redis_sentinel``. Backed by
   ``tests/redis_servers.py``: every server is ours, on 127.0.0.1 and a free port
   (never the machine's Redis on 6379).
   Without ``redis-server`` on PATH these tests are skipped, except under ``CI=true``,
   where they fail: CI must run them. Tests using them are marked ``real_redis``
   automatically, so ``pytest -m "not real_redis"`` deselects them.
2. Environment: no CACHEKIT_* variables leak in from the shell.
3. Event loops: async tests that talk to Redis (a real server, or the scripted one of
   ``test_lookup_channel``) run on asyncio's own loop and on uvloop, the loop
   production aiohttp servers often run on (aiohttp's ``GunicornUVLoopWebWorker``);
   their ids end in ``[asyncio]`` / ``[uvloop]``. Other async tests run on asyncio's.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest

from tests.apps import STORE_KINDS
from tests.redis_servers import MakeRedisServer, RedisCluster, RedisSentinelSetup, RedisServer

# =========================================================================== 1. real Redis

REAL_REDIS_FIXTURES = frozenset(
    {
        "redis_server",
        "real_redis_url",
        "make_redis_server",
        "redis_cluster",
        "cluster_url",
        "redis_sentinel",
    }
)


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def require_binaries(*names: str) -> None:
    """Skip the test if a binary is missing from PATH; fail instead when CI=true."""
    missing = [name for name in names if shutil.which(name) is None]
    if not missing:
        return
    msg = (
        f"{', '.join(missing)} not found on PATH (Debian: apt-get install redis-server redis-tools)"
    )
    if in_ci():
        pytest.fail(f"{msg}; CI=true, so real-Redis tests must run, not skip", pytrace=False)
    pytest.skip(msg)


def uses_real_redis(item: pytest.Item) -> bool:
    """Whether the test asks for one of our real Redis processes by fixture name."""
    return bool(REAL_REDIS_FIXTURES.intersection(getattr(item, "fixturenames", ())))


@pytest.fixture(params=STORE_KINDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    """The store a test runs against: the embedded one, fakeredis, or one of our real Redis
    servers (started here, so the test is marked and runs on uvloop too)."""
    if request.param == "redis":
        request.getfixturevalue("real_redis_url")
    return str(request.param)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if uses_real_redis(item):
            item.add_marker(pytest.mark.real_redis)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A standalone redis-server of our own for the whole session.

    Tests may kill/stop/restart it; ``real_redis_url`` brings it back for the next test.
    """
    require_binaries("redis-server")
    with RedisServer(name="session") as server:
        yield server


@pytest.fixture
def real_redis_url(redis_server: RedisServer) -> str:
    """URL (``redis://127.0.0.1:<port>/0``) of the session server, flushed before the test."""
    redis_server.ensure_running()  # restarts it (same port) if a previous test killed it
    redis_server.flushall()
    return redis_server.url


@pytest.fixture
def make_redis_server() -> Iterator[MakeRedisServer]:
    """Factory for extra private servers (``RedisServer(**kwargs)``), stopped after the test.

    For tests that crash/restart a server or need special options, without
    disturbing the shared ``redis_server``.
    """
    require_binaries("redis-server")
    servers: list[RedisServer] = []

    def make(*, start: bool = True, **kwargs: Any) -> RedisServer:
        server = RedisServer(**kwargs)
        servers.append(server)
        return server.start() if start else server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """A 3-master Redis Cluster of our own for the whole session."""
    require_binaries("redis-server", "redis-cli")
    with RedisCluster() as cluster:
        yield cluster


@pytest.fixture
def cluster_url(redis_cluster: RedisCluster) -> str:
    """URL (``redis://127.0.0.1:<first node port>``) of the cluster, every node flushed."""
    redis_cluster.ensure_healthy()  # restarts killed nodes, waits for cluster_state:ok
    redis_cluster.flushall()
    return redis_cluster.url


@pytest.fixture
def redis_sentinel() -> Iterator[RedisSentinelSetup]:
    """A fresh primary + replica + Sentinel per test (tests fail it over)."""
    require_binaries("redis-server")
    with RedisSentinelSetup() as setup:
        yield setup


# =========================================================================== 2. environment


@pytest.fixture(autouse=True)
def clean_cachekit_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see no CACHEKIT_* variables from the shell that runs them."""
    for name in list(os.environ):
        if name.upper().startswith("CACHEKIT_"):
            monkeypatch.delenv(name)


# =========================================================================== 3. event loops

try:
    import uvloop
except ImportError:  # pragma: no cover - the test extra installs it
    uvloop = None

#: Modules whose async tests talk to Redis without naming a real-server fixture (a scripted
#: server, or a store kind chosen by parameter).
SOCKET_MODULES = frozenset(
    {"test_lookup_channel", "test_batched_lookups", "test_stores", "test_tags", "test_filling"}
)


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    """asyncio's loop for every async test; uvloop as well for those that talk to Redis.

    Under CI=true a missing uvloop fails those tests instead of quietly running fewer.
    """
    del config
    factories: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
        "asyncio": asyncio.new_event_loop
    }
    module = item.module.__name__.rpartition(".")[2] if item.module is not None else ""
    if uses_real_redis(item) or module in SOCKET_MODULES:
        factories["uvloop"] = _uvloop_factory()
    return factories


def _uvloop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    if uvloop is not None:
        return uvloop.new_event_loop

    def missing() -> asyncio.AbstractEventLoop:
        msg = "uvloop is not installed (pip install -e '.[test]')"
        if in_ci():
            pytest.fail(f"{msg}; CI=true, so the uvloop tests must run", pytrace=False)
        pytest.skip(msg)

    return missing
