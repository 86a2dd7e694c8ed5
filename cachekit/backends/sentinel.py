"""SentinelStore: the Redis store on the primary that a Sentinel service names.

Its topology is a `SingleServer` on redis-py's Sentinel-managed client, which looks the
primary up again whenever a connection finds that it is talking to a demoted primary.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from redis.asyncio.sentinel import Sentinel

from cachekit.backends.layout import KeyLayout
from cachekit.backends.redis import RedisStore
from cachekit.backends.sentinel_url import parse_sentinel_url
from cachekit.backends.single_server import SingleServer
from cachekit.backends.topology import connection_options


class SentinelStore(RedisStore):
    """A `RedisStore` whose connections go to the current primary of a Sentinel service.

    During a failover, calls fail (and the cache fails open) until the Sentinels report the
    new primary; connections to a demoted primary are dropped on its first READONLY reply.
    Its topology is a `SingleServer` that also closes the connections to the Sentinels.
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
        primary: Redis = sentinel.master_for(service, **connection_options(timeout))

        def topology(client: Redis, layout: KeyLayout) -> SingleServer:
            return SingleServer(client, layout, also_close=sentinel.sentinels)

        super().__init__(primary, namespace, timeout, max_variants, topology=topology, **options)

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
        sentinel = Sentinel(  # type: ignore[no-untyped-call,unused-ignore]  # redis-py leaves it untyped
            list(address.sentinels),
            sentinel_kwargs={**connection_options(timeout), "ssl": address.tls, **credentials},
            username=address.username,
            password=address.password,
            db=address.db,
            ssl=address.tls,
        )
        return cls(sentinel, service, namespace, timeout, max_variants, **options)
