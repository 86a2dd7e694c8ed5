"""Packaging: one version number, the metadata an index page shows, and the wheel check.

The version is written once, in ``cachekit/_version.py``; pyproject.toml reads it from there
(``[tool.setuptools.dynamic]``), so the installed distribution's metadata and
``cachekit.__version__`` must agree. The wheel check (``.ci/wheel_check.py``) builds the
sdist and wheel, installs the wheel into a fresh virtual environment outside the checkout
and serves the demo's first request from it.
"""

from __future__ import annotations

import importlib.metadata
import os
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.version import Version

import cachekit
from cachekit import _version

ROOT = Path(__file__).resolve().parent.parent
WHEEL_CHECK = ROOT / ".ci" / "wheel_check.py"
# A backstop: the check bounds each of its steps itself and normally takes well under a
# minute (most of it pip fetching setuptools and the dependencies).
WHEEL_CHECK_TIMEOUT = 300


def test_installed_metadata_version_is_cachekit_version() -> None:
    assert importlib.metadata.version("cachekit") == cachekit.__version__


def test_the_version_is_written_once() -> None:
    assert cachekit.__version__ is _version.__version__
    assert str(Version(cachekit.__version__)) == cachekit.__version__, "canonical PEP 440"
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in pyproject["project"]
    assert "version" in pyproject["project"]["dynamic"]
    dynamic = pyproject["tool"]["setuptools"]["dynamic"]
    assert dynamic["version"] == {"attr": "cachekit._version.__version__"}


def test_metadata_has_what_an_index_page_shows() -> None:
    metadata = importlib.metadata.metadata("cachekit")
    classifiers = set(metadata.get_all("Classifier") or [])
    assert {
        "Framework :: AsyncIO",
        "Framework :: aiohttp",
        "Typing :: Typed",
        "Topic :: Internet :: WWW/HTTP",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
    } <= classifiers
    assert any(c.startswith("Development Status :: ") for c in classifiers)
    assert metadata["License-Expression"] == "MIT"
    assert metadata["Requires-Python"] == ">=3.11"
    urls = dict(entry.split(", ", 1) for entry in metadata.get_all("Project-URL") or [])
    assert set(urls) == {"Homepage", "Documentation", "Changelog", "Issues"}


def test_the_pytest_plugin_is_registered() -> None:
    (plugin,) = importlib.metadata.entry_points(group="pytest11", name="cachekit")
    assert plugin.value == "cachekit.testing"


def test_changelog_has_unreleased_and_the_current_version() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert "## [Unreleased]" in changelog
    assert f"## [{cachekit.__version__}]" in changelog


@pytest.mark.slow
def test_the_built_wheel_installs_and_serves_the_demo() -> None:
    """``.ci/wheel_check.py``: build, install into a fresh venv, the demo's first request."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CACHEKIT_", "DEMO_"))}
    env.pop("PYTHONPATH", None)
    # Its own session, so that a check overrunning the backstop goes down with its demo.
    process = subprocess.Popen(
        [sys.executable, str(WHEEL_CHECK)],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=WHEEL_CHECK_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"wheel check took over {WHEEL_CHECK_TIMEOUT} s:\n{output}")
    assert process.returncode == 0, f"wheel check failed:\n{output}"
    assert "wheel check: ok" in output
