"""Throwaway ``redis-server`` processes for tests: standalone, cluster and sentinel.

Every process listens on 127.0.0.1 and a free port picked by the kernel, keeps
nothing on disk and lives in its own temporary directory (log included), so tests
never touch the machine's own Redis on port 6379.

This module has no pytest dependency; ``tests/conftest.py`` wraps it in fixtures.

    with RedisServer() as server:
        client = redis.Redis.from_url(server.url)
        ...
        server.kill()       # SIGKILL: simulate a crash
        server.restart()    # same port again

Processes are started with PR_SET_PDEATHSIG (Linux, main thread only) and an
``atexit`` hook, so a crashed or interrupted test run does not leave them behind.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

import redis

__all__ = [
    "HOST",
    "RESERVED_PORTS",
    "MakeRedisServer",
    "RedisCluster",
    "RedisProcessError",
    "RedisSentinelSetup",
    "RedisServer",
    "free_port",
    "ping",
    "wait_until",
]

HOST = "127.0.0.1"
#: Ports never handed out: the machine's own Redis and the default Sentinel port.
RESERVED_PORTS = frozenset({6379, 26379})
#: Default bound for every "wait until it is ready" loop, in seconds.
DEFAULT_TIMEOUT = 10.0
_LOG_TAIL_LINES = 25


class RedisProcessError(RuntimeError):
    """A redis process failed to start, or did not reach the expected state in time."""


# --------------------------------------------------------------------------- helpers


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago (never 6379 or 26379)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((HOST, 0))
            port: int = sock.getsockname()[1]
        if port not in RESERVED_PORTS:
            return port
    raise RuntimeError("could not find a free loopback port")


def ping(port: int, host: str = HOST, timeout: float = 0.5) -> bool:
    """True if a Redis server answers PING on host:port (raw socket, no client library);
    a server that requires a password answers NOAUTH, which counts as up."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            reply = sock.recv(64)
    except OSError:
        return False
    return reply.startswith((b"+PONG", b"-NOAUTH"))


def wait_until(
    predicate: Callable[[], bool],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    what: str = "condition",
    interval: float = 0.05,
    describe: Callable[[], str] | None = None,
) -> None:
    """Poll ``predicate`` until it returns True; raise RedisProcessError after ``timeout``.

    Connection and Redis errors raised by the predicate count as "not yet".
    ``describe`` may add detail (e.g. a log tail) to the timeout message.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            if predicate():
                return
        except (OSError, redis.RedisError) as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            msg = f"timed out after {timeout:g}s waiting for {what}"
            if last_error is not None:
                msg += f" (last error: {last_error!r})"
            if describe is not None:
                msg += "\n" + describe()
            raise RedisProcessError(msg)
        time.sleep(interval)


def _client(port: int, **kwargs: Any) -> redis.Redis:
    options: dict[str, Any] = {"socket_timeout": 5, "socket_connect_timeout": 2}
    options.update(kwargs)
    return redis.Redis(host=HOST, port=port, **options)


def _info(port: int, section: str) -> dict[str, Any]:
    with _client(port, decode_responses=True) as client:
        info: dict[str, Any] = client.info(section)
    return info


def _fields(reply: Any) -> dict[str, str]:
    """A Sentinel reply (flat [k, v, k, v, ...] list, or a dict under RESP3) as a dict."""
    if isinstance(reply, dict):
        return {str(k): str(v) for k, v in reply.items()}
    items = list(reply)
    return {str(k): str(v) for k, v in zip(items[::2], items[1::2], strict=True)}


# PR_SET_PDEATHSIG: the child gets SIGKILL when the thread that spawned it exits, so a
# pytest run that is killed outright does not leak redis-server processes. Only used
# from the main thread (a worker thread exiting would otherwise kill the server).
_PR_SET_PDEATHSIG = 1
_libc: Any = None
if sys.platform.startswith("linux"):
    with contextlib.suppress(OSError):
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _die_with_parent() -> None:  # runs in the forked child, before exec
    if _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _preexec() -> Callable[[], None] | None:
    if _libc is not None and threading.current_thread() is threading.main_thread():
        return _die_with_parent
    return None


_live_servers: set[RedisServer] = set()


@atexit.register
def _stop_leftovers() -> None:
    for server in list(_live_servers):
        with contextlib.suppress(Exception):
            server.stop()


# --------------------------------------------------------------------------- one server


class _StartedInWith:
    """`with X() as x:` starts the processes and always stops them."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class RedisServer(_StartedInWith):
    """One ``redis-server`` process on 127.0.0.1 and a free (or given) port.

    ``start()`` waits until it answers PING; ``stop()`` ends it (SIGTERM, then
    SIGKILL) and removes its temporary directory; ``kill()`` SIGKILLs it and keeps
    the directory; ``restart()`` starts it again on the same port.

    ``cluster=True`` adds cluster mode (own bus port); ``sentinel=True`` runs it as
    a Sentinel, with ``config`` written to a file in the temporary directory.
    ``args`` are extra command-line options, e.g. ``["--maxmemory", "10mb"]``.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        args: Sequence[str] = (),
        cluster: bool = False,
        cluster_node_timeout_ms: int = 2000,
        sentinel: bool = False,
        config: str = "",
        name: str = "redis",
        binary: str = "redis-server",
        startup_timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if port in RESERVED_PORTS:
            raise ValueError(f"port {port} is reserved (the machine's own Redis)")
        self.name = name
        self.binary = binary
        self.args = list(args)
        self.cluster = cluster
        self.cluster_node_timeout_ms = cluster_node_timeout_ms
        self.sentinel = sentinel
        self.config = config
        self.startup_timeout = startup_timeout
        self._auto_port = port is None
        self._port = port if port is not None else free_port()
        self._cluster_port = free_port() if cluster else None
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._starts = 0

    # ---- addresses

    @property
    def host(self) -> str:
        return HOST

    @property
    def port(self) -> int:
        return self._port

    @property
    def cluster_port(self) -> int | None:
        """The cluster bus port (cluster mode only)."""
        return self._cluster_port

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self._port}/0"

    @property
    def address(self) -> tuple[str, int]:
        return (HOST, self._port)

    @property
    def directory(self) -> Path | None:
        """The temporary working directory (None before start / after stop)."""
        return self._dir

    @property
    def log_path(self) -> Path | None:
        return None if self._dir is None else self._dir / "redis.log"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """The process exists and has not exited (it may still be hung)."""
        return self._proc is not None and self._proc.poll() is None

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<RedisServer {self.name} {HOST}:{self._port} {state}>"

    # ---- lifecycle

    def start(self) -> Self:
        """Start the process (no-op if running) and wait until it answers PING."""
        if self.running:
            return self
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix=f"cachekit-{self.name}-"))
        # A port picked by free_port() can be taken by someone else before redis binds
        # it: pick again, but only on the first start (restart() must keep the port).
        attempts = 3 if self._auto_port and self._starts == 0 else 1
        for attempt in range(attempts):
            try:
                self._spawn_and_wait()
            except RedisProcessError as exc:
                if attempt + 1 < attempts and "already in use" in str(exc):
                    self._port = free_port()
                    if self.cluster:
                        self._cluster_port = free_port()
                    continue
                raise
            break
        self._starts += 1
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM (then SIGKILL after ``timeout``), wait, and remove the temp dir."""
        self._terminate(timeout)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def kill(self) -> None:
        """SIGKILL the process, as a crash would; the temp dir (and log) is kept."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        _live_servers.discard(self)

    def restart(self) -> Self:
        """Stop the process if it runs, then start it again on the same port."""
        self._terminate()
        return self.start()

    def ensure_running(self) -> Self:
        """Restart the server if it was killed, stopped or does not answer PING."""
        if not (self.running and ping(self._port)):
            self.restart()
        return self

    # ---- talking to it

    def client(self, **kwargs: Any) -> redis.Redis:
        """A new sync client for this server; close it (or use ``with``)."""
        return _client(self._port, **kwargs)

    def flushall(self) -> None:
        with self.client() as client:
            client.flushall()

    def info(self, section: str = "default") -> dict[str, Any]:
        return _info(self._port, section)

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        path = self.log_path
        if path is None or not path.exists():
            return "(no log)"
        text = path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    # ---- internals

    def _command(self) -> list[str]:
        assert self._dir is not None
        cmd = [self.binary]
        if self.sentinel:
            conf = self._dir / "sentinel.conf"
            if not conf.exists():  # Sentinel rewrites it; keep its state across restarts
                conf.write_text(self.config)
            cmd += [str(conf), "--sentinel"]
        elif self.config:
            conf = self._dir / "redis.conf"
            conf.write_text(self.config)
            cmd.append(str(conf))
        cmd += [
            "--port", str(self._port),
            "--bind", HOST,
            "--daemonize", "no",
            "--dir", str(self._dir),
            "--logfile", "",
        ]  # fmt: skip
        if not self.sentinel:
            cmd += ["--save", "", "--appendonly", "no"]
        if self.cluster:
            cmd += [
                "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                "--cluster-port", str(self._cluster_port),
                "--cluster-node-timeout", str(self.cluster_node_timeout_ms),
            ]  # fmt: skip
        cmd += self.args
        return cmd

    def _spawn_and_wait(self) -> None:
        assert self._dir is not None
        log_path = self._dir / "redis.log"
        cmd = self._command()
        with log_path.open("ab") as log:
            log.write(f"--- start #{self._starts + 1}: {' '.join(cmd)}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self._dir,
                preexec_fn=_preexec(),  # noqa: PLW1509 - only prctl(), see _preexec
            )
        _live_servers.add(self)
        proc = self._proc
        deadline = time.monotonic() + self.startup_timeout
        while not ping(self._port):
            if proc.poll() is not None:
                self._proc = None
                _live_servers.discard(self)
                raise RedisProcessError(
                    f"{self.name}: redis-server exited with code {proc.returncode} before "
                    f"answering PING on {HOST}:{self._port}\n--- log tail ({log_path}):\n"
                    f"{self.log_tail()}"
                )
            if time.monotonic() >= deadline:
                self._terminate()
                raise RedisProcessError(
                    f"{self.name}: redis-server did not answer PING on {HOST}:{self._port} "
                    f"within {self.startup_timeout:g}s\n--- log tail ({log_path}):\n"
                    f"{self.log_tail()}"
                )
            time.sleep(0.02)

    def _terminate(self, timeout: float = 5.0) -> None:
        proc = self._proc
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            self._proc = None
        _live_servers.discard(self)


class MakeRedisServer(Protocol):
    """Type of the ``make_redis_server`` fixture: ``RedisServer(**kwargs)``, started."""

    def __call__(self, *, start: bool = True, **kwargs: Any) -> RedisServer: ...


# --------------------------------------------------------------------------- cluster


class RedisCluster(_StartedInWith):
    """A Redis Cluster of ``masters`` (default 3) master nodes and no replicas."""

    def __init__(
        self,
        masters: int = 3,
        *,
        node_timeout_ms: int = 2000,
        startup_timeout: float = DEFAULT_TIMEOUT,
        cli: str = "redis-cli",
    ) -> None:
        if masters < 3:
            raise ValueError("redis-cli --cluster create needs at least 3 masters")
        self.masters = masters
        self.node_timeout_ms = node_timeout_ms
        self.startup_timeout = startup_timeout
        self.cli = cli
        self.nodes: list[RedisServer] = []

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<first node port>`` (a startup node for cluster clients)."""
        if not self.nodes:
            raise RedisProcessError("cluster not started")
        return f"redis://{HOST}:{self.nodes[0].port}"

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        return [node.address for node in self.nodes]

    def start(self) -> Self:
        if self.nodes:
            return self
        try:
            for i in range(self.masters):
                node = RedisServer(
                    cluster=True,
                    cluster_node_timeout_ms=self.node_timeout_ms,
                    name=f"cluster{i}",
                    startup_timeout=self.startup_timeout,
                )
                self.nodes.append(node)
                node.start()
            self._create()
            self.wait_ok()
        except BaseException:
            self.stop()
            raise
        return self

    def _create(self) -> None:
        cmd = [
            self.cli, "--cluster", "create",
            *(f"{HOST}:{node.port}" for node in self.nodes),
            "--cluster-replicas", "0", "--cluster-yes",
        ]  # fmt: skip
        try:
            result = subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=self.startup_timeout + 20,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise RedisProcessError(f"{' '.join(cmd)} timed out") from exc
        if result.returncode != 0 or "[OK] All 16384 slots covered" not in result.stdout:
            raise RedisProcessError(
                f"{' '.join(cmd)} failed (exit {result.returncode}):\n"
                f"{result.stdout[-2000:]}{result.stderr[-2000:]}"
            )

    def node_ok(self, node: RedisServer) -> bool:
        with node.client(decode_responses=True) as client:
            raw: str = client.execute_command("CLUSTER", "INFO")
        info = dict(line.split(":", 1) for line in raw.strip().splitlines() if ":" in line)
        return (
            info.get("cluster_state") == "ok"
            and info.get("cluster_slots_ok") == "16384"
            and info.get("cluster_known_nodes") == str(len(self.nodes))
        )

    def wait_ok(self, timeout: float | None = None) -> None:
        """Wait until every node reports ``cluster_state:ok`` and knows every other node."""
        wait_until(
            lambda: all(self.node_ok(node) for node in self.nodes),
            timeout=self.startup_timeout if timeout is None else timeout,
            what="cluster_state:ok on every node",
            interval=0.1,
            describe=lambda: "\n".join(f"{n}:\n{n.log_tail(8)}" for n in self.nodes),
        )

    def ensure_healthy(self, timeout: float | None = None) -> None:
        """Restart killed or stopped nodes (same ports), then wait for cluster_state:ok."""
        for node in self.nodes:
            node.ensure_running()
        self.wait_ok(timeout)

    def flushall(self) -> None:
        """FLUSHALL on every node (each only holds its own slots)."""
        for node in self.nodes:
            node.flushall()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        self.nodes = []


# --------------------------------------------------------------------------- sentinel


class RedisSentinelSetup(_StartedInWith):
    """A primary, one replica and one Sentinel watching them, all on loopback.

    ``service_name`` is the name the Sentinel knows the primary by. ``failover()``
    forces a failover (``SENTINEL FAILOVER``) and waits until the Sentinel reports
    the new primary; the two data servers swap roles, ``primary`` follows.
    """

    def __init__(
        self,
        service_name: str = "cachekit-primary",
        *,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 5000,
        startup_timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.service_name = service_name
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.startup_timeout = startup_timeout
        self.servers: list[RedisServer] = []  # [initial primary, initial replica]
        self.sentinel: RedisServer | None = None

    # ---- addresses

    @property
    def sentinels(self) -> list[tuple[str, int]]:
        """Sentinel (host, port) pairs, as ``redis.sentinel.Sentinel`` takes them."""
        if self.sentinel is None:
            raise RedisProcessError("sentinel setup not started")
        return [self.sentinel.address]

    @property
    def sentinel_url(self) -> str:
        """``redis+sentinel://127.0.0.1:<sentinel port>/<service_name>``."""
        host, port = self.sentinels[0]
        return f"redis+sentinel://{host}:{port}/{self.service_name}"

    def sentinel_client(self) -> redis.Redis:
        if self.sentinel is None:
            raise RedisProcessError("sentinel setup not started")
        return self.sentinel.client(decode_responses=True)

    def primary_address(self) -> tuple[str, int]:
        """The primary's address as the Sentinel reports it right now."""
        with self.sentinel_client() as client:
            reply = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service_name)
        if not reply:
            raise RedisProcessError(f"sentinel does not know {self.service_name!r}")
        return (str(reply[0]), int(reply[1]))

    def master_state(self) -> dict[str, str]:
        """The Sentinel's ``SENTINEL MASTER <service_name>`` fields (ip, port, flags, ...)."""
        with self.sentinel_client() as client:
            reply = client.execute_command("SENTINEL", "MASTER", self.service_name)
        return _fields(reply)

    def _server_at(self, port: int) -> RedisServer:
        for server in self.servers:
            if server.port == port:
                return server
        raise RedisProcessError(f"no server of this setup listens on port {port}")

    @property
    def primary(self) -> RedisServer:
        """The server the Sentinel currently reports as primary."""
        return self._server_at(self.primary_address()[1])

    @property
    def replica(self) -> RedisServer:
        primary = self.primary
        return next(server for server in self.servers if server is not primary)

    # ---- lifecycle

    def start(self) -> Self:
        if self.servers:
            return self
        try:
            # Either server may become the primary; sync replicas without the default
            # 5 s diskless-sync delay.
            fast_sync = ["--repl-diskless-sync-delay", "0"]
            primary = RedisServer(
                name="primary", args=fast_sync, startup_timeout=self.startup_timeout
            )
            self.servers.append(primary)
            primary.start()
            replica = RedisServer(
                name="replica",
                args=[*fast_sync, "--replicaof", HOST, str(primary.port)],
                startup_timeout=self.startup_timeout,
            )
            self.servers.append(replica)
            replica.start()
            self._wait_replicating(replica, primary)
            name = self.service_name
            self.sentinel = RedisServer(
                name="sentinel",
                sentinel=True,
                config=(
                    f"sentinel monitor {name} {HOST} {primary.port} 1\n"
                    f"sentinel down-after-milliseconds {name} {self.down_after_ms}\n"
                    f"sentinel failover-timeout {name} {self.failover_timeout_ms}\n"
                    f"sentinel parallel-syncs {name} 1\n"
                ),
                startup_timeout=self.startup_timeout,
            )
            self.sentinel.start()
            self._wait_sentinel_sees_replica()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.sentinel is not None:
            self.sentinel.stop()
            self.sentinel = None
        for server in self.servers:
            server.stop()
        self.servers = []

    # ---- failover

    def failover(
        self,
        *,
        timeout: float | None = None,
        catch_up: bool = True,
        reconfigure_old_primary: bool = True,
    ) -> tuple[str, int]:
        """Force a failover and wait until the Sentinel reports the new primary.

        With ``catch_up`` (default) it first waits until the replicas have received
        every write the primary has, so no acknowledged write is lost: Redis
        replication is asynchronous and a forced Sentinel failover does not wait.
        With ``reconfigure_old_primary`` (default) the old primary, if still alive, is
        also made a replica of the new one right away (Sentinel would do it by itself,
        but only after ~10 s), so the setup is consistent when this returns.
        Returns the new primary's (host, port).
        """
        timeout = self.startup_timeout if timeout is None else timeout
        old_host, old_port = self.primary_address()
        old_primary = self._server_at(old_port)
        if catch_up and old_primary.running:
            self._wait_caught_up(old_primary, timeout)

        def issue() -> bool:
            with self.sentinel_client() as client:
                try:
                    client.execute_command("SENTINEL", "FAILOVER", self.service_name)
                except redis.ResponseError as exc:  # NOGOODSLAVE / INPROG: not yet
                    if "NOGOODSLAVE" in str(exc) or "INPROG" in str(exc):
                        return False
                    raise
            return True

        wait_until(issue, timeout=timeout, what="Sentinel to accept SENTINEL FAILOVER")

        def switched() -> bool:
            # GET-MASTER-ADDR-BY-NAME reports the promoted replica while the failover is
            # still running; SENTINEL MASTER(S), which e.g. redis-py's Sentinel reads, only
            # after +switch-master. Wait for both, and for the failover flags to clear.
            state = self.master_state()
            return (
                self.primary_address()[1] != old_port
                and state.get("port") == str(self.primary_address()[1])
                and "failover" not in state.get("flags", "")
            )

        wait_until(
            switched,
            timeout=timeout,
            what=f"Sentinel to complete the failover away from {old_host}:{old_port}",
            interval=0.1,
            describe=self._describe,
        )
        new_primary = self.primary
        wait_until(
            lambda: new_primary.info("replication").get("role") == "master",
            timeout=timeout,
            what=f"{new_primary} to report role:master",
        )
        if reconfigure_old_primary and old_primary.running:
            with old_primary.client() as client:
                client.execute_command("REPLICAOF", HOST, str(new_primary.port))
            self._wait_replicating(old_primary, new_primary, timeout)
        return self.primary_address()

    # ---- internals

    def _wait_replicating(
        self, replica: RedisServer, primary: RedisServer, timeout: float | None = None
    ) -> None:
        def linked() -> bool:
            info = replica.info("replication")
            return (
                info.get("role") == "slave"
                and info.get("master_port") == primary.port
                and info.get("master_link_status") == "up"
            )

        wait_until(
            linked,
            timeout=self.startup_timeout if timeout is None else timeout,
            what=f"{replica} to replicate from {primary}",
            describe=lambda: f"{replica.log_tail(10)}\n{primary.log_tail(10)}",
        )

    def _wait_caught_up(self, primary: RedisServer, timeout: float) -> None:
        target = int(primary.info("replication")["master_repl_offset"])
        replicas = [server for server in self.servers if server is not primary and server.running]

        def caught_up() -> bool:
            return all(
                int(replica.info("replication").get("slave_repl_offset", -1)) >= target
                for replica in replicas
            )

        wait_until(
            caught_up,
            timeout=timeout,
            what=f"replicas to reach replication offset {target} of {primary}",
            describe=self._describe,
        )

    def _wait_sentinel_sees_replica(self) -> None:
        replica_port = self.servers[1].port

        def sees() -> bool:
            with self.sentinel_client() as client:
                replicas: list[Any] = client.execute_command(
                    "SENTINEL", "REPLICAS", self.service_name
                )
            for entry in replicas:
                fields = _fields(entry)
                if (
                    fields.get("port") == str(replica_port)
                    and fields.get("flags") == "slave"
                    and fields.get("master-link-status") == "ok"
                ):
                    return True
            return False

        wait_until(
            sees,
            timeout=self.startup_timeout,
            what="Sentinel to discover the replica",
            interval=0.1,
            describe=self._describe,
        )

    def _describe(self) -> str:
        parts = [f"{s}:\n{s.log_tail(10)}" for s in [*self.servers, self.sentinel] if s]
        return "\n".join(parts)
