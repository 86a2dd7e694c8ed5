"""Several gunicorn workers on one Redis: a cold key is filled once across them, and a
purge through one worker is seen by the other (README, "Deployment")."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis

from tests.gunicorn_app import RUNS_KEY
from tests.redis_servers import free_port

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


@pytest.fixture(params=["aiohttp.GunicornWebWorker", "aiohttp.GunicornUVLoopWebWorker"])
def workers(request: pytest.FixtureRequest, real_redis_url: str) -> Iterator[str]:
    """Two gunicorn workers of tests.gunicorn_app on one free port; their base URL."""
    yield from _serve(request.param, real_redis_url, {})


@pytest.fixture
def metered_workers(real_redis_url: str, tmp_path: Path) -> Iterator[str]:
    """`workers` serving /metrics in prometheus-client's multiprocess mode."""
    extra = {"CACHEKIT_METRICS_PATH": "/metrics", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    yield from _serve("aiohttp.GunicornWebWorker", real_redis_url, extra)


ADMIN_TOKEN = "g" * 40


@pytest.fixture
def admin_workers(real_redis_url: str) -> Iterator[str]:
    """`workers` with the admin API mounted."""
    yield from _serve(
        "aiohttp.GunicornWebWorker", real_redis_url, {"CACHEKIT_ADMIN_TOKEN": ADMIN_TOKEN}
    )


def _serve(worker_class: str, real_redis_url: str, extra: dict[str, str]) -> Iterator[str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CACHEKIT_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update(
        CACHEKIT_REDIS_URL=real_redis_url,
        CACHEKIT_NAMESPACE="gunicorn",
        PYTHONPATH=str(ROOT),
        **extra,
    )
    command = [sys.executable, "-m", "gunicorn", "tests.gunicorn_app:create_app"]
    command += ["--bind", f"127.0.0.1:{port}", "--workers", "2"]
    command += [
        "--worker-class",
        worker_class,
        "--graceful-timeout",
        "5",
        "--log-level",
        "warning",
    ]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        asyncio.run(_wait_for_both_workers(base))
        yield base
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def _wait_for_both_workers(base: str) -> None:
    pids: set[str] = set()
    deadline = time.monotonic() + 20
    async with aiohttp.ClientSession() as session:
        while len(pids) < 2:
            if time.monotonic() > deadline:
                raise TimeoutError(f"two gunicorn workers did not answer (saw {pids})")
            try:
                # A new connection each time, so the kernel spreads them over both workers.
                async with session.get(f"{base}/pid", headers={"Connection": "close"}) as r:
                    pids.add(await r.text())
            except aiohttp.ClientError:
                await asyncio.sleep(0.1)


async def _get_many(base: str, path: str, count: int) -> list[tuple[str, str]]:
    async with aiohttp.ClientSession() as session:

        async def one() -> tuple[str, str]:
            async with session.get(base + path, headers={"Connection": "close"}) as response:
                assert response.status == 200
                return await response.text(), response.headers["X-Cache"]

        return await asyncio.gather(*(one() for _ in range(count)))


def test_a_cold_key_is_filled_once_across_workers(workers: str, real_redis_url: str) -> None:
    counter = redis.Redis.from_url(real_redis_url)
    answers = asyncio.run(_get_many(workers, "/items/7", 40))
    assert int(counter.get(RUNS_KEY) or 0) == 1, "one fill for both workers"
    assert {text for text, _ in answers} == {"item 7 run 1"}
    assert {status for _, status in answers} <= {"MISS", "HIT"}


def test_a_purge_through_one_worker_reaches_the_other(workers: str, real_redis_url: str) -> None:
    counter = redis.Redis.from_url(real_redis_url)

    async def scenario() -> list[str]:
        await _get_many(workers, "/items/8", 1)
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{workers}/purge/8") as response,
        ):
            assert await response.text() == "1"
        # Fresh connections: the answers come from both workers.
        after = [text for text, _ in await _get_many(workers, "/items/8", 10)]
        later = await _get_many(workers, "/items/8", 10)
        assert {status for _, status in later} == {"HIT"}, "the refill was stored"
        return after + [text for text, _ in later]

    texts = asyncio.run(scenario())
    assert "item 8 run 1" not in texts, "nobody serves the purged copy"
    assert int(counter.get(RUNS_KEY) or 0) == 2, "one fill after the purge, for both workers"


def test_one_scrape_sees_every_worker(metered_workers: str) -> None:
    pytest.importorskip("prometheus_client")
    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

    async def scenario() -> tuple[set[str], list[float]]:
        pids: set[str] = set()
        requests = 0
        async with aiohttp.ClientSession() as session:
            while len(pids) < 2 and requests < 400:  # until both workers answered hits
                async with session.get(
                    f"{metered_workers}/items/9", headers={"Connection": "close"}
                ) as response:
                    requests += 1
                    if response.headers["X-Cache"] == "HIT":
                        pids.add(response.headers["X-Pid"])
            hits = requests - 1  # the first request filled the entry
            totals: list[float] = []
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                async with session.get(
                    f"{metered_workers}/metrics", headers={"Connection": "close"}
                ) as response:
                    text = await response.text()
                total = sum(
                    sample.value
                    for family in text_string_to_metric_families(text)
                    for sample in family.samples
                    if sample.name == "cachekit_requests_total"
                    and sample.labels.get("handler") == "item"
                    and sample.labels.get("result") == "hit"
                )
                totals.append(total)
                if total == hits:
                    break
                await asyncio.sleep(0.2)  # each worker syncs every second
            return pids, [hits, *totals]

    pids, (hits, *totals) = asyncio.run(scenario())
    assert len(pids) == 2, "both workers answered hits"
    assert totals[-1] == hits, f"one scrape adds up every worker's hits: {totals} != {hits}"


def test_one_stats_request_sees_every_workers_requests(
    admin_workers: str, real_redis_url: str
) -> None:
    async def scenario() -> tuple[Counter[str], dict[str, Any]]:
        by_pid: Counter[str] = Counter()
        headers = {"Connection": "close"}
        async with aiohttp.ClientSession() as session:
            while len(by_pid) < 2 and sum(by_pid.values()) < 400:  # until both answered
                async with session.get(f"{admin_workers}/items/5", headers=headers) as response:
                    by_pid[response.headers["X-Pid"]] += 1
            auth = {**headers, "Authorization": f"Bearer {ADMIN_TOKEN}"}
            deadline = time.monotonic() + 10
            while True:  # each worker reports every second
                async with session.get(f"{admin_workers}/_cache/stats", headers=auth) as answer:
                    seen: dict[str, Any] = await answer.json()
                item = seen["handlers"].get("item", {"requests": 0})
                if item["requests"] == sum(by_pid.values()) or time.monotonic() > deadline:
                    return by_pid, seen
                await asyncio.sleep(0.2)

    by_pid, seen = asyncio.run(scenario())
    assert seen["scope"] == "cluster"
    assert seen["handlers"]["item"]["requests"] == sum(by_pid.values()), seen
    assert {str(entry["pid"]): entry["requests"] for entry in seen["workers"]} == dict(by_pid)
    assert seen["total"]["requests"] == sum(by_pid.values())
    # The operator CLI adds up the same reports (each at most a second late).
    env = {k: v for k, v in os.environ.items() if not k.startswith("CACHEKIT_")}
    env.update(
        CACHEKIT_REDIS_URL=real_redis_url, CACHEKIT_NAMESPACE="gunicorn", PYTHONPATH=str(ROOT)
    )
    deadline = time.monotonic() + 10
    while True:
        shown = subprocess.run(
            [sys.executable, "-m", "cachekit", "stats", "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        facts = json.loads(shown.stdout)
        counted = facts["handlers"].get("item", {}).get("requests")
        if counted == sum(by_pid.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert facts["workers"] == 2
    assert counted == sum(by_pid.values())
