"""Every use of aiohttp's private internals, each checked against aiohttp's own path at import.

Three shortcuts make a hit cheaper to find, build and send than the public API would:

- **Response template** (`new_hit_response`): a hit is made by `object.__new__` and a copy of
  the attributes `web.Response.__init__` sets, instead of running the constructor's argument
  checks (about half of what building a hit costs). Relies on: `web.Response` keeping its
  state in the instance `__dict__`, under `_state`, `_headers`, `_status`, `_reason`,
  `_body`, every other attribute the constructor sets being a constant.
- **Prebuilt header bytes** (`Wire`, `HitResponse`): the status line and header block of a
  hit are serialised once per block (`build_wire`, kept by `responses`) and handed to
  aiohttp's writer, when nothing changed the response between the handler and the socket
  (its header multidict's version, its body, status and reason, chunking, HTTP/1.1).
  Relies on: `web.Response._start` (adds `Content-Length`) and `web.StreamResponse._start`
  (`_prepare_headers`, the `on_response_prepare` hook, `_write_headers`), which
  `HitResponse` overrides; the response's `_headers`, `_body`, `_status`, `_reason`,
  `_chunked`, `_payload_writer`, `_send_headers_immediately`; the server writer
  `aiohttp.http_writer.StreamWriter` and its `_headers_buf`, `_headers_written`,
  `_on_headers_sent`; `aiohttp.http_writer._serialize_headers`, which makes the bytes.

- **The handler's app state** (`app_value`): `request.app.get(key)` read as
  `request._match_info._current_app._state.get(key)`, one Python call instead of three
  (the `app` and `current_app` properties and `Application.get`). Relies on: `web.Request`
  keeping its match info in `_match_info`, `UrlMappingMatchInfo` its current app in
  `_current_app`, `web.Application` its mapping in `_state`.

The self-check at import: `APP_STATE_WORKS` is False unless the direct read gives what the
public one gives for a probe app stack (a sub-app current, the key present and absent);
`RESPONSE_TEMPLATE` is None unless every attribute beyond the
per-response ones is an immutable constant and instances built both ways are equal for a
few probes; `WIRE_WORKS` is False unless a probe response sent into a fake transport gives
the same bytes both ways and really took the shortcut. Any difference, or any exception,
turns that shortcut off: hits are then built by the constructor and serialised by aiohttp,
and with `WIRE_WORKS` off they are plain `web.Response`s, so an aiohttp whose private
methods changed shape never calls cachekit's overrides.
tests/test_aiohttp_internals.py compares the bytes on the wire with the shortcuts on and off.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterable
from http import HTTPStatus
from typing import Any, Final, NamedTuple, cast

from aiohttp import hdrs, web
from aiohttp.http import SERVER_SOFTWARE, HttpVersion11, StreamWriter
from aiohttp.http_writer import _serialize_headers
from aiohttp.web_urldispatcher import UrlMappingMatchInfo
from multidict import CIMultiDict, CIMultiDictProxy, getversion, istr

#: multidict's `getversion`: a number that changes whenever the multidict changes.
header_version: Final = cast("Callable[[CIMultiDict[str]], int]", getversion)

#: The reason phrase aiohttp gives each status it knows (asked of aiohttp; others get "",
#: which the template's check confirms for a status it does not know).
REASONS: Final = {int(code): web.StreamResponse(status=code).reason for code in HTTPStatus}


class Wire(NamedTuple):
    """The bytes aiohttp would send for a header block, and what they assume."""

    status: int
    reason: str
    content_length: int
    #: The `Content-Length` line `Response._start` adds to the block.
    content_length_text: str
    #: Status line and header lines, as aiohttp's own serialiser writes them.
    data: bytes


def build_wire(status: int, block: CIMultiDict[str], body_length: int) -> Wire | None:
    """The wire form of `block` for a response of `status` with a body of `body_length`
    bytes; None where aiohttp's own path must decide (empty bodies, statuses without a
    body, a block that states its length or transfer coding or lacks `Date`, `Content-Type`
    or `Server`: lines `prepare` would change; lines aiohttp refuses to send), or when the
    shortcut is off."""
    if not WIRE_WORKS:
        return None
    return _wire_of(status, block, body_length)


def _wire_of(status: int, block: CIMultiDict[str], body_length: int) -> Wire | None:
    if (
        body_length == 0
        or status < 200
        or status in (204, 304)
        or hdrs.CONTENT_LENGTH in block
        or hdrs.TRANSFER_ENCODING in block  # `prepare` drops it for HEAD
        or hdrs.DATE not in block
        or hdrs.CONTENT_TYPE not in block
        or hdrs.SERVER not in block
    ):
        return None
    reason = REASONS.get(status, "")
    length = str(body_length)
    full = block.copy()
    full.add(hdrs.CONTENT_LENGTH, length)
    try:
        data = _serialize_headers(f"HTTP/1.1 {status} {reason}", full)
    except ValueError:  # a control character: aiohttp's own path raises it when sending
        return None
    return Wire(status, reason, body_length, length, data)


class HitResponse(web.Response):
    """A `web.Response` made from a stored entry; sends its `Wire` when nothing changed it.

    To handlers, middlewares and signals it is an ordinary `web.Response`.
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


_stream_start: Final = web.StreamResponse._start


def new_hit_response(
    status: int, body: bytes, headers: CIMultiDict[str], wire: Wire | None
) -> web.Response:
    """`web.Response(status=status, body=body, headers=headers)` (a copy of `headers`), made
    from the template when that shortcut is on; with `wire`, sent from its bytes."""
    template = RESPONSE_TEMPLATE
    response_class = HitResponse if WIRE_WORKS else web.Response
    if template is None:
        response = response_class(status=status, body=body, headers=headers)
        state = response.__dict__
    else:  # what the constructor sets, without its argument checks (one call on a hit)
        response = _object_new(response_class)
        state = template.copy()
        state["_state"] = {}
        state["_headers"] = headers.copy()
        state["_status"] = status
        state["_reason"] = REASONS.get(status, "")
        state["_body"] = body
        response.__dict__ = state
    if wire is not None and WIRE_WORKS:
        state["_wire"] = wire
        state["_wire_version"] = header_version(state["_headers"])
    return response


_object_new: Final = object.__new__
_PER_RESPONSE: Final = frozenset({"_state", "_headers", "_status", "_reason", "_body"})
_IMMUTABLE: Final = (type(None), bool, int, float, str, bytes)


# ---------------------------------------------------------------- the checks at import


def response_template() -> dict[str, object] | None:
    """The constant attributes `web.Response.__init__` sets, if `new_hit_response` with
    them builds exactly what this aiohttp's constructor builds (both response classes);
    None otherwise."""
    global RESPONSE_TEMPLATE, WIRE_WORKS  # noqa: PLW0603  (set back before returning)
    saved = RESPONSE_TEMPLATE, WIRE_WORKS
    try:
        fields = vars(web.Response(status=200, body=b"", headers=CIMultiDict()))
        template = {name: value for name, value in fields.items() if name not in _PER_RESPONSE}
        if not fields.keys() >= _PER_RESPONSE or not all(
            type(value) in _IMMUTABLE for value in template.values()
        ):
            return None
        RESPONSE_TEMPLATE = template
        for status, body in ((200, b"probe"), (404, b""), (203, b"x" * 100), (599, b"?")):
            headers = CIMultiDict([("Content-Type", "text/plain"), ("X-A", "1"), ("x-a", "2")])
            for response_class in (HitResponse, web.Response):
                WIRE_WORKS = response_class is HitResponse  # which class it builds
                built = response_class(status=status, body=body, headers=headers)
                fast = new_hit_response(status, body, headers, None)
                if vars(built) != vars(fast) or type(built) is not type(fast):
                    return None
    except Exception:  # any surprise means: use the constructor
        return None
    finally:
        RESPONSE_TEMPLATE, WIRE_WORKS = saved
    return template


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


def wire_matches_aiohttp() -> bool:
    """Whether a `HitResponse` with a `Wire` sends exactly what `web.Response` sends, and
    really takes the shortcut to do it (checked for a few probes)."""
    probes = (
        (200, (("Content-Type", "application/json"), ("ETag", '"e"'))),
        (404, (("Content-Type", "text/plain"), ("X-A", "1"), ("x-a", "2"))),
        (203, (("Content-Type", "a/b"), ("X-Latin", "caf\xe9"), ("X-Utf", "\u2603"))),
    )
    try:
        for status, lines in probes:
            date, server = ("Date", "Tue, 24 Nov 2026 07:00:00 GMT"), ("Server", SERVER_SOFTWARE)
            block = CIMultiDict([(istr(name), value) for name, value in (*lines, date, server)])
            body = b"probe body"
            wire = _wire_of(status, block, len(body))
            if wire is None:
                return False
            fast = HitResponse(status=status, body=body, headers=block)
            fast._wire, fast._wire_version = wire, header_version(fast._headers)
            plain = web.Response(status=status, body=body, headers=block)
            if _sent(fast) != _sent(plain):
                return False
            # Both halves of the shortcut were taken: `_start` kept the wire, and nothing
            # changed the headers before `_write_headers` handed over its bytes.
            if fast._wire is not wire or header_version(fast._headers) != fast._wire_version:
                return False
    except Exception:  # any surprise means: aiohttp's own path
        return False
    return True


# ---------------------------------------------------------------- the handler's app


def _app_value_public(request: web.Request, key: web.AppKey[Any]) -> Any:
    return request.app.get(key)


def _app_value_direct(request: web.Request, key: web.AppKey[Any]) -> Any:
    return request._match_info._current_app._state.get(key)  # type: ignore[union-attr]


def app_state_matches_aiohttp() -> bool:
    """Whether `_app_value_direct` reads what `request.app.get` reads (checked on a probe
    stack of an app and a sub-app, each current in turn, with the key set and not)."""
    try:
        key = web.AppKey("cachekit_probe", int)
        outer, inner, bare = web.Application(), web.Application(), web.Application()
        outer[key], inner[key] = 1, 2
        for current in (outer, inner, bare):
            match_info = UrlMappingMatchInfo({}, cast(Any, None))
            for app in (outer, inner, bare):
                match_info.add_app(app)
            match_info.current_app = current
            request = cast(web.Request, _MatchedRequest(match_info))
            public = cast(Any, web.Request.app).fget(request).get(key)
            if _app_value_direct(request, key) != public:
                return False
    except Exception:  # any surprise means: the public path
        return False
    return True


class _MatchedRequest:
    """Just what `web.Request.app` reads."""

    def __init__(self, match_info: UrlMappingMatchInfo) -> None:
        self._match_info = match_info


#: Whether the handler's app state is read directly (see the module docstring).
APP_STATE_WORKS: Final = app_state_matches_aiohttp()
#: `request.app.get(key)`: the value the app serving `request` holds under `key`, or None.
app_value: Final[Callable[[web.Request, web.AppKey[Any]], Any]] = (
    _app_value_direct if APP_STATE_WORKS else _app_value_public
)

#: Whether hits send prebuilt bytes on this aiohttp (see the module docstring).
WIRE_WORKS: bool = wire_matches_aiohttp()
#: The constructor's constant attributes, or None when that shortcut is off (None while
#: `response_template` checks, which sets and restores it around its probes).
RESPONSE_TEMPLATE: dict[str, object] | None = None
RESPONSE_TEMPLATE = response_template()
