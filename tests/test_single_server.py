"""The one-server topology (`cachekit.backends.single_server`): how a lookup's MGET is packed."""

from __future__ import annotations

from cachekit.backends import single_server
from cachekit.backends.layout import KeyLayout
from cachekit.backends.lookup_channel import pack_command
from cachekit.backends.single_server import SingleServer, client_for_url
from tests.redis_servers import HOST

NAMESPACE = "chan"


def test_a_lookup_mget_is_packed_as_its_keys_would_be() -> None:
    # Memoised per key: the same bytes as packing the entry keys each time, for keys with
    # variants, non-ASCII text, RESP framing characters and beyond the memo's length cap.
    layout = KeyLayout(NAMESPACE)
    server = SingleServer(client_for_url(f"redis://{HOST}:1/0", 2.0), layout)
    long_key = "x" * (single_server.PACKED_KEY_MAX + 1)
    keys = ["a", "a#v1", "é/ü", "k\r\n$3\r\nbad", long_key, "a"]
    for _ in range(2):
        expected = pack_command("MGET", layout.generation_key, *map(layout.entry_key, keys))
        assert server._packed_mget(keys) == expected
    assert long_key not in server._packed_keys
    for n in range(single_server.PACKED_KEYS_KEPT + 10):
        server._packed_mget([f"k{n}"])
    assert 0 < len(server._packed_keys) <= single_server.PACKED_KEYS_KEPT
