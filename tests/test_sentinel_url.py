"""Sentinel-mode URLs (`cachekit.backends.sentinel_url`), parsed without redis-py."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import cachekit
from cachekit.backends.sentinel_url import SentinelAddress, parse_sentinel_url

PACKAGE = Path(cachekit.__file__).parent


def test_sentinel_urls_list_every_sentinel() -> None:
    assert parse_sentinel_url("redis://:s%40cret@h1:26380,h2/3") == SentinelAddress(
        sentinels=(("h1", 26380), ("h2", 26379)),
        username=None,
        password="s@cret",
        db=3,
        tls=False,
    )
    assert parse_sentinel_url("rediss://app:pw@[::1]:5000").sentinels == (("::1", 5000),)
    for bad in ("unix:///tmp/s", "redis://h1:x", "redis://h1,", "redis://h1/db0"):
        with pytest.raises(ValueError):
            parse_sentinel_url(bad)


def imported_modules(path: Path) -> set[str]:
    """The modules a source file imports (at any level)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_settings_check_sentinel_urls_without_redis_code() -> None:
    settings = imported_modules(PACKAGE / "settings.py")
    parser = imported_modules(PACKAGE / "backends" / "sentinel_url.py")
    codings = imported_modules(PACKAGE / "encodings.py")
    ignored = imported_modules(PACKAGE / "ignored_query.py")
    assert {name for name in settings if name.startswith("cachekit")} == {
        "cachekit.backends.sentinel_url",
        "cachekit.encodings",
        "cachekit.ignored_query",
    }
    for name in settings | parser | codings | ignored:
        assert name.split(".")[0] not in ("redis", "hiredis"), name
    assert not any(name.startswith("cachekit") for name in parser)
    assert {name for name in codings if name.startswith("cachekit")} <= {
        "cachekit.directives",
        "cachekit.memo",
    }
