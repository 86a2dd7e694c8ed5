"""Key parity with aiohttp: two requests share an entry only if the handler saw the same.

A differential test over real sockets. Hostile raw request targets and Host headers go to
a cached server (one per store) and to the same handlers without a cache; every answer
from the cache must equal the fresh answer to the same request. The handlers echo what
aiohttp handed them (tests/parity_server.py), so an entry served for another request's
inputs shows up as a difference. Runs on aiohttp's C request parser and on its Python one,
which split some targets differently (`/item/1#x?y` is path `/item/1#x` to the first, a
fragment to the second): the key must follow whichever the handler got.

Tracking parameters (`ignore_query_params`, on by default) are left out of default keys,
so the handler must not see them either: the `passthrough` server (cachekit, nothing
stored) answers what the handler is handed, which must be the fresh answer less those
parameters (checked against `fnmatch`, not cachekit's matcher), and every cached answer
must equal it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.redis_servers import RedisServer

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
CACHED_STORES = ("memory", "fakeredis", "redis", "redis-near")

# Tokens that sit on every boundary a target parser has: separators and their escapes in
# both cases, dot segments, double slashes, `;` parameters, `+` against `%20`, broken and
# non-UTF-8 escapes, raw non-ASCII bytes, and the characters cachekit's keys use.
TARGET_TOKENS = [
    "item", "t", "/", "//", "1", "2", "a", "b", "q", "#", "?", "&", "=", ";", "%2F", "%2f",
    "%3F", "%23", "%25", "%26", "%3D", ".", "..", "%2E", "+", "%20", "%2B", "%ff", "%C3%A9",
    "%61", "%", "~", ":", "@", "*", "é",
    # Ignored names (and near misses: case, a prefix, an escaped `_`) where a query starts.
    "?utm_source=", "&utm_", "utm%5Fid", "&fbclid=", "gclid", "UTM_source", "utm",
]  # fmt: skip
#: The default `ignore_query_params`.
IGNORED = ("utm_*", "fbclid", "gclid", "msclkid")
PREFIXES = ["", "", "", "http://other.host", "http://example.com:80", "HTTP://Example.com"]
HOSTS = ["example.com", "Example.COM", "example.com:80", "other.host", "EXAMPLE.com:80"]


@dataclass(frozen=True)
class Servers:
    """Ports of one parity_server process: `fresh` and one per cached store."""

    ports: dict[str, int]


def _start(parser: str, redis_url: str) -> tuple[subprocess.Popen[str], Servers]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if parser == "python":
        env["AIOHTTP_NO_EXTENSIONS"] = "1"
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.parity_server", "--redis-url", redis_url],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        process.kill()
        pytest.fail("tests.parity_server did not start")
    return process, Servers(json.loads(line))


@pytest.fixture(scope="module", params=["c-parser", "python-parser"])
def servers(request: pytest.FixtureRequest, redis_server: RedisServer) -> Iterator[Servers]:
    """The servers of one parser, on our own Redis (flushed, so every run starts cold)."""
    redis_server.ensure_running()
    redis_server.flushall()
    parser = "python" if request.param == "python-parser" else "c"
    process, started = _start(parser, f"{redis_server.url.rpartition('/')[0]}/0")
    yield started
    assert process.stdin is not None and process.stdout is not None
    process.stdin.close()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    process.stdout.close()


def send(port: int, target: bytes, host: bytes | None) -> tuple[int, bytes]:
    """One raw GET over its own connection: (status, body)."""
    lines = [b"GET " + target + b" HTTP/1.1"]
    if host is not None:
        lines.append(b"Host: " + host)
    lines += [b"Connection: close", b"", b""]
    with socket.create_connection((HOST, port), timeout=10) as connection:
        connection.sendall(b"\r\n".join(lines))
        chunks = []
        while chunk := connection.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
    return status, body


def without_ignored(answer: tuple[int, bytes]) -> tuple[int, Any]:
    """An answer as a handler on the default key is handed the request: without the
    ignored query parameters in what it echoes (the template route keeps them all)."""
    status, body = answer
    if status != 200:
        return status, body
    seen = json.loads(body)
    if "route" in seen:  # the default-key routes
        seen["query"] = [
            [name, value]
            for name, value in seen["query"]
            if not any(fnmatchcase(name, pattern) for pattern in IGNORED)
        ]
    return status, seen


def check(servers: Servers, requests: list[tuple[bytes, bytes | None]]) -> None:
    """The handler is handed each request less its ignored parameters, and every cached
    server answers each request as the handler would for it."""
    for target, host in requests:
        handed = send(servers.ports["passthrough"], target, host)
        fresh = send(servers.ports["fresh"], target, host)
        assert without_ignored(handed) == without_ignored(fresh), (target, host)
        if handed[0] == 200:
            assert without_ignored(handed) == (200, json.loads(handed[1])), "never seen"
        for store in CACHED_STORES:
            got = send(servers.ports[store], target, host)
            assert got == handed, (store, target, host)


targets = st.builds(
    lambda prefix, tokens: (prefix + "/" + "".join(tokens)).encode("utf-8"),
    st.sampled_from(PREFIXES),
    st.lists(st.sampled_from(TARGET_TOKENS), max_size=10),
)
hosts = st.sampled_from(HOSTS).map(str.encode) | st.none()
raw_requests = st.lists(st.tuples(targets, hosts), min_size=1, max_size=6)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(raw_requests)
@example([(b"/item/1#x?evil=%3Cscript%3E", b"example.com"), (b"/item/1", b"example.com")])
@example([(b"/t/1#x?q=%3Cscript%3E", b"example.com"), (b"/t/1", b"example.com")])
@example([(b"http://other.host/item/1", b"example.com"), (b"/item/1", b"example.com")])
@example([(b"/item/1", b"Example.com"), (b"/item/1", b"example.com")])
@example([(b"/item/1", b"example.com:80"), (b"/item/1", b"example.com")])
@example([(b"/item/%2F", b"a"), (b"/item//", b"a"), (b"/item/%252F", b"a")])
@example([(b"/a/../item/1", b"a"), (b"/item/1", b"a"), (b"//item/1", b"a")])
@example([(b"/p?q=a+b", b"a"), (b"/p?q=a%20b", b"a"), (b"/p?q=a%2Bb", b"a")])
@example([(b"/p?a=1&a=2", b"a"), (b"/p?a=2&a=1", b"a"), (b"/p?a=1;a=2", b"a")])
@example([(b"/p?a&a=&b", b"a"), (b"/p?a=&a&b=", b"a"), (b"/p?a=%ff", b"a"), (b"/p?a=%25ff", b"a")])
@example([(b"/p%3Fa=1", b"a"), (b"/p?a=1", b"a"), (b"/p%23a", b"a"), (b"/p#a", b"a")])
@example([(b"/p?x#f1", b"a"), (b"/p?x#f2", b"a"), (b"/p?x", b"a")])
@example([(b"/item/1", None), (b"/item/1", b"127.0.0.1")])
@example([(b"/item/1?utm_source=a", b"a"), (b"/item/1?utm_source=b", b"a"), (b"/item/1", b"a")])
@example([(b"/p?utm%5Fsource=x&a=1", b"a"), (b"/p?a=1", b"a"), (b"/p?UTM_source=x&a=1", b"a")])
@example([(b"/p?b=2&fbclid=1&a=1&b=1", b"a"), (b"/p?a=1&b=2&b=1", b"a"), (b"/p?b=1&a=1&b=2", b"a")])
@example(
    [(b"http://other.host/item/1?gclid=1", b"a"), (b"/item/1", b"a"), (b"/item/1?gclid=2", None)]
)
@example(
    [(b"/item/1#x?utm_source=a", b"a"), (b"/item/1#x", b"a"), (b"/item/1?utm_source=a#x", b"a")]
)
@example([(b"/t/1?q=a&utm_source=x", b"a"), (b"/t/1?q=a", b"a"), (b"/t/1?utm_source=y&q=a", b"a")])
def test_a_cached_answer_equals_the_fresh_answer(
    servers: Servers, requests: list[tuple[bytes, bytes | None]]
) -> None:
    check(servers, requests)


def test_the_poisoning_request_is_answered_for_its_own_inputs(servers: Servers) -> None:
    """The reported attack: the raw target `/item/1#x?evil=...` must not fill `/item/1`."""
    port = servers.ports["memory"]
    evil = send(port, b"/item/1#x?evil=%3Cscript%3E", b"example.com")
    plain = send(port, b"/item/1", b"example.com")
    assert plain == send(servers.ports["fresh"], b"/item/1", b"example.com")
    assert b"script" not in plain[1]
    assert evil[0] == 200


def test_a_tracking_parameter_reflected_by_the_handler_cannot_poison(servers: Servers) -> None:
    """An unkeyed input is the classic poisoning: `utm_source` is not in the default key,
    so the handler must not see it, and the entry holds nothing of the attacker's."""
    for store in CACHED_STORES:
        port = servers.ports[store]
        evil = send(port, b"/item/2?utm_source=%3Cscript%3E", b"example.com")
        plain = send(port, b"/item/2", b"example.com")
        assert b"script" not in evil[1] and plain == evil, store
