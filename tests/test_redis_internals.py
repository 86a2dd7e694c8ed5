"""The redis-py internals cachekit relies on (`cachekit.backends.redis_internals`): the
self-check notices when they change, and each feature then falls back to plain redis-py."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
from redis.asyncio import RedisCluster
from redis.asyncio.connection import AbstractConnection, Connection

from cachekit.backends import redis_internals
from cachekit.backends.cluster import ClusterStore
from cachekit.backends.redis import RedisStore
from cachekit.backends.redis_internals import Internals, check_internals
from cachekit.entry import CachedResponse

NAMESPACE = "internals"
ALL_CHANGED = Internals(False, False, False, ("simulated",))


def entry(body: bytes = b"body") -> CachedResponse:
    return CachedResponse(200, (("Content-Type", "text/plain"),), body, time.time(), 60.0)


def test_the_installed_redis_py_has_everything() -> None:
    assert check_internals() == Internals(True, True, True, ())
    assert check_internals() == redis_internals.INTERNALS


def test_a_renamed_connection_attribute_turns_the_lookup_channel_off(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    init = Connection.__init__

    def renamed(self: Connection, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        # As if a release renamed it (only the lookup channel reads it).
        self.credentials = self.credential_provider
        del self.credential_provider

    monkeypatch.setattr(Connection, "__init__", renamed)
    with caplog.at_level(logging.WARNING, "cachekit.redis"):
        found = check_internals()
    assert not found.lookup_channel and found.near_cache and found.cluster_discovery
    assert "redis-py internals changed" in caplog.text and "channel" in caplog.text


def test_a_read_without_timeout_turns_the_near_cache_off(monkeypatch: pytest.MonkeyPatch) -> None:
    async def read_response(self: AbstractConnection, disable_decoding: bool = False) -> Any:
        raise AssertionError("never called by the check")

    monkeypatch.setattr(AbstractConnection, "read_response", read_response)
    found = check_internals()
    assert found.lookup_channel and not found.near_cache and found.cluster_discovery


def test_a_renamed_discovery_flag_stops_the_guard(monkeypatch: pytest.MonkeyPatch) -> None:
    init = RedisCluster.__init__

    def renamed(self: RedisCluster, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        self._needs_init = self.__dict__.pop("_initialize")

    monkeypatch.setattr(RedisCluster, "__init__", renamed)
    found = check_internals()
    assert found.lookup_channel and found.near_cache and not found.cluster_discovery


def test_the_discovery_guard_reads_the_flag_only_while_it_is_trusted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = RedisCluster(host="127.0.0.1", port=1)  # never connects
    assert redis_internals.cluster_needs_discovery(client)
    monkeypatch.setattr(redis_internals, "INTERNALS", ALL_CHANGED)
    assert not redis_internals.cluster_needs_discovery(client)


async def test_with_changed_internals_a_store_uses_plain_redis_py(
    real_redis_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(redis_internals, "INTERNALS", ALL_CHANGED)
    with caplog.at_level(logging.WARNING, "cachekit.redis"):
        store = RedisStore.from_url(real_redis_url, NAMESPACE, 1.0, near_max_bytes=1 << 20)
    try:
        assert not store.uses_lookup_channel  # lookups: redis-py's MGET
        assert store.near_cache is None and "near cache off" in caplog.text
        await store.set("k", entry(b"v1"))
        found, generation = await store.get("k")
        assert found is not None and found.body == b"v1" and generation == found.generation
        await store.clear()
        gone, ticket = await store.get("k")
        assert gone is None and ticket >> 32 != generation >> 32  # a new generation
        assert "near_hits" not in store.stats()
    finally:
        await store.close()


async def test_with_changed_internals_a_cluster_store_still_works(
    cluster_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_internals, "INTERNALS", ALL_CHANGED)
    store = ClusterStore.from_url(cluster_url, NAMESPACE, 1.0)
    try:
        await store.set("k", entry(b"v1"))
        found, _ = await store.get("k")
        assert found is not None and found.body == b"v1"
        assert await store.delete(["k"]) == 1
    finally:
        await store.close()
