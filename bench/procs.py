"""Child processes of the harness: core pinning, free ports, servers and a private redis-server."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

HOST: Final = "127.0.0.1"
RESERVED_PORTS: Final = frozenset({6379, 26379})  # the machine's own Redis, never ours
ROOT: Final = Path(__file__).resolve().parent.parent  # holds the bench package
SERVER_CPU: Final = "0"
LOAD_CPU: Final = "1"
#: The event loop of every server process (`--loop`): "asyncio" (its own) or "uvloop".
EVENT_LOOPS: Final = ("asyncio", "uvloop")
event_loop = "asyncio"
_PR_SET_PDEATHSIG: Final = 1

_libc: Any = None
if sys.platform.startswith("linux"):
    with contextlib.suppress(OSError):
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@functools.cache
def pinning_available() -> bool:
    """True when `taskset` exists and this process could use cores 0 and 1 at startup."""
    if shutil.which("taskset") is None or not hasattr(os, "sched_getaffinity"):
        return False
    return {0, 1} <= os.sched_getaffinity(0)


def pinned(cpu: str | None, command: Sequence[str]) -> list[str]:
    """`command` under `taskset -c cpu` (unchanged when `cpu` is None or pinning is off)."""
    if cpu is None or not pinning_available():
        return list(command)
    return ["taskset", "-c", cpu, *command]


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago (never 6379 or 26379)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((HOST, 0))
            port: int = sock.getsockname()[1]
        if port not in RESERVED_PORTS:
            return port
    raise RuntimeError("no free loopback port")


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `predicate` every 50 ms; raise RuntimeError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)


# Never through a proxy: every request of the harness goes straight to loopback.
_DIRECT: Final = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(url: str, timeout: float = 2.0) -> bytes | None:
    """The body of a GET to a loopback URL, or None on any error."""
    if not url.startswith(f"http://{HOST}:"):
        raise ValueError(f"refusing non-loopback URL {url}")
    try:
        with _DIRECT.open(url, timeout=timeout) as response:
            body: bytes = response.read()
            return body
    except OSError:
        return None


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (0.0 once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state is fields[0]
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Child:
    """A child process (killed if the harness dies) whose output goes to a log file."""

    def __init__(self, name: str, command: Sequence[str], env: dict[str, str] | None = None):
        self.name = name
        self.command = list(command)
        self._dir = Path(tempfile.mkdtemp(prefix=f"cachekit-bench-{name}-"))
        self.log_path = self._dir / "output.log"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 (single-threaded harness)
            )

    def cpu_seconds(self) -> float:
        """CPU time the process has used so far."""
        return cpu_seconds(self.proc.pid)

    @property
    def alive(self) -> bool:
        """The process has not exited."""
        return self.proc.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        """The last lines the process printed."""
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after `timeout`; removes the log directory."""
        if self.alive:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_server(
    kind: str, backend: str, redis_url: str | None, *, delay: float = 0.002, slow_delay: float = 0.1
) -> tuple[Child, str]:
    """Start `python -m bench.server` pinned to the server core; returns it and its base URL."""
    port = free_port()
    command = [sys.executable, "-m", "bench.server", "--kind", kind, "--backend", backend]
    command += ["--port", str(port), "--delay", str(delay), "--slow-delay", str(slow_delay)]
    command += ["--loop", event_loop]
    if redis_url is not None:
        command += ["--redis-url", redis_url]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CACHEKIT_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    child = Child(f"{kind}-{backend}", pinned(SERVER_CPU, command), env=env)
    base = f"http://{HOST}:{port}"
    try:
        wait_until(
            lambda: not child.alive or http_get(f"{base}/health", 0.5) == b"ok", 20, "the server"
        )
    except BaseException:
        child.stop()
        raise
    if not child.alive:
        tail = child.log_tail()
        child.stop()
        raise RuntimeError(f"server {kind}/{backend} exited at startup:\n{tail}")
    return child, base


def redis_ping(port: int) -> bool:
    """True when a Redis server answers PING on 127.0.0.1:`port`."""
    try:
        with socket.create_connection((HOST, port), timeout=0.5) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisProcess(Child):
    """A private, diskless redis-server on a free loopback port (never 6379)."""

    def __init__(self, cpu: str | None = LOAD_CPU) -> None:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server not found: apt-get install -y redis-server")
        self.port = free_port()
        command = ["redis-server", "--port", str(self.port), "--bind", HOST]
        command += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
        command += ["--protected-mode", "yes", "--logfile", ""]
        super().__init__("redis", pinned(cpu, command))
        try:
            wait_until(lambda: not self.alive or redis_ping(self.port), 10, "redis-server")
        except BaseException:
            self.stop()
            raise
        if not self.alive:
            tail = self.log_tail()
            self.stop()
            raise RuntimeError(f"redis-server exited at startup:\n{tail}")

    @property
    def url(self) -> str:
        """The redis:// URL of this server, database 0."""
        return f"redis://{HOST}:{self.port}/0"
