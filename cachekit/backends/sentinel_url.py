"""Sentinel-mode URLs, parsed without redis-py so that the settings can check them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final
from urllib.parse import unquote

DEFAULT_SENTINEL_PORT: Final = 26379
SENTINEL_SCHEMES: Final = ("redis://", "rediss://")


@dataclass(frozen=True, slots=True)
class SentinelAddress:
    """What a sentinel-mode URL says: the Sentinels, and how to talk to the primary."""

    sentinels: tuple[tuple[str, int], ...]
    username: str | None
    password: str | None
    db: int
    tls: bool


def parse_sentinel_url(url: str) -> SentinelAddress:
    """Parse `redis[s]://[user:password@]host[:port][,host[:port]...][/db]`.

    Ports default to 26379. Credentials and `db` are for the primary; the Sentinels are
    asked without credentials. Raises ValueError with a message that never echoes the URL
    (it may carry a password).
    """
    scheme = next((s for s in SENTINEL_SCHEMES if url.startswith(s)), None)
    if scheme is None:
        raise ValueError(f"must start with one of {', '.join(SENTINEL_SCHEMES)} in sentinel mode")
    rest = url[len(scheme) :]
    location, _, path = rest.partition("/")
    if "?" in location or "?" in path:
        raise ValueError("query options are not supported in sentinel mode")
    userinfo, at, hosts = location.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    sentinels = tuple(_host_port(part) for part in hosts.split(","))
    try:
        db = int(path) if path else 0
    except ValueError:
        raise ValueError("the path must be a database number") from None
    return SentinelAddress(sentinels, username, password, db, scheme == "rediss://")


def _host_port(part: str) -> tuple[str, int]:
    host, colon, port = part.strip().rpartition(":")
    if not colon:
        host, port = port, str(DEFAULT_SENTINEL_PORT)
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("every Sentinel must be host or host:port, separated by commas")
    return host.strip("[]"), int(port)
