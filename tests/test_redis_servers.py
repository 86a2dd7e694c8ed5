"""Tests of the real-Redis test fixtures themselves (tests/redis_servers.py, conftest.py)."""

from __future__ import annotations

import socket

import pytest
import redis
import redis.cluster
import redis.sentinel

from tests import redis_servers
from tests.redis_servers import (
    RESERVED_PORTS,
    MakeRedisServer,
    RedisCluster,
    RedisProcessError,
    RedisSentinelSetup,
    RedisServer,
    free_port,
    ping,
)

pytestmark = pytest.mark.real_redis


def test_free_port_never_hands_out_reserved_ports() -> None:
    ports = {free_port() for _ in range(200)}
    assert not ports & RESERVED_PORTS


def test_reserved_port_is_refused() -> None:
    with pytest.raises(ValueError, match="6379"):
        RedisServer(port=6379)


# --------------------------------------------------------------------------- standalone


def test_server_answers_ping(redis_server: RedisServer) -> None:
    assert redis_server.port not in RESERVED_PORTS
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    assert ping(redis_server.port)
    with redis.Redis.from_url(redis_server.url) as client:
        assert client.ping() is True


@pytest.mark.parametrize("attempt", [1, 2])
def test_real_redis_url_is_flushed_before_each_test(real_redis_url: str, attempt: int) -> None:
    with redis.Redis.from_url(real_redis_url) as client:
        assert client.dbsize() == 0
        # Would fail on the second run if the fixture did not flush in between.
        assert client.set("cachekit:fixture-probe", attempt, nx=True)


def test_kill_and_restart_on_the_same_port(make_redis_server: MakeRedisServer) -> None:
    server = make_redis_server()
    port, pid = server.port, server.pid
    with server.client() as client:
        client.set("k", "v")
    server.kill()
    assert not server.running
    assert not ping(port)
    server.restart()
    assert server.port == port
    assert server.pid != pid
    with server.client() as client:
        assert client.ping() is True
        assert client.get("k") is None  # nothing is kept on disk
    directory = server.directory
    assert directory is not None and directory.exists()
    server.stop()
    assert server.directory is None and not directory.exists()
    assert not server.running


def test_session_server_is_revived_after_a_crash(redis_server: RedisServer) -> None:
    port = redis_server.port
    redis_server.kill()
    assert not ping(port)
    redis_server.ensure_running()  # what real_redis_url does before each test
    assert redis_server.port == port
    assert ping(port)


def test_real_redis_url_after_the_kill_above_still_works(real_redis_url: str) -> None:
    with redis.Redis.from_url(real_redis_url) as client:
        assert client.ping() is True


def test_start_failure_reports_the_log(make_redis_server: MakeRedisServer) -> None:
    server = make_redis_server(start=False, args=["--no-such-directive", "1"])
    with pytest.raises(RedisProcessError, match=r"exited with code \d+[\s\S]*no-such-directive"):
        server.start()
    assert not server.running


def test_taken_port_is_replaced_on_first_start(
    make_redis_server: MakeRedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another process grabbing the port between free_port() and redis binding it.
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        ports = iter([taken])
        monkeypatch.setattr(redis_servers, "free_port", lambda: next(ports, None) or free_port())
        server = make_redis_server()
        assert server.port != taken
        assert ping(server.port)

        pinned = make_redis_server(start=False, port=taken)
        with pytest.raises(RedisProcessError, match="already in use"):
            pinned.start()


# --------------------------------------------------------------------------- cluster


def test_cluster_state_ok_on_every_node(redis_cluster: RedisCluster) -> None:
    assert len(redis_cluster.nodes) == 3
    assert redis_cluster.url == f"redis://127.0.0.1:{redis_cluster.nodes[0].port}"
    for node in redis_cluster.nodes:
        assert node.port not in RESERVED_PORTS
        assert redis_cluster.node_ok(node)


def test_cluster_keys_land_on_their_slot_owner(
    cluster_url: str, redis_cluster: RedisCluster
) -> None:
    keys = [f"cachekit:cluster:{i}" for i in range(60)]
    with redis.cluster.RedisCluster.from_url(cluster_url) as cluster:
        for key in keys:
            cluster.set(key, key)
        for key in keys:
            assert cluster.get(key) == key.encode()
        owners = {key: cluster.get_node_from_key(key).port for key in keys}
    assert len(set(owners.values())) == 3  # 60 keys spread over all three masters
    for key, port in owners.items():
        with redis.Redis(host="127.0.0.1", port=port) as node:
            assert node.get(key) == key.encode()
    total = 0
    for node in redis_cluster.nodes:
        with node.client() as client:
            total += int(client.dbsize())
    assert total == len(keys)


def test_cluster_url_flushes_every_node(cluster_url: str, redis_cluster: RedisCluster) -> None:
    for node in redis_cluster.nodes:
        with node.client() as client:
            assert client.dbsize() == 0


# --------------------------------------------------------------------------- sentinel


@pytest.mark.slow
def test_sentinel_failover_changes_the_primary(redis_sentinel: RedisSentinelSetup) -> None:
    setup = redis_sentinel
    assert setup.sentinel_url.startswith("redis+sentinel://127.0.0.1:")
    assert setup.sentinel_url.endswith(f"/{setup.service_name}")
    old_primary = setup.primary
    old_address = setup.primary_address()
    assert old_address == ("127.0.0.1", old_primary.port)

    sentinel = redis.sentinel.Sentinel(setup.sentinels, socket_timeout=2)
    try:
        with sentinel.master_for(setup.service_name, socket_timeout=2) as client:
            client.set("before", "1")

        new_address = setup.failover()

        assert new_address != old_address
        assert setup.primary_address() == new_address
        assert setup.primary is not old_primary
        assert setup.replica is old_primary
        assert sentinel.discover_master(setup.service_name) == new_address
        assert setup.primary.info("replication")["role"] == "master"
        assert old_primary.info("replication")["role"] == "slave"
        with sentinel.master_for(setup.service_name, socket_timeout=2) as client:
            assert client.get("before") == b"1"  # replicated before the failover
            client.set("after", "2")
    finally:
        for sentinel_client in sentinel.sentinels:
            sentinel_client.close()
