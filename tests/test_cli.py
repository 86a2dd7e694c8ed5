"""`python -m cachekit`, run as a subprocess against a real Redis (and a Redis Cluster)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from typing import Any

import pytest

from cachekit.backends.cluster import ClusterStore
from cachekit.backends.redis import RedisStore
from cachekit.entry import CachedResponse
from cachekit.key_census import KeyCensus
from cachekit.key_growth import WINDOW_SECONDS
from cachekit.keys import default_key_prefix
from tests.apps import NAMESPACE
from tests.redis_servers import free_port


def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m cachekit ARGS` with only these CACHEKIT_* variables set."""
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("CACHEKIT_")}
    return subprocess.run(
        [sys.executable, "-m", "cachekit", *args],
        env={**clean, "CACHEKIT_NAMESPACE": NAMESPACE, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(cli, *args, **env)


def entry(tags: tuple[str, ...], body: bytes = b"hello", **extra: Any) -> CachedResponse:
    return CachedResponse(
        200,
        (("Content-Type", "text/plain"), ("X-Rep", "1"), ("X-Rep", "2")),
        body,
        time.time(),
        60.0,
        tags=tags,
        **extra,
    )


async def filled(store: RedisStore) -> RedisStore:
    for i in range(5):
        await store.set(f"product:{i}", entry(("products", f"product:{i}")))
    await store.set("product:1#lang=fr", entry(("products",), b"bonjour"))
    await store.add_counters({"hits": 30, "stale_hits": 6, "misses": 4})
    return store


@pytest.fixture
async def store(real_redis_url: str) -> Any:
    made = await filled(RedisStore.from_url(real_redis_url, NAMESPACE, 1.0))
    yield made
    await made.close()


async def test_stats(store: RedisStore, real_redis_url: str) -> None:
    human = await run_cli("stats", CACHEKIT_REDIS_URL=real_redis_url)
    assert human.returncode == 0, human.stderr
    assert "entries:" in human.stdout and "90.0%" in human.stdout
    as_json = await run_cli("stats", "--json", CACHEKIT_REDIS_URL=real_redis_url)
    facts = json.loads(as_json.stdout)
    assert facts["entries"] == 6 and facts["tags"] == 6 and facts["generation"] > 0
    assert facts["hit_ratio"] == 0.9 and facts["memory_used_bytes"] > 0
    # The option may come before the command too. Redis's memory figure moves with its
    # connected clients (the CLI's own connection among them), so it is left out.
    again = json.loads((await run_cli("--json", "stats", CACHEKIT_REDIS_URL=real_redis_url)).stdout)
    assert again.pop("memory_used_bytes") > 0
    facts.pop("memory_used_bytes")
    assert again == facts


async def test_stats_add_up_the_workers_reporting_now(
    store: RedisStore, real_redis_url: str
) -> None:
    env = {"CACHEKIT_REDIS_URL": real_redis_url}
    assert json.loads((await run_cli("stats", "--json", **env)).stdout)["handlers"] == {}
    report = {"pid": 1, "host": "a", "started": 0.0, "counters": {"hits": 3}}
    await store.publish_worker(
        "a:1", json.dumps({**report, "handlers": {"page": {"hit": 3, "miss": 1}}}).encode(), 5, 9
    )
    await store.publish_worker(
        "b:2",
        json.dumps({**report, "handlers": {"page": {"hit": 5}, "item": {"miss": 2}}}).encode(),
        5,
        9,
    )
    await store.publish_worker("c:3", b"not cachekit's", 5, 9)
    facts = json.loads((await run_cli("stats", "--json", **env)).stdout)
    assert facts["workers"] == 2
    assert facts["handlers"] == {
        "item": {"results": {"miss": 2}, "requests": 2},
        "page": {"results": {"hit": 8, "miss": 1}, "requests": 9},
    }
    human = (await run_cli("stats", **env)).stdout
    assert "page: 9 requests (hit 8, miss 1)" in human and "item: 2 requests (miss 2)" in human


async def test_purge_by_tag_key_and_all(store: RedisStore, real_redis_url: str) -> None:
    env = {"CACHEKIT_REDIS_URL": real_redis_url}
    by_tag = await run_cli("purge", "--tag", "product:2", "--tag", "product:3", "--json", **env)
    assert by_tag.returncode == 0 and json.loads(by_tag.stdout)["removed"] == 2
    assert (await store.get("product:2"))[0] is None
    by_key = await run_cli("purge", "--key", "product:1", **env)
    assert by_key.stdout.strip() == "removed 2 entries (key 'product:1')"  # with its variant
    assert (await store.get("product:1#lang=fr"))[0] is None
    everything = await run_cli("purge", "--all", **env)
    assert everything.returncode == 0 and "generation is now " in everything.stdout
    assert (await store.get("product:0"))[0] is None
    assert (await run_cli("purge", **env)).returncode == 2
    assert (await run_cli("purge", "--all", "--tag", "x", **env)).returncode == 2


async def test_inspect(store: RedisStore, real_redis_url: str) -> None:
    env = {"CACHEKIT_REDIS_URL": real_redis_url}
    shown = await run_cli("inspect", "product:1", **env)
    assert shown.returncode == 0, shown.stderr
    assert "state:" in shown.stdout and "fresh" in shown.stdout
    assert "X-Rep: 2" in shown.stdout and "#lang=fr" in shown.stdout
    as_json = json.loads((await run_cli("inspect", "--json", "product:1#lang=fr", **env)).stdout)
    assert as_json["status"] == 200 and as_json["body_bytes"] == len(b"bonjour")
    assert as_json["tags"] == ["products"] and as_json["headers"][1] == ["X-Rep", "1"]
    assert 0 < as_json["expires_in_seconds"] <= 60 and as_json["age_seconds"] >= 0
    by_redis_key = await run_cli("inspect", "--json", store.entry_key("product:1#lang=fr"), **env)
    assert json.loads(by_redis_key.stdout)["key"] == "product:1#lang=fr"
    missing = await run_cli("inspect", "nothing-here", **env)
    assert missing.returncode == 1 and missing.stdout == ""
    assert "no entry under key 'nothing-here'" in missing.stderr
    await store.client.set(store.entry_key("broken"), b"not an entry")
    damaged = await run_cli("inspect", "broken", **env)
    assert damaged.returncode == 1 and "damaged" in damaged.stderr


async def test_superseded_entries_say_so(store: RedisStore, real_redis_url: str) -> None:
    await store.clear()
    shown = await run_cli("inspect", "--json", "product:0", CACHEKIT_REDIS_URL=real_redis_url)
    assert json.loads(shown.stdout)["state"].startswith("superseded")


def test_errors_are_one_line_with_distinct_exit_codes() -> None:
    embedded = cli("stats")
    assert embedded.returncode == 2 and "embedded store" in embedded.stderr
    assert "admin API (GET /_cache/keys" in embedded.stderr  # where per-process counts are
    invalid = cli("stats", CACHEKIT_DEFAULT_TTL="soon")
    assert invalid.returncode == 2 and "CACHEKIT_DEFAULT_TTL" in invalid.stderr
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    unreachable = cli("purge", "--all", CACHEKIT_REDIS_URL=url)
    assert unreachable.returncode == 3
    assert "cannot reach" in unreachable.stderr and "hunter2" not in unreachable.stderr
    usage = cli("frobnicate")
    assert usage.returncode == 2
    for failed in (embedded, invalid, unreachable):
        assert failed.stdout == "" and len(failed.stderr.strip().splitlines()) == 1


async def test_cli_on_a_cluster(cluster_url: str) -> None:
    store = await filled(ClusterStore.from_url(cluster_url, NAMESPACE, 1.0))
    try:
        env = {"CACHEKIT_REDIS_URL": cluster_url, "CACHEKIT_REDIS_MODE": "cluster"}
        facts = json.loads((await run_cli("stats", "--json", **env)).stdout)
        assert facts["entries"] == 6 and facts["memory_used_bytes"] > 0
        purged = json.loads((await run_cli("purge", "--tag", "products", "--json", **env)).stdout)
        assert purged["removed"] == 6
        assert (await run_cli("inspect", "product:0", **env)).returncode == 1
    finally:
        await store.close()


async def test_soft_purge_marks_entries_stale(real_redis_url: str) -> None:
    env = {"CACHEKIT_REDIS_URL": real_redis_url}
    store = RedisStore.from_url(real_redis_url, NAMESPACE, 1.0)
    try:
        await store.set("product:7", entry(("products", "product:7"), grace=30.0))
        await store.set("product:8", entry(("product:8",), grace=30.0))
        by_tag = await run_cli("purge", "--soft", "--tag", "product:7", **env)
        assert by_tag.stdout.strip() == "marked stale 1 entry (tag 'product:7')"
        by_key = await run_cli("purge", "--soft", "--key", "product:8", "--json", **env)
        assert json.loads(by_key.stdout)["soft"] is True
        # A tag's entries keep their bytes (their tag version says "soft"); a key's entry
        # is rewritten stale.
        states = {"product:7": "soft-purged (served stale", "product:8": "stale (served"}
        for key, state in states.items():
            found, _ = await store.get(key)
            assert found is not None and not found.is_fresh(time.time())
            assert found.is_servable_stale(time.time())
            shown = json.loads((await run_cli("inspect", "--json", key, **env)).stdout)
            assert shown["state"].startswith(state)
        assert (await run_cli("purge", "--soft", "--all", **env)).returncode == 2
    finally:
        await store.close()


async def test_stats_shows_each_handlers_distinct_keys(real_redis_url: str) -> None:
    """What the apps counted (KeyCensus on Redis), read from the PF keys by the CLI."""
    store = RedisStore.from_url(real_redis_url, NAMESPACE, 1.0)
    now = [time.time() - 4 * WINDOW_SECONDS]
    census = KeyCensus(lambda: now[0], store.key_sketches)
    prefix = default_key_prefix("get_product")
    try:
        for window in range(4):
            for number in range(150):
                census.add("get_product", f"{prefix}/p/1?utm%5Fsource={window}x{number}", prefix)
                census.add("home", "home", None)
            await census.flush()
            now[0] += WINDOW_SECONDS
        env = {"CACHEKIT_REDIS_URL": real_redis_url}
        facts = json.loads((await run_cli("stats", "--json", **env)).stdout)
        flooded, home = facts["keys"]["get_product"], facts["keys"]["home"]
        assert abs(flooded["distinct_keys"] - 600) <= 30 and flooded["growing"] is True
        assert "'utm_source' has ~" in flooded["warning"]
        assert home == {**home, "distinct_keys": 1, "growing": False, "warning": None}
        human = await run_cli("stats", **env)
        assert human.returncode == 0, human.stderr
        assert "home: ~1 distinct" in human.stdout
        assert "WARNING: keys keep growing" in human.stdout and "utm_source" in human.stdout
    finally:
        await store.close()
