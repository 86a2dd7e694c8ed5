"""`HitResponse`: a hit that sends a prebuilt status line and header block.

aiohttp turns the status line and header multidict of every response into bytes as it
sends it, after `prepare` has added `Content-Length` and `Server`: about 1.3 µs per
response on this project's machine, more than half of what a hit added to aiohttp's own
floor (bench/README.md).
A hit's header block changes at most once a second (`Age`, the ttl in `Cache-Status`),
so `responses` builds those bytes once per block (a `Wire`) and a `HitResponse` hands
them to aiohttp's writer instead, when nothing changed the response between the handler
and the socket:

- its header multidict is untouched (multidict's `getversion` moves on every change: a
  middleware's header, a cookie, compression, `Connection: close` on a closing or
  HTTP/1.0 connection),
- its body is still bytes of the same length, its status and reason the same,
- the request is HTTP/1.1 and the response is not chunked.

Otherwise aiohttp's own code runs, unchanged. The shortcut relies on aiohttp internals
(`Response._start`, `StreamResponse._write_headers`, the writer's buffered header bytes);
`WIRE_WORKS` sends a probe both ways into a fake transport once, at import, and any
difference in the bytes, or any surprise, turns the shortcut off.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, Final, cast

from aiohttp import hdrs, web
from aiohttp.http import SERVER_SOFTWARE, HttpVersion11
from aiohttp.http_writer import StreamWriter, _serialize_headers
from multidict import CIMultiDict, CIMultiDictProxy, getversion, istr

_stream_start: Final = web.StreamResponse._start

#: multidict's `getversion`: a number that changes whenever the multidict changes.
header_version: Final = cast("Callable[[CIMultiDict[str]], int]", getversion)


@dataclass(frozen=True, slots=True)
class Wire:
    """The bytes aiohttp would send for a header block, and what they assume."""

    status: int
    reason: str
    content_length: int
    #: The `Content-Length` line `Response._start` adds to the block.
    content_length_text: str
    #: Status line and header lines, as aiohttp's own serialiser writes them.
    data: bytes


def build_wire(status: int, reason: str, block: CIMultiDict[str], body_length: int) -> Wire | None:
    """The wire form of `block` for a response of `status` with a body of `body_length`
    bytes; None where aiohttp's own path must decide (empty bodies, statuses without a
    body, a block that states its length or lacks `Date`, `Content-Type` or `Server`: lines
    `prepare` would add), or when the shortcut is off."""
    return _wire_of(status, reason, block, body_length) if WIRE_WORKS else None


def _wire_of(status: int, reason: str, block: CIMultiDict[str], body_length: int) -> Wire | None:
    if (
        body_length == 0
        or status < 200
        or status in (204, 304)
        or hdrs.CONTENT_LENGTH in block
        # `prepare` would add these (`responses` gives every hit's block a Server line)
        or hdrs.DATE not in block
        or hdrs.CONTENT_TYPE not in block
        or hdrs.SERVER not in block
    ):
        return None
    length = str(body_length)
    full = block.copy()
    full.add(hdrs.CONTENT_LENGTH, length)
    data = _serialize_headers(f"HTTP/1.1 {status} {reason}", full)
    return Wire(status, reason, body_length, length, data)


class HitResponse(web.Response):
    """A `web.Response` made from a stored entry; sends its `Wire` when nothing changed it.

    Built by `responses.from_entry` (which sets `_wire` and `_wire_version`); to handlers,
    middlewares and signals it is an ordinary `web.Response`.
    """

    _wire: Wire | None = None
    #: `header_version` of the headers when they were last known to match `_wire`.
    _wire_version: int = -1

    async def _start(self, request: web.BaseRequest) -> Any:
        wire = self._wire
        if wire is not None:
            headers, body = self._headers, self._body
            if (
                header_version(headers) == self._wire_version
                and type(body) is bytes
                and len(body) == wire.content_length
                and self._status == wire.status
                and self._reason == wire.reason
                and not self._chunked
                and request.version == HttpVersion11
            ):
                headers.add(hdrs.CONTENT_LENGTH, wire.content_length_text)  # as `Response._start`
                self._wire_version = header_version(headers)
                return await _stream_start(self, request)
            self._wire = None
        return await super()._start(request)

    async def _write_headers(self) -> None:
        wire = self._wire
        # The status is settled by now: aiohttp refuses `set_status` once `_start` began.
        writer = self._payload_writer
        if (
            wire is not None
            and header_version(self._headers) == self._wire_version
            and type(writer) is StreamWriter  # aiohttp's server writer (not a test double)
            and writer._on_headers_sent is None  # with no callback to run
        ):
            # What `StreamWriter.write_headers` does with the bytes it serialises.
            writer._headers_written = False
            writer._headers_buf = wire.data
            if self._send_headers_immediately:
                writer.send_headers()
            return
        await super()._write_headers()


# ---------------------------------------------------------------- the check at import


class _Sink:
    """A transport that keeps what is written."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        self.data += data

    def writelines(self, chunks: Iterable[bytes]) -> None:
        for chunk in chunks:
            self.data += chunk

    def is_closing(self) -> bool:
        return False


class _Protocol:
    def __init__(self) -> None:
        self.transport = _Sink()
        self._paused = False


class _ProbeRequest:
    """Just what `StreamResponse.prepare` reads of a keep-alive HTTP/1.1 GET."""

    version = HttpVersion11
    method = "GET"
    keep_alive = True
    headers: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict())

    def __init__(self, writer: StreamWriter) -> None:
        self._payload_writer = writer

    async def _prepare_hook(self, response: web.StreamResponse) -> None:
        return None


def _run(step: Coroutine[Any, Any, Any]) -> None:
    """Run a coroutine that must finish without waiting for anything."""
    try:
        step.send(None)
    except StopIteration:
        return
    step.close()
    raise RuntimeError("the probe waited for something")


def _sent(response: web.Response) -> bytes:
    protocol = _Protocol()
    writer = StreamWriter(cast(Any, protocol), cast(Any, None))
    if writer._on_headers_sent is not None:  # also: the attribute `_write_headers` reads
        raise RuntimeError("a writer with a headers-sent callback")
    request = cast(web.BaseRequest, _ProbeRequest(writer))
    _run(response.prepare(request))
    _run(response.write_eof())
    return bytes(protocol.transport.data)


def _wire_matches_aiohttp() -> bool:
    """Whether a `HitResponse` with a `Wire` sends exactly what `web.Response` sends, and
    really takes the shortcut to do it (checked for a few probes)."""
    probes = (
        (200, "OK", (("Content-Type", "application/json"), ("ETag", '"e"'))),
        (404, "Not Found", (("Content-Type", "text/plain"), ("X-A", "1"), ("x-a", "2"))),
        (203, "Non-Authoritative Information", (("Content-Type", "a/b"),)),
    )
    try:
        for status, reason, lines in probes:
            date, server = ("Date", "Tue, 24 Nov 2026 07:00:00 GMT"), ("Server", SERVER_SOFTWARE)
            block = CIMultiDict([(istr(name), value) for name, value in (*lines, date, server)])
            body = b"probe body"
            wire = _wire_of(status, reason, block, len(body))
            if wire is None:
                return False
            fast = HitResponse(status=status, reason=reason, body=body, headers=block)
            fast._wire, fast._wire_version = wire, header_version(fast._headers)
            plain = web.Response(status=status, reason=reason, body=body, headers=block)
            if _sent(fast) != _sent(plain):
                return False
            # Both halves of the shortcut were taken: `_start` kept the wire, and nothing
            # changed the headers before `_write_headers` handed over its bytes.
            if fast._wire is not wire or header_version(fast._headers) != fast._wire_version:
                return False
    except Exception:  # any surprise means: aiohttp's own path
        return False
    return True


#: Whether `HitResponse` sends prebuilt bytes on this aiohttp (see the module docstring).
WIRE_WORKS: Final = _wire_matches_aiohttp()
