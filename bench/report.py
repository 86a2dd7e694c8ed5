"""Markdown output: tables, the run's environment, and files under bench/results/."""

from __future__ import annotations

import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Final

from bench import procs
from bench.procs import pinning_available
from bench.wrk import WrkResult

RESULTS_DIR: Final = Path(__file__).resolve().parent / "results"
_PACKAGES: Final = (
    "cachekit",
    "aiohttp",
    "redis",
    "hiredis",
    "aiohttp-cache",
    "aiocache",
    "cashews",
    "uvloop",
)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table; numeric-looking columns are right-aligned."""
    aligns = [
        "---:" if rows and all(_numeric(row[i]) for row in rows) else "---"
        for i in range(len(headers))
    ]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(aligns) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _numeric(cell: str) -> bool:
    stripped = cell.replace(",", "").removesuffix("x").replace("%", "").strip()
    try:
        float(stripped)
    except ValueError:
        return False
    return True


def progress(round_index: int, rounds: int, label: str, result: WrkResult, extra: str) -> None:
    """Print one measured run as it completes."""
    print(
        f"round {round_index + 1}/{rounds} {label:<36} {result.rps:>7,.0f} req/s"
        f"  p50 {result.p50_ms:6.2f} ms  p99 {result.p99_ms:6.2f} ms  {extra}",
        flush=True,
    )


def median(values: Sequence[float]) -> float:
    """The median (0.0 for no values)."""
    return statistics.median(values) if values else 0.0


def idle_percent(seconds: float = 1.0) -> float:
    """How idle the whole machine was over the next `seconds` (from /proc/stat), in %."""

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return fields[3] + fields[4], sum(fields)  # idle + iowait, total

    try:
        idle0, total0 = sample()
        time.sleep(seconds)
        idle1, total1 = sample()
    except (OSError, ValueError, IndexError):
        return float("nan")
    return 100.0 * (idle1 - idle0) / max(1, total1 - total0)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "-"


def _tool_version(command: list[str]) -> str:
    if shutil.which(command[0]) is None:
        return "-"
    done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    return (
        (done.stdout or done.stderr).strip().splitlines()[0] if done.stdout or done.stderr else "-"
    )


def environment(settings: str) -> str:
    """A few lines describing the machine, the versions and the run's settings."""
    pinning = "server on core 0; wrk, redis-server and the harness on core 1"
    if not pinning_available():
        pinning = "NOT pinned (taskset or a second core is missing): numbers are noisier"
    versions = ", ".join(f"{name} {_version(name)}" for name in _PACKAGES)
    return "\n".join(
        [
            f"- date: {datetime.now(UTC).isoformat(timespec='seconds')}",
            f"- machine: {_cpu_model()}, {platform.system()} {platform.release()}",
            f"- python {sys.version.split()[0]}; {versions}",
            f"- {_tool_version(['wrk', '-v'])}; {_tool_version(['redis-server', '--version'])}",
            f"- pinning: {pinning}",
            f"- event loop of the servers: {procs.event_loop}",
            f"- settings: {settings}",
        ]
    )


def write(scenario: str, title: str, body: str) -> Path:
    """Write `# title` + body to bench/results/<timestamp>[-scenario].md; returns the path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    suffix = "" if scenario == "run" else f"-{scenario}"
    path = RESULTS_DIR / f"{stamp}{suffix}.md"
    path.write_text(f"# {title}\n\n{body}\n")
    return path
