"""`filling`: the fill lock, waiting for its holder, refreshes; no stampede, ever.

One handler run per cold or stale key, whatever the concurrency. In process (embedded
store and real Redis): 500 concurrent requests to a cold key, stale-while-revalidate,
stale-if-error, clients that disconnect during a shared fill, and background refreshes at
shutdown. Across processes (`tests/stampede_worker.py`, one real Redis): three workers under
300 concurrent requests, a lock holder killed with SIGKILL, a stale window shared by three
workers, and stale-if-error across workers. Responses that vary on a header the decorator
does not declare (learned Vary) are covered in process and across workers. All traffic
stays on 127.0.0.1.

The handler of the multi-process workers counts its runs in Redis (INCR before it sleeps),
so the count covers every process, including one that was killed mid-run.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from redis.asyncio import Redis

import cachekit
from cachekit import Cache, CacheSettings, cached, setup_cache
from cachekit.backends.redis import RedisStore
from tests.apps import NAMESPACE, make_app
from tests.redis_servers import HOST, free_port
from tests.stampede_worker import COUNTER_KEY, ITEM_KEY, die_with_parent
from tests.test_cache import counting_routes

REPO_ROOT = Path(__file__).resolve().parent.parent
#: Bound on a worker process coming up (python start-up, imports, Redis PING).
STARTUP_TIMEOUT = 20.0
#: Bound on one test's traffic; a hang fails the test instead of the run.
SCENARIO_TIMEOUT = 30.0
#: Bound on one HTTP request made by a test client.
CLIENT_TIMEOUT = 15.0
#: Namespace the workers store under (see tests/stampede_worker.py).
WORKER_NAMESPACE = "stampede"

STORES = [
    pytest.param("memory", id="memory"),
    pytest.param("redis", id="redis", marks=pytest.mark.real_redis),
]


# =========================================================================== helpers


@pytest.fixture(autouse=True)
def _no_cachekit_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """CacheSettings() reads CACHEKIT_*: a developer's exported variables must not leak in."""
    for name in list(os.environ):
        if name.upper().startswith("CACHEKIT_"):
            monkeypatch.delenv(name)


@pytest.fixture
def store_url(request: pytest.FixtureRequest) -> str | None:
    """None for the embedded store, else the URL of our own (flushed) redis-server.
    Parametrised indirectly with `STORES`."""
    if request.param == "memory":
        return None
    url: str = request.getfixturevalue("real_redis_url")
    return url


class Upstream:
    """The handler behind the cache: counts its runs and can be slowed, blocked or broken.

    Each body is ``call N <random>``, so two runs can never produce the same body.
    `failure`: None, "raise" (RuntimeError), "http-500" (raises HTTPInternalServerError)
    or "return-500" (returns a 500 response). `vary`: a `Vary` header to answer with.
    """

    def __init__(self, delay: float = 0.1, status: int = 200) -> None:
        self.delay = delay
        self.status = status
        self.failure: str | None = None
        self.vary = ""
        self.release: asyncio.Event | None = None  # when set: wait for it instead of sleeping
        self.calls = 0
        self.completed = 0
        self.cancelled = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.calls += 1
        number = self.calls
        try:
            if self.release is not None:
                await self.release.wait()
            else:
                await asyncio.sleep(self.delay)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        self.completed += 1
        if self.failure == "raise":
            raise RuntimeError("upstream is down")
        if self.failure == "http-500":
            raise web.HTTPInternalServerError(text="upstream is down")
        if self.failure == "return-500":
            return web.Response(status=500, text="upstream is down")
        response = web.Response(status=self.status, text=f"call {number} {uuid.uuid4().hex}")
        if self.vary:
            response.headers["Vary"] = self.vary
        return response


def build_app(
    settings: CacheSettings,
    upstream: Upstream,
    *,
    ttl: float,
    stale_ttl: float | None = None,
    stale_if_error: float | None = None,
    middlewares: tuple[Any, ...] = (),
) -> tuple[web.Application, Cache]:
    """An app whose GET /item is `upstream.handle`, cached under the key "item"."""
    app = web.Application(middlewares=middlewares)
    cache = setup_cache(app, settings)

    @cached(ttl=ttl, key=ITEM_KEY, stale_ttl=stale_ttl, stale_if_error=stale_if_error)
    async def item(request: web.Request) -> web.Response:
        return await upstream.handle(request)

    app.router.add_get("/item", item)
    return app, cache


async def start_runner(app: web.Application, **runner_options: Any) -> tuple[web.AppRunner, str]:
    """Serve `app` on 127.0.0.1 and a free port, with a backlog for 500 simultaneous
    connects (the default 128 drops SYNs and adds 1 s retransmits)."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0, **runner_options)
    await runner.setup()
    try:
        site = web.TCPSite(runner, HOST, 0, backlog=1024)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"


@contextlib.asynccontextmanager
async def serving(app: web.Application, **runner_options: Any) -> AsyncIterator[str]:
    """`start_runner`, cleaned up (app shutdown included) on exit; yields the base URL."""
    runner, base = await start_runner(app, **runner_options)
    try:
        yield base
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def client_session() -> AsyncIterator[aiohttp.ClientSession]:
    """A client without a connection limit: every concurrent request has its own socket."""
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=CLIENT_TIMEOUT)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        yield session


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: str
    x_cache: str | None
    cache_status: str
    elapsed: float


async def fetch(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None
) -> Reply:
    started = time.monotonic()
    async with session.get(url, headers=headers) as response:
        body = await response.text()
    return Reply(
        response.status,
        body,
        response.headers.get("X-Cache"),
        response.headers.get("Cache-Status", ""),
        time.monotonic() - started,
    )


async def fetch_all(session: aiohttp.ClientSession, urls: list[str]) -> list[Reply]:
    return list(await asyncio.gather(*(fetch(session, url) for url in urls)))


async def eventually(
    predicate: Callable[[], bool | Awaitable[bool]],
    *,
    within: float,
    what: str,
    interval: float = 0.01,
) -> None:
    """Poll `predicate` (sync or async) until true; fail the test after `within` seconds."""
    try:
        async with asyncio.timeout(within):
            while True:
                verdict = predicate()
                if inspect.isawaitable(verdict):
                    verdict = await verdict
                if verdict:
                    return
                await asyncio.sleep(interval)
    except TimeoutError:
        pytest.fail(f"timed out after {within:g}s waiting for {what}")


def describe(replies: list[Reply]) -> str:
    """A compact summary for assertion messages: distinct (status, X-Cache, body) counts."""
    seen: dict[tuple[int, str | None, str], int] = {}
    for reply in replies:
        summary = (reply.status, reply.x_cache, reply.body[:60])
        seen[summary] = seen.get(summary, 0) + 1
    return "\n".join(f"  {count} x {summary}" for summary, count in seen.items())


# =========================================================================== worker processes


def worker_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("CACHEKIT_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def gone(pid: int) -> bool:
    """The process no longer exists (exited and reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


class WorkerExited(AssertionError):
    """A worker process exited before it answered /ready."""


@dataclass
class WorkerGroup:
    """One `python -m tests.stampede_worker` process: one worker per `--port`, forked."""

    proc: subprocess.Popen[bytes]
    ports: list[int]
    log_path: Path

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """SIGTERM (forwarded to the workers), then SIGKILL; the workers die with it."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@dataclass
class Worker:
    """One aiohttp server process of a group."""

    group: WorkerGroup
    port: int
    pid: int = 0  # learned from /ready

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    async def wait_ready(self) -> None:
        timeout = aiohttp.ClientTimeout(total=1.0)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                if self.group.proc.poll() is not None:
                    raise WorkerExited(
                        f"workers {self.group.ports} exited with {self.group.proc.returncode}:"
                        f"\n{self.group.log()}"
                    )
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(self.url + "/ready") as response:
                        text = await response.text()
                        if response.status == 200:
                            self.pid = int(text.split()[1])
                            return
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"worker on port {self.port} not ready after {STARTUP_TIMEOUT:g}s:\n"
                        f"{self.group.log()}"
                    )
                await asyncio.sleep(0.05)

    async def kill(self) -> None:
        """SIGKILL, as a crash (or the OOM killer) would: no cleanup, no lock release."""
        assert self.pid > 0
        os.kill(self.pid, signal.SIGKILL)
        if self.pid == self.group.proc.pid:
            self.group.proc.wait(timeout=10)
        else:  # a forked worker: its parent reaps it
            await eventually(lambda: gone(self.pid), within=10, what=f"pid {self.pid} to go")

    async def stats(self, session: aiohttp.ClientSession) -> dict[str, Any]:
        async with session.get(self.url + "/stats") as response:
            assert response.status == 200
            stats: dict[str, Any] = await response.json()
            return stats


class Workers:
    """Starts workers on free loopback ports against one Redis; stops them all at teardown."""

    def __init__(self, redis_url: str, directory: Path) -> None:
        self.redis_url = redis_url
        self.directory = directory
        self.groups: list[WorkerGroup] = []
        self.workers: list[Worker] = []

    def spawn(self, count: int, options: dict[str, float | str]) -> list[Worker]:
        ports = [free_port() for _ in range(count)]
        log_path = self.directory / f"workers-{len(self.groups)}.log"
        flags = [f"--{name.replace('_', '-')}={value}" for name, value in options.items()]
        command = [
            sys.executable, "-m", "tests.stampede_worker",
            *(f"--port={port}" for port in ports),
            f"--redis-url={self.redis_url}",
            *flags,
        ]  # fmt: skip
        in_main_thread = threading.current_thread() is threading.main_thread()
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                command,
                cwd=REPO_ROOT,
                env=worker_env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent if in_main_thread else None,  # noqa: PLW1509
            )
        group = WorkerGroup(proc, ports, log_path)
        self.groups.append(group)
        workers = [Worker(group, port) for port in ports]
        self.workers += workers
        return workers

    async def start(self, count: int, **options: float | str) -> list[Worker]:
        """Start `count` workers (one process each) and wait until each answers /ready."""
        for attempt in range(3):
            workers = self.spawn(count, options)
            try:
                await asyncio.gather(*(worker.wait_ready() for worker in workers))
            except WorkerExited:
                # free_port() is only "free a moment ago": someone may have taken one.
                log = workers[0].group.log().lower()
                if attempt < 2 and "address already in use" in log:
                    workers[0].group.stop()
                    continue
                raise
            return workers
        raise AssertionError("unreachable")

    def stop_all(self) -> None:
        for group in self.groups:
            group.stop()
        deadline = time.monotonic() + 5
        left = [w.pid for w in self.workers if w.pid and not gone(w.pid)]
        while left and time.monotonic() < deadline:
            time.sleep(0.02)
            left = [pid for pid in left if not gone(pid)]
        assert left == [], f"worker processes left behind: {left}"


@pytest.fixture
def workers(real_redis_url: str, tmp_path: Path) -> Iterator[Workers]:
    pool = Workers(real_redis_url, tmp_path)
    yield pool
    pool.stop_all()


@pytest.fixture
async def redis_client(real_redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(real_redis_url, socket_timeout=5, socket_connect_timeout=2)
    yield client
    await client.aclose()


async def handler_runs(client: Redis) -> int:
    """How often the workers' handler has started, over every process (Redis counter)."""
    return int(await client.get(COUNTER_KEY) or 0)


# =========================================================================== 1. cold key


@pytest.mark.parametrize("store_url", STORES, indirect=True)
async def test_500_concurrent_requests_to_a_cold_key_run_the_handler_once(
    store_url: str | None,
) -> None:
    upstream = Upstream(delay=0.1)
    app, cache = build_app(CacheSettings(redis_url=store_url), upstream, ttl=60)

    async with serving(app) as base, client_session() as session:
        async with asyncio.timeout(SCENARIO_TIMEOUT):
            replies = await fetch_all(session, [base + "/item"] * 500)
        stats = cache.stats()

    assert upstream.calls == 1, describe(replies)
    assert {reply.status for reply in replies} == {200}, describe(replies)
    bodies = {reply.body for reply in replies}
    assert len(bodies) == 1, describe(replies)
    assert bodies.pop().startswith("call 1 ")
    # One request ran the handler and stored; everyone else joined it or hit the entry.
    stored = [reply for reply in replies if "stored" in reply.cache_status]
    assert len(stored) == 1, describe(replies)
    assert stored[0].x_cache == "MISS"
    assert {reply.x_cache for reply in replies} <= {"MISS", "HIT"}
    assert stats["stores"] == 1


@pytest.mark.parametrize("store_url", STORES, indirect=True)
async def test_500_concurrent_requests_in_two_variants_run_the_handler_once_per_variant(
    store_url: str | None,
) -> None:
    # The handler answers `Vary: Accept-Encoding`, which the decorator does not declare
    # (compression middleware does this); half the clients ask for gzip, half do not.
    upstream = Upstream(delay=0.1)
    upstream.vary = "Accept-Encoding"
    app, _ = build_app(CacheSettings(redis_url=store_url), upstream, ttl=60)
    encodings = ["gzip", "identity"]

    async with serving(app) as base, client_session() as session:
        async with asyncio.timeout(SCENARIO_TIMEOUT):
            replies = await asyncio.gather(
                *(
                    fetch(session, base + "/item", {"Accept-Encoding": encodings[i % 2]})
                    for i in range(500)
                )
            )

    assert {reply.status for reply in replies} == {200}, describe(replies)
    for parity in (0, 1):
        variant = replies[parity::2]
        assert len({reply.body for reply in variant}) == 1, describe(variant)
    assert upstream.calls == 2, describe(replies)


# =========================================================================== 2. three workers


@pytest.mark.slow
@pytest.mark.parametrize(
    "vary",
    [
        pytest.param("", id="plain"),
        # The response varies on a header the decorator does not declare (as compression
        # middleware adds `Vary: Accept-Encoding`); every client sends the same value.
        pytest.param("Accept-Encoding", id="undeclared-vary"),
    ],
)
async def test_three_workers_under_300_concurrent_requests_run_the_handler_once(
    workers: Workers, redis_client: Redis, vary: str
) -> None:
    pool = await workers.start(3, delay=0.1, ttl=60, lock_timeout=5, vary=vary)
    urls = [pool[i % 3].url + "/item" for i in range(300)]

    async with client_session() as session:
        async with asyncio.timeout(SCENARIO_TIMEOUT):
            replies = await fetch_all(session, urls)
        stats = [await worker.stats(session) for worker in pool]

    assert await handler_runs(redis_client) == 1, describe(replies)
    assert {reply.status for reply in replies} == {200}, describe(replies)
    assert {reply.body for reply in replies} == {"call 1"}, describe(replies)
    # One request ran the handler and stored; all others got a copy of its entry.
    assert sum("stored" in reply.cache_status for reply in replies) == 1, describe(replies)
    # No worker gave up waiting for the lock (which would have meant a second run).
    assert sum(s["lock_timeouts"] for s in stats) == 0, stats


# =========================================================================== 3. killed holder


@pytest.mark.slow
async def test_a_lock_holder_killed_mid_fill_delays_others_by_at_most_lock_timeout(
    workers: Workers, redis_client: Redis
) -> None:
    lock_timeout, lock_ttl, delay = 1.0, 3.0, 0.1
    margin = 1.0  # process scheduling on a busy CI machine
    [holder], others = await asyncio.gather(
        workers.start(1, delay=30, lock_timeout=lock_timeout, lock_ttl=lock_ttl),
        workers.start(2, delay=delay, lock_timeout=lock_timeout, lock_ttl=lock_ttl),
    )
    lock_key = RedisStore(redis_client, WORKER_NAMESPACE, 1.0).lock_key(ITEM_KEY)

    async def lock_held() -> bool:
        return bool(await redis_client.exists(lock_key))

    async with client_session() as session, asyncio.timeout(SCENARIO_TIMEOUT):
        doomed = asyncio.create_task(fetch(session, holder.url + "/item"))

        # The handler INCRs after the fill lock was taken: the holder is now mid-fill.
        async def holder_started() -> bool:
            return await handler_runs(redis_client) == 1

        await eventually(holder_started, within=10, what="the holder's handler to start")
        assert await lock_held()
        await holder.kill()
        with pytest.raises(aiohttp.ClientError):
            await doomed

        per_worker = await asyncio.gather(
            *(fetch_all(session, [worker.url + "/item"] * 20) for worker in others)
        )
        replies = [reply for batch in per_worker for reply in batch]

        assert {reply.status for reply in replies} == {200}, describe(replies)
        slowest = max(reply.elapsed for reply in replies)
        assert slowest < lock_timeout + delay + margin, (slowest, describe(replies))
        # The dead holder's lock was still there: the others waited for it, then served.
        assert await lock_held()
        # One run in the dead holder, then one per surviving worker (not one per request),
        # shared by all of that worker's requests.
        assert await handler_runs(redis_client) == 3, describe(replies)
        assert sorted({reply.body for reply in replies}) == ["call 2", "call 3"]
        for batch in per_worker:
            assert len({reply.body for reply in batch}) == 1, describe(batch)

        # The dead holder's lock expires after lock_ttl; then a request fills the cache.
        await eventually(
            lambda: _not(lock_held()), within=lock_ttl + 2, what="the dead lock to expire"
        )
        filled = await fetch(session, others[0].url + "/item")
        assert (filled.status, filled.x_cache) == (200, "MISS")
        assert "stored" in filled.cache_status, filled
        hit = await fetch(session, others[1].url + "/item")
        assert (hit.status, hit.x_cache, hit.body) == (200, "HIT", filled.body)
        assert await handler_runs(redis_client) == 4


async def _not(verdict: Awaitable[bool]) -> bool:
    return not await verdict


async def test_a_dead_lock_holder_costs_each_process_one_wait(
    aiohttp_client: Any, real_redis_url: str
) -> None:
    routes, calls = counting_routes()
    store = RedisStore.from_url(real_redis_url, NAMESPACE, 0.5)
    app, cache = make_app(routes, store=store, lock_timeout=0.4, lock_ttl=5)
    client = await aiohttp_client(app)
    # A filler that died while holding the lock of this very key.
    key = f"thing:/thing?#host=127.0.0.1:{client.port}"  # hosts are kept readable
    assert await store.acquire_lock(key, "dead-worker", 5)
    started = time.monotonic()
    first = await client.get("/thing")
    waited = time.monotonic() - started
    started = time.monotonic()
    later = [await client.get("/thing") for _ in range(5)]
    quick = time.monotonic() - started
    assert first.status == 200 and all(response.status == 200 for response in later)
    assert 0.4 <= waited < 1.5  # one lock_timeout, not more
    assert quick < 0.4  # no further waiting in this process
    assert calls[0] == 6 and cache.stats()["stores"] == 0  # served, nothing stored meanwhile


# =========================================================================== 4. stale window


@pytest.mark.parametrize("store_url", STORES, indirect=True)
async def test_stale_window_answers_100_requests_at_once_and_refreshes_once(
    store_url: str | None,
) -> None:
    upstream = Upstream(delay=0.0)
    app, cache = build_app(CacheSettings(redis_url=store_url), upstream, ttl=1, stale_ttl=10)

    async with serving(app) as base, client_session() as session:
        async with asyncio.timeout(SCENARIO_TIMEOUT):
            first = await fetch(session, base + "/item")
            assert (first.status, first.x_cache) == (200, "MISS")
            await asyncio.sleep(1.1)  # past ttl=1, well inside stale_ttl=10
            upstream.delay = 0.8
            replies = await fetch_all(session, [base + "/item"] * 100)
            # Every answer came while the one refresh was still running (on Redis it may
            # still be taking the fill lock, so the handler need not have started yet).
            assert upstream.calls <= 2
            assert upstream.completed == 1
            assert len(cache.tasks_running()["refreshes"]) == 1, (
                "the refresh should still be running"
            )

            await eventually(
                lambda: not cache.tasks_running()["refreshes"], within=5, what="the refresh"
            )
            fresh = await fetch(session, base + "/item")
        stats = cache.stats()

    assert {reply.status for reply in replies} == {200}, describe(replies)
    assert {reply.x_cache for reply in replies} == {"STALE"}, describe(replies)
    assert {reply.body for reply in replies} == {first.body}
    assert all("fwd=stale" in reply.cache_status for reply in replies)
    slowest = max(reply.elapsed for reply in replies)
    assert slowest < upstream.delay / 2, slowest
    assert (fresh.status, fresh.x_cache) == (200, "HIT")
    assert fresh.body.startswith("call 2 ")
    assert upstream.calls == 2
    assert stats["refreshes"] == 1
    assert stats["refresh_errors"] == 0


@pytest.mark.slow
async def test_stale_window_across_three_workers_refreshes_once(
    workers: Workers, redis_client: Redis
) -> None:
    # A slow upstream, so "served without waiting for it" has a wide margin on a loaded machine.
    delay = 2.0
    pool = await workers.start(3, delay=delay, ttl=1, stale_ttl=10)

    async with client_session() as session, asyncio.timeout(SCENARIO_TIMEOUT):
        first = await fetch(session, pool[0].url + "/item")
        assert (first.status, first.x_cache, first.body) == (200, "MISS", "call 1")
        filled_at = time.monotonic()
        for worker in pool[1:]:
            assert (await fetch(session, worker.url + "/item")).x_cache == "HIT"
        await asyncio.sleep(max(0.0, filled_at + 1.1 - time.monotonic()))

        replies = await fetch_all(session, [pool[i % 3].url + "/item" for i in range(100)])
        assert {reply.status for reply in replies} == {200}, describe(replies)
        assert {reply.x_cache for reply in replies} == {"STALE"}, describe(replies)
        assert {reply.body for reply in replies} == {"call 1"}
        assert all("fwd=stale" in reply.cache_status for reply in replies)
        slowest = max(reply.elapsed for reply in replies)
        assert slowest < delay / 2, slowest

        async def everyone_hits_the_new_entry() -> bool:
            latest = [await fetch(session, worker.url + "/item") for worker in pool]
            return all((r.x_cache, r.body) == ("HIT", "call 2") for r in latest)

        await eventually(
            everyone_hits_the_new_entry, within=delay + 5, what="the refreshed entry", interval=0.1
        )
        assert await handler_runs(redis_client) == 2
        stats = [await worker.stats(session) for worker in pool]
    assert sum(s["refreshes"] for s in stats) == 1, stats
    assert sum(s["refresh_errors"] for s in stats) == 0, stats


# =========================================================================== 5. stale-if-error

FAILURES = ["raise", "http-500", "return-500"]


@pytest.mark.parametrize("failure", FAILURES)
@pytest.mark.parametrize("store_url", STORES, indirect=True)
async def test_stale_if_error_serves_the_stale_copy_with_its_original_status(
    store_url: str | None, failure: str
) -> None:
    # 203 rather than 200: the stale copy must carry the stored status, not a made-up one.
    upstream = Upstream(delay=0.0, status=203)
    app, cache = build_app(CacheSettings(redis_url=store_url), upstream, ttl=0.2, stale_if_error=30)

    async with serving(app) as base, client_session() as session:
        async with asyncio.timeout(SCENARIO_TIMEOUT):
            first = await fetch(session, base + "/item")
            assert (first.status, first.x_cache) == (203, "MISS")
            await asyncio.sleep(0.25)  # stale; no stale-while-revalidate window
            upstream.failure = failure
            upstream.delay = 0.15  # long enough for the 20 requests to share one attempt
            replies = await fetch_all(session, [base + "/item"] * 20)
            later = await fetch(session, base + "/item")
        stats = cache.stats()

    for reply in [*replies, later]:
        assert (reply.status, reply.x_cache, reply.body) == (203, "STALE", first.body), describe(
            [*replies, later]
        )
        assert "fwd=stale" in reply.cache_status
        assert "stale-if-error" in reply.cache_status
    # The 20 concurrent requests shared one failing attempt; `later` made its own.
    assert upstream.calls == 3
    assert stats["stale_if_error"] == 2


async def stale_if_error_scenario(
    workers: Workers, *, fail_mode: str, lock_timeout: float, delay: float
) -> list[Reply]:
    """Three workers; the entry goes stale, then the handler fails (after its first run):
    60 concurrent requests over the three. Returns their replies."""
    ttl = 0.5
    pool = await workers.start(
        3,
        delay=delay,
        ttl=ttl,
        stale_if_error=30,
        lock_timeout=lock_timeout,
        fail_after=1,
        fail_mode=fail_mode,
    )
    async with client_session() as session, asyncio.timeout(SCENARIO_TIMEOUT):
        first = await fetch(session, pool[0].url + "/item")
        assert (first.status, first.x_cache, first.body) == (200, "MISS", "call 1")
        await asyncio.sleep(ttl + 0.1)
        return await fetch_all(session, [pool[i % 3].url + "/item" for i in range(60)])


@pytest.mark.slow
async def test_stale_if_error_across_workers_serves_the_stale_copy(workers: Workers) -> None:
    replies = await stale_if_error_scenario(
        workers, fail_mode="return-500", lock_timeout=1.0, delay=0.1
    )
    for reply in replies:
        assert (reply.status, reply.x_cache, reply.body) == (200, "STALE", "call 1"), describe(
            replies
        )
        assert "stale-if-error" in reply.cache_status


@pytest.mark.slow
async def test_stale_if_error_across_workers_does_not_wait_out_the_lock(
    workers: Workers, redis_client: Redis
) -> None:
    lock_timeout, delay, margin = 1.5, 0.1, 0.8
    replies = await stale_if_error_scenario(
        workers, fail_mode="raise", lock_timeout=lock_timeout, delay=delay
    )
    assert {(r.status, r.x_cache, r.body) for r in replies} == {(200, "STALE", "call 1")}
    # The failing attempt takes `delay`; a worker that waited for it may then try once
    # itself (another `delay`). Nobody should sit out the whole lock_timeout.
    slowest = max(reply.elapsed for reply in replies)
    assert slowest < 2 * delay + margin, (slowest, await handler_runs(redis_client))


# =========================================================================== 6. disconnects


async def open_raw_get(base: str, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Send a GET on a raw socket and leave it waiting for the answer."""
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    await writer.drain()
    return reader, writer


async def hang_up(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0), the way a killed client or a proxy timeout does."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


@pytest.mark.parametrize("handler_cancellation", [True, False], ids=["cancelling", "default"])
@pytest.mark.parametrize("store_url", STORES, indirect=True)
async def test_clients_hanging_up_during_a_shared_fill_do_not_hurt_the_others(
    store_url: str | None, handler_cancellation: bool
) -> None:
    upstream = Upstream()
    upstream.release = asyncio.Event()
    cancelled: list[str] = []

    @web.middleware
    async def record_cancellation(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except asyncio.CancelledError:
            cancelled.append(request.path)
            raise

    app, cache = build_app(
        CacheSettings(redis_url=store_url), upstream, ttl=60, middlewares=(record_cancellation,)
    )
    async with (
        serving(app, handler_cancellation=handler_cancellation) as base,
        client_session() as session,
        asyncio.timeout(SCENARIO_TIMEOUT),
    ):
        # The request that starts the fill and one that joins it come from raw sockets that
        # will be reset; then 20 well-behaved clients join, and one more whose request is
        # cancelled on the client side (aiohttp then closes its connection).
        _, initiator = await open_raw_get(base, "/item")
        await eventually(lambda: upstream.calls == 1, within=5, what="the fill to start")
        _, joiner = await open_raw_get(base, "/item")
        await eventually(lambda: cache.stats()["coalesced"] == 1, within=5, what="a joiner")
        others = [asyncio.create_task(fetch(session, base + "/item")) for _ in range(20)]
        impatient = asyncio.create_task(fetch(session, base + "/item"))
        await eventually(lambda: cache.stats()["coalesced"] == 22, within=5, what="21 joiners")

        await hang_up(initiator)
        await hang_up(joiner)
        impatient.cancel()
        with pytest.raises(asyncio.CancelledError):
            await impatient
        if handler_cancellation:
            await eventually(lambda: len(cancelled) == 3, within=5, what="3 cancellations")
        else:
            await asyncio.sleep(0.1)  # let the server see the connections go
        assert upstream.calls == 1
        upstream.release.set()
        replies = list(await asyncio.gather(*others))
        again = await fetch(session, base + "/item")

    assert upstream.calls == 1
    assert upstream.cancelled == 0
    assert {reply.status for reply in replies} == {200}, describe(replies)
    assert len({reply.body for reply in replies}) == 1, describe(replies)
    assert replies[0].body.startswith("call 1 ")
    assert (again.status, again.x_cache, again.body) == (200, "HIT", replies[0].body)
    assert cancelled == (["/item"] * 3 if handler_cancellation else [])


# =========================================================================== 7. owned work


def _background_leftovers() -> list[asyncio.Task[Any]]:
    """Pending tasks running code of the cachekit package (fills, refreshes, lookups)."""
    package = str(Path(cachekit.__file__).parent)
    leftovers = []
    for task in asyncio.all_tasks():
        code = getattr(task.get_coro(), "cr_code", None)
        if not task.done() and code is not None and code.co_filename.startswith(package):
            leftovers.append(task)
    return leftovers


@pytest.mark.parametrize("store_url", STORES, indirect=True)
async def test_shutdown_during_a_refresh_leaves_no_pending_task(
    store_url: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="asyncio")
    settings = CacheSettings(redis_url=store_url)
    grace = settings.redis_timeout + 1.0  # Cache.close() waits this long, then cancels
    upstream = Upstream(delay=0.0)
    app, cache = build_app(settings, upstream, ttl=0.2, stale_ttl=30)

    runner, base = await start_runner(app)
    try:
        async with client_session() as session, asyncio.timeout(SCENARIO_TIMEOUT):
            assert (await fetch(session, base + "/item")).x_cache == "MISS"
            await asyncio.sleep(0.3)
            upstream.release = asyncio.Event()  # never set: the refresh hangs in the handler
            assert (await fetch(session, base + "/item")).x_cache == "STALE"
            await eventually(lambda: upstream.calls == 2, within=5, what="the refresh")
            refresh = cache.tasks_running()["refreshes"][0]
    finally:
        started = time.monotonic()
        async with asyncio.timeout(grace + 10):
            await runner.cleanup()
        shutdown = time.monotonic() - started

    assert shutdown < grace + 1.0, shutdown
    assert refresh.done()
    assert upstream.cancelled == 1, "the refresh's handler was abandoned, not cancelled"
    assert not cache.tasks_running()["refreshes"]
    assert not cache.tasks_running()["fills"]
    assert _background_leftovers() == []
    del refresh
    gc.collect()
    await asyncio.sleep(0)
    problems = [
        record.getMessage()
        for record in caplog.records
        if "destroyed but it is pending" in record.getMessage()
        or "never retrieved" in record.getMessage()
    ]
    assert problems == []


@pytest.mark.parametrize("failure", FAILURES)
@pytest.mark.parametrize("store_url", STORES, indirect=True)
async def test_a_failing_refresh_is_counted_and_the_stale_copy_kept(
    store_url: str | None, failure: str
) -> None:
    upstream = Upstream(delay=0.0)
    app, cache = build_app(CacheSettings(redis_url=store_url), upstream, ttl=0.2, stale_ttl=30)

    async with serving(app) as base, client_session() as session:
        async with asyncio.timeout(SCENARIO_TIMEOUT):
            first = await fetch(session, base + "/item")
            await asyncio.sleep(0.3)
            upstream.failure = failure
            stale = await fetch(session, base + "/item")
            await eventually(
                lambda: not cache.tasks_running()["refreshes"], within=5, what="the refresh"
            )
            calls, stats = upstream.calls, cache.stats()
            # The failed refresh did not replace or drop the stale copy; the next stale
            # answer starts another refresh, which fails and is counted too.
            again = await fetch(session, base + "/item")
            await eventually(
                lambda: not cache.tasks_running()["refreshes"], within=5, what="a 2nd refresh"
            )
            final = cache.stats()

    assert (stale.status, stale.x_cache, stale.body) == (200, "STALE", first.body)
    assert calls == 2
    assert stats["refreshes"] == 1
    assert stats["refresh_errors"] == 1
    assert (again.status, again.x_cache, again.body) == (200, "STALE", first.body)
    assert upstream.calls == 3
    assert (final["refreshes"], final["refresh_errors"]) == (2, 2)
