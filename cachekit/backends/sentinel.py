"""The Redis store behind Sentinel: the primary is looked up by service name, and again
whenever a connection finds that it is talking to a demoted primary."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from redis.asyncio.sentinel import Sentinel

from cachekit.backends.redis import RedisStore, connection_options
from cachekit.backends.sentinel_url import parse_sentinel_url


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
