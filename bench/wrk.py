"""Driving a server with wrk (pinned to the load core) and reading its Lua `done()` summary."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from bench.procs import LOAD_CPU, pinned

THREADS: Final = 1  # wrk shares one core (with redis-server); more threads only contend
_DONE: Final = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH_RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d errors=%d status=%d\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status))
end
"""
_SPREAD: Final = """
local keys = 1000
init = function(args)
  if args[1] then keys = tonumber(args[1]) end
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
end
request = function()
  return wrk.format("GET", "/items/" .. math.random(0, keys - 1))
end
"""
_RESULT: Final = re.compile(
    r"BENCH_RESULT requests=(\d+) duration_us=(\d+) p50_us=(\d+) p99_us=(\d+)"
    r" errors=(\d+) status=(\d+)"
)


@dataclass(frozen=True, slots=True)
class WrkResult:
    """One wrk run: throughput, latency percentiles and failures."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int  # socket errors and timeouts
    bad_status: int  # responses with status >= 400

    @property
    def rps(self) -> float:
        """Requests per second."""
        return self.requests / self.seconds if self.seconds else 0.0


def ensure_wrk() -> str:
    """The path of wrk, installing the Debian package first when it is missing."""
    found = shutil.which("wrk")
    if found is not None:
        return found
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise SystemExit("wrk is not installed: run `sudo apt-get install -y wrk` and retry")
    print("wrk is not installed: installing the Debian package (apt-get install -y wrk) ...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "wrk"]
    if subprocess.run(install, env=env, check=False, timeout=600).returncode != 0:
        print("apt-get install failed; retrying after apt-get update ...")
        subprocess.run(["apt-get", "update", "-q"], env=env, check=False, timeout=600)
        subprocess.run(install, env=env, check=False, timeout=600)
    found = shutil.which("wrk")
    if found is None:
        raise SystemExit("could not install wrk: run `apt-get install -y wrk` by hand")
    return found


class Wrk:
    """Runs wrk against loopback URLs with the benchmark's Lua scripts."""

    def __init__(self, connections: int = 32) -> None:
        self.binary = ensure_wrk()
        self.connections = connections
        self._dir = Path(tempfile.mkdtemp(prefix="cachekit-bench-wrk-"))
        self.hot_script = self._dir / "hot.lua"
        self.hot_script.write_text(_DONE)
        self.spread_script = self._dir / "spread.lua"
        self.spread_script.write_text(_SPREAD + _DONE)

    def close(self) -> None:
        """Remove the scripts."""
        shutil.rmtree(self._dir, ignore_errors=True)

    def run(
        self, base_url: str, duration: float, spread_keys: int = 0, *, gzip: bool = False
    ) -> WrkResult:
        """Load `base_url` for `duration` s: /items/1, or /items/<random n < spread_keys>;
        `gzip`: as browsers do, with `Accept-Encoding: gzip, deflate, br`."""
        if not base_url.startswith("http://127.0.0.1:"):
            raise ValueError(f"refusing to load a non-loopback URL: {base_url}")
        script = self.spread_script if spread_keys else self.hot_script
        command = [self.binary, "-t", str(THREADS), "-c", str(self.connections)]
        command += ["-d", f"{max(1, round(duration))}s", "--timeout", "5s", "-s", str(script)]
        if gzip:
            command += ["-H", "Accept-Encoding: gzip, deflate, br"]
        command.append(f"{base_url}/items/1")
        if spread_keys:
            command += ["--", str(spread_keys)]
        done = subprocess.run(
            pinned(LOAD_CPU, command),
            capture_output=True,
            text=True,
            timeout=duration + 60,
            check=False,
        )
        match = _RESULT.search(done.stdout)
        if done.returncode != 0 or match is None:
            raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}{done.stderr}")
        requests, duration_us, p50, p99, errors, status = map(int, match.groups())
        return WrkResult(requests, duration_us / 1e6, p50 / 1000, p99 / 1000, errors, status)
