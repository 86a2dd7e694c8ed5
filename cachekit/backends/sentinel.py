"""The Redis store behind Sentinel: the primary is looked up by service name, and again
whenever a connection finds that it is talking to a demoted primary."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import unquote

from redis.asyncio import Redis
from redis.asyncio.sentinel import Sentinel

from cachekit.backends.redis import RedisStore, connection_options

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


class SentinelStore(RedisStore):
    """A `RedisStore` whose connections go to the current primary of a Sentinel service.

    During a failover, calls fail (and the cache fails open) until the Sentinels report the
    new primary; connections to a demoted primary are dropped on its first READONLY reply.
    """

    def __init__(
        self,
        sentinel: Sentinel,
        service: str,
        namespace: str,
        timeout: float,
        max_variants: int = 32,
        **options: Any,
    ) -> None:
        self._sentinel = sentinel
        primary: Redis = sentinel.master_for(service, **connection_options(timeout))
        super().__init__(primary, namespace, timeout, max_variants, **options)

    @classmethod
    def connect(
        cls,
        url: str,
        service: str,
        namespace: str,
        timeout: float,
        max_variants: int = 32,
        *,
        sentinel_username: str | None = None,
        sentinel_password: str | None = None,
        **options: Any,
    ) -> SentinelStore:
        """Lazily connect through the Sentinels listed in `url` (see `parse_sentinel_url`).

        The URL's credentials are for the primary; `sentinel_username` and
        `sentinel_password` for the Sentinels themselves, when they require them."""
        address = parse_sentinel_url(url)
        credentials = {"username": sentinel_username, "password": sentinel_password}
        sentinel = Sentinel(  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
            list(address.sentinels),
            sentinel_kwargs={**connection_options(timeout), "ssl": address.tls, **credentials},
            username=address.username,
            password=address.password,
            db=address.db,
            ssl=address.tls,
        )
        return cls(sentinel, service, namespace, timeout, max_variants, **options)

    async def close(self) -> None:
        """Close the primary's pool, then the connections to the Sentinels."""
        await super().close()
        for client in self._sentinel.sentinels:
            await client.aclose()
