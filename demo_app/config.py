"""Reads the demo's DEMO_* environment variables and describes the cache store for logs."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from demo_app.upstream import DEFAULT_DELAY

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
MAX_PORT = 65535
# Query parameters redis-py accepts in a URL that carry a secret.
_SECRET_QUERY_KEYS = frozenset({"password"})


class ConfigError(ValueError):
    """An environment variable holds a value the demo cannot use; the message names it."""


@dataclass(frozen=True, slots=True)
class DemoConfig:
    """Where the demo listens and how slow its fake upstream is."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    upstream_delay: float = DEFAULT_DELAY

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> DemoConfig:
        """Read DEMO_HOST, DEMO_PORT and DEMO_UPSTREAM_DELAY; raise ``ConfigError`` if invalid."""
        # An empty variable counts as unset, as shells make `DEMO_PORT= cmd` easy to type.
        host = environ.get("DEMO_HOST", "").strip() or DEFAULT_HOST
        raw_port = environ.get("DEMO_PORT", "").strip()
        raw_delay = environ.get("DEMO_UPSTREAM_DELAY", "").strip()
        port = _parse_port(raw_port) if raw_port else DEFAULT_PORT
        delay = _parse_delay(raw_delay) if raw_delay else DEFAULT_DELAY
        return cls(host=host, port=port, upstream_delay=delay)


def _parse_port(raw: str) -> int:
    # isascii/isdigit rather than int(): int() also takes "+80", "8_0" and non-ASCII digits.
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_PORT:
        raise ConfigError(f"DEMO_PORT must be an integer from 1 to {MAX_PORT}, got {raw!r}")
    return int(raw)


def _parse_delay(raw: str) -> float:
    try:
        delay = float(raw)
    except ValueError:
        delay = math.nan
    if not math.isfinite(delay) or delay < 0:
        raise ConfigError(f"DEMO_UPSTREAM_DELAY must be a number of seconds >= 0, got {raw!r}")
    return delay


def redact_url(url: str) -> str:
    """Return ``url`` with any password (in the userinfo or the query) replaced by ``***``."""
    parts = urlsplit(url)
    userinfo, at, hostinfo = parts.netloc.rpartition("@")
    netloc = parts.netloc
    if at and ":" in userinfo:
        netloc = f"{userinfo.partition(':')[0]}:***@{hostinfo}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [(k, "***" if k.lower() in _SECRET_QUERY_KEYS else v) for k, v in pairs], safe="*"
        )
    return urlunsplit(parts._replace(netloc=netloc, query=query))
