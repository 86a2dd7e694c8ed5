"""The one-server topology (`cachekit.backends.single_server`): how a lookup's MGET is packed."""

from __future__ import annotations

import pytest

from cachekit.backends import lookup_channel
from cachekit.backends.layout import KeyLayout
from cachekit.backends.lookup_channel import bulk_string
from cachekit.backends.single_server import SingleServer, client_for_url
from tests.redis_servers import HOST

NAMESPACE = "chan"
#: Keys with variants, non-ASCII text, RESP framing characters, braces, a long one.
KEYS = ["a", "a#v1", "é/ü", "k\r\n$3\r\nbad", "c{x}#v#w", "x" * 500, "a"]


def resp(*args: str) -> bytes:
    """A command in RESP, spelled out."""
    return b"*%d\r\n" % len(args) + b"".join(bulk_string(arg.encode()) for arg in args)


@pytest.mark.parametrize("packer", ["hiredis", "python"])
def test_a_lookup_mget_is_packed_as_its_keys_would_be(
    packer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if packer == "python":  # hiredis < 2.1 has no packer of its own
        monkeypatch.setattr(lookup_channel, "HIREDIS_PACK", None)
    layout = KeyLayout(NAMESPACE)
    server = SingleServer(client_for_url(f"redis://{HOST}:1/0", 2.0), layout)
    expected = resp("MGET", layout.generation_key, *map(layout.entry_key, KEYS))
    assert server._packed_mget(KEYS) == expected
    with pytest.raises(UnicodeEncodeError):  # fails its batch (test_lookup_channel.py)
        server._packed_mget(["bad\ud800"])
