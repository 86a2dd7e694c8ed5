"""The wheel check: what a user gets from ``pip install cachekit`` works outside the checkout.

1. ``python -m build`` makes the sdist and the wheel (in an isolated build environment);
   the wheel holds ``cachekit/py.typed``, the dashboard's assets and nothing but the
   ``cachekit`` package (no tests, benchmarks or demo), and both carry the version of
   ``cachekit/_version.py``.
2. A fresh virtual environment in a temporary directory outside the checkout gets the
   wheel (and its dependencies) with pip; ``import cachekit`` there must come from that
   environment, with ``py.typed``, the version and the ``pytest11`` entry point of
   ``cachekit.testing``.
3. A copy of ``demo_app/`` (it is not in the wheel) is started with that environment's
   Python on a free 127.0.0.1 port, embedded store; its first request
   (``GET /products/7``) must answer 200 with ``X-Cache: MISS`` and the second ``HIT``,
   and the admin dashboard's script (package data) must be served. Then it is stopped.

Every wait is bounded. Run it as ``make wheel-check`` (or ``.venv/bin/python
.ci/wheel_check.py [--keep] [--python python3.13]``); ``make test`` runs it through
tests/test_packaging.py.
Exit status 0 and a last line ``wheel check: ok ...`` when everything holds.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "cachekit"

BUILD_TIMEOUT = 120.0  # isolated build envs: pip fetches setuptools, then sdist + wheel
VENV_TIMEOUT = 30.0
INSTALL_TIMEOUT = 120.0  # the wheel plus aiohttp, redis, pydantic... from the index
PROBE_TIMEOUT = 30.0
READY_TIMEOUT = 20.0  # the demo imports aiohttp and binds its port
REQUEST_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
#: Package data the admin dashboard serves (cachekit/dashboard.py): in the wheel, and
#: served by the demo run from it.
DASHBOARD_ASSETS = [
    f"{PACKAGE}/dashboard_assets/{name}"
    for name in ("dashboard.js", "dashboard.css", "favicon.svg")
]
#: The admin token the demo gets here (made up: the demo serves on 127.0.0.1 for seconds).
DEMO_ADMIN_TOKEN = "wheel-check-" + "t" * 32


class CheckFailed(Exception):
    """One step of the check did not hold; the message says which and why."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="interpreter of the fresh environment (default: this one), e.g. python3.13",
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="cachekit-wheel-check-")).resolve()
    try:
        if workdir.is_relative_to(ROOT):
            raise CheckFailed(f"temporary directory {workdir} is inside the checkout")
        run_check(workdir, args.python)
    except CheckFailed as exc:
        print(f"wheel check: FAILED: {exc}", file=sys.stderr)
        if args.keep:
            print(f"wheel check: files kept in {workdir}", file=sys.stderr)
        return 1
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    kept = f", files in {workdir}" if args.keep else ""
    print(f"wheel check: ok in {time.monotonic() - started:.1f} s{kept}")
    return 0


def run_check(workdir: Path, base_python: str) -> None:
    version = source_version()
    dist = workdir / "dist"
    with step("build sdist and wheel"):
        run([sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)], BUILD_TIMEOUT)
    wheel, sdist = built_files(dist, version)
    with step(f"inspect {wheel.name} and {sdist.name}"):
        check_wheel(wheel)
        check_sdist(sdist)

    venv = workdir / "venv"
    python = venv / "bin" / "python"
    env = clean_environment()
    with step("fresh virtual environment"):
        # Without pip of its own (ensurepip costs seconds): this environment's pip installs
        # into it through --python, exactly as into any other environment.
        run([base_python, "-m", "venv", "--without-pip", str(venv)], VENV_TIMEOUT, env=env)
    with step(f"pip install {wheel.name}"):
        pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet"]
        pip += ["--disable-pip-version-check", "--no-compile", str(wheel)]
        run(pip, INSTALL_TIMEOUT, cwd=workdir, env=env)

    # The demo's copy sits alone in its directory, so `python -m demo_app` there finds
    # demo_app in the working directory and cachekit only in the fresh environment.
    app_dir = workdir / "app"
    shutil.copytree(
        ROOT / "demo_app", app_dir / "demo_app", ignore=shutil.ignore_patterns("__pycache__")
    )
    with step("import cachekit from the fresh environment"):
        check_import(python, venv, app_dir, env, version)
    with step("demo's first request"):
        serve_demo(python, app_dir, env)


@contextlib.contextmanager
def step(name: str) -> Iterator[None]:
    """Print a step's name and, when it succeeds, how long it took."""
    print(f"==> {name}", flush=True)
    started = time.monotonic()
    yield
    print(f"    {time.monotonic() - started:.1f} s", flush=True)


def run(
    command: list[str],
    timeout: float,
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> str:
    """Run ``command`` to completion within ``timeout`` seconds; its output, or CheckFailed."""
    try:
        result = subprocess.run(
            command,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise CheckFailed(f"{' '.join(command)} took over {timeout:.0f} s") from None
    if result.returncode != 0:
        raise CheckFailed(
            f"{' '.join(command)} exited with {result.returncode}:\n"
            f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
    return result.stdout


def source_version() -> str:
    """``__version__`` from cachekit/_version.py, read without importing the checkout."""
    tree = ast.parse((ROOT / PACKAGE / "_version.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "__version__" for t in node.targets)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            return node.value.value
    raise CheckFailed("cachekit/_version.py assigns no string to __version__")


def built_files(dist: Path, version: str) -> tuple[Path, Path]:
    names = sorted(path.name for path in dist.iterdir())
    wheel = dist / f"{PACKAGE}-{version}-py3-none-any.whl"
    sdist = dist / f"{PACKAGE}-{version}.tar.gz"
    if names != sorted([wheel.name, sdist.name]):
        raise CheckFailed(f"expected {wheel.name} and {sdist.name} in dist/, found {names}")
    return wheel, sdist


def check_wheel(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    dist_info = wheel.name.split("-py3-")[0] + ".dist-info/"
    for data in (f"{PACKAGE}/py.typed", *DASHBOARD_ASSETS):
        if data not in names:
            raise CheckFailed(f"{wheel.name} lacks {data}")
    # Only the package and its metadata: no tests/, bench/, demo_app/ or anything else.
    stray = [n for n in names if not n.startswith((f"{PACKAGE}/", dist_info))]
    if stray:
        raise CheckFailed(f"{wheel.name} holds more than the package: {stray}")


def check_sdist(sdist: Path) -> None:
    with tarfile.open(sdist) as archive:
        names = archive.getnames()
    top = sdist.name.removesuffix(".tar.gz")
    required = ["PKG-INFO", "pyproject.toml", "README.md", f"{PACKAGE}/py.typed"]
    missing = [name for name in required if f"{top}/{name}" not in names]
    shipped = [n for n in names if n.startswith((f"{top}/bench/", f"{top}/demo_app/"))]
    if missing or shipped:
        raise CheckFailed(f"{sdist.name}: missing {missing}, should not hold {shipped}")


def clean_environment() -> dict[str, str]:
    """This environment without what would make Python or the demo look elsewhere."""
    dropped = ("PYTHON", "VIRTUAL_ENV", "CACHEKIT_", "DEMO_", "PIP_USER", "PIP_TARGET")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    # The checkout's .venv must not be the first python on PATH for anything started here.
    env["PATH"] = os.pathsep.join(
        part for part in env.get("PATH", "").split(os.pathsep) if not _inside(part, ROOT)
    )
    return env


def check_import(
    python: Path, venv: Path, app_dir: Path, env: dict[str, str], version: str
) -> None:
    probe = (
        "import importlib.metadata as m, pathlib, cachekit\n"
        "print(pathlib.Path(cachekit.__file__).resolve())\n"
        "print(cachekit.__version__)\n"
        "print(*[e.value for e in m.entry_points(group='pytest11', name='cachekit')])\n"
    )
    output = run([str(python), "-c", probe], PROBE_TIMEOUT, cwd=app_dir, env=env).splitlines()
    if len(output) != 3:
        raise CheckFailed(f"unexpected output from the import probe: {output}")
    location, imported_version, plugin = Path(output[0]), output[1], output[2]
    if not _inside(location, venv) or _inside(location, ROOT):
        raise CheckFailed(f"cachekit was imported from {location}, not from {venv}")
    if not (location.parent / "py.typed").is_file():
        raise CheckFailed(f"no py.typed installed beside {location}")
    if imported_version != version:
        raise CheckFailed(f"installed cachekit.__version__ {imported_version} != {version}")
    if plugin != "cachekit.testing":
        raise CheckFailed(
            f"the pytest11 entry point 'cachekit' is {plugin!r}, not cachekit.testing"
        )
    print(f"    cachekit {imported_version} from {location}")


def serve_demo(python: Path, app_dir: Path, env: dict[str, str]) -> None:
    port = free_port()
    demo_env = {
        **env,
        "DEMO_HOST": "127.0.0.1",
        "DEMO_PORT": str(port),
        "CACHEKIT_ADMIN_TOKEN": DEMO_ADMIN_TOKEN,
    }
    log_path = app_dir / "demo.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(python), "-m", "demo_app"],
            cwd=app_dir,
            env=demo_env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until_listening(process, port, log_path)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no proxy
        url = f"http://127.0.0.1:{port}/products/7"
        for expected in ("MISS", "HIT"):
            with opener.open(url, timeout=REQUEST_TIMEOUT) as response:
                status, x_cache = response.status, response.headers.get("X-Cache")
                response.read()
            print(f"    GET /products/7 -> {status}, X-Cache: {x_cache}")
            if status != 200 or x_cache != expected:
                raise CheckFailed(f"expected 200 with X-Cache: {expected}, got {status} {x_cache}")
        # The dashboard's script, read from the installed package's data.
        script = urllib.request.Request(
            f"http://127.0.0.1:{port}/_cache/dashboard.js",
            headers={"Authorization": f"Bearer {DEMO_ADMIN_TOKEN}"},
        )
        with opener.open(script, timeout=REQUEST_TIMEOUT) as response:
            status, size = response.status, len(response.read())
        print(f"    GET /_cache/dashboard.js -> {status}, {size} bytes")
        if status != 200 or size < 1000:
            raise CheckFailed(f"the dashboard's script: {status}, {size} bytes")
    except OSError as exc:
        raise CheckFailed(f"request to the demo failed: {exc}\n{_tail(log_path)}") from None
    finally:
        stop(process)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until_listening(process: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise CheckFailed(f"the demo exited with {process.returncode}:\n{_tail(log_path)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise CheckFailed(f"the demo did not listen within {READY_TIMEOUT:.0f} s:\n{_tail(log_path)}")


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (aiohttp shuts down gracefully), then SIGKILL to the whole session if needed."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
            return
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(STOP_TIMEOUT)


def _inside(path: str | Path, directory: Path) -> bool:
    return bool(str(path)) and Path(path).resolve().is_relative_to(directory.resolve())


def _tail(log_path: Path) -> str:
    return log_path.read_text(encoding="utf-8", errors="replace")[-4000:]


if __name__ == "__main__":
    sys.exit(main())
