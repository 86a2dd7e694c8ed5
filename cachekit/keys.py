"""Cache keys: templates, canonical queries and collision-proof escaping of request data.

Every part of a key is taken from what aiohttp hands the handler (`request.rel_url`, its
parsed `query`, `match_info`, `request.host`, `request.scheme`), never from a parse of
our own of the raw request target: a cache that reads a request differently from the
application can be steered onto another request's entry (web cache poisoning).

Every value is escaped so that only ASCII letters and digits survive unescaped (paths and
hosts keep a few more readable characters); `%XX` encodes the rest and `~` marks an absent
value. Separators in the key (`:`, `?`, `&`, `=`, `#`, `~`) can therefore never be forged by
a client, and escaping is injective, so two different inputs never yield one key. Escaping
is one check (most values need nothing) and `str.translate` over fixed tables: no memo,
nothing that grows with traffic.
"""

from __future__ import annotations

import hashlib
import operator
import re
import string
from collections.abc import Callable, Iterable, Mapping
from typing import Final, Protocol

from multidict import MultiMapping
from yarl import URL

ABSENT: Final = "~"
# Not "#": that separates a base key from its Vary variant.
HASHED_MARKER: Final = "~sha256="
#: The Vary name whose value is the request's scheme and host as aiohttp hands them to
#: the handler (`request.scheme`, `request.host`), not the raw `Host` header: an
#: absolute-form target or a proxy middleware's `clone(host=...)` makes them differ.
HOST: Final = "host"
_ALNUM: Final = frozenset(string.ascii_letters + string.digits)
_STRICT: Final = tuple(chr(byte) if chr(byte) in _ALNUM else f"%{byte:02X}" for byte in range(256))
#: `str.translate` table: every code point below 256 to its strict escape.
_STRICT_TABLE: Final = {byte: _STRICT[byte] for byte in range(256) if chr(byte) not in _ALNUM}
# A host keeps what hosts are made of (RFC 3986 reg-name and port), "%" excepted.
_HOST_SAFE: Final = _ALNUM | frozenset("-._:[]")
_HOST_TABLE: Final = {byte: _STRICT[byte] for byte in range(128) if chr(byte) not in _HOST_SAFE}
#: Where a host needs escaping; a host without a match escapes to itself.
_HOST_UNSAFE: Final = re.compile(r"[^A-Za-z0-9\-._:\[\]]")
# Characters a raw path keeps as they are, for readable keys. "%" is not among them: it is
# escaped like any other character, so `%23` in a raw path never meets an escaped "#".
_PATH_SAFE: Final = frozenset(string.ascii_letters + string.digits + "/-._!$&'()*+,;=:@")
_PATH_TABLE: Final = {byte: _STRICT[byte] for byte in range(128) if chr(byte) not in _PATH_SAFE}
_PATH_UNSAFE: Final = re.compile(r"[^A-Za-z0-9/\-._!$&'()*+,;=:@]")
# Light escaping for keys a developer's callable returns: readable, yet still injective.
_LIGHT_UNSAFE: Final = frozenset("%{}#~ \t\r\n\x0b\x0c")
TEMPLATE_FIELDS: Final = frozenset({"path", "host", "match_info", "query", "headers"})


class KeyedRequest(Protocol):
    """The parts of a request a key may be built from (aiohttp's `web.Request` fits)."""

    @property
    def match_info(self) -> Mapping[str, str]: ...
    @property
    def headers(self) -> MultiMapping[str]: ...
    @property
    def host(self) -> str: ...
    @property
    def scheme(self) -> str: ...
    @property
    def rel_url(self) -> URL: ...


def escape_bytes(data: bytes) -> str:
    """Escape bytes so that only ASCII letters and digits remain literal."""
    return data.decode("latin-1").translate(_STRICT_TABLE)


def escape_text(text: str) -> str:
    """Strictly escape text; lone surrogates (undecodable input) are kept distinct."""
    if text.isascii():
        if text.isalnum():  # letters and digits escape to themselves
            return text
        return text.translate(_STRICT_TABLE)
    return escape_bytes(text.encode("utf-8", "surrogatepass"))


def escape_host(host: str) -> str:
    """A host (with port) as readable as it is, every other character (`%` included)
    escaped: injective, and free of the key's separators."""
    return _escape_readably(host, _HOST_UNSAFE, _HOST_TABLE, _HOST_SAFE)


def escape_path(raw_path: str) -> str:
    """A raw path, readable where it can be, with every other character (`%` included)
    escaped: injective, and free of the key's separators."""
    return _escape_readably(raw_path, _PATH_UNSAFE, _PATH_TABLE, _PATH_SAFE)


def _escape_readably(
    text: str, unsafe: re.Pattern[str], table: dict[int, str], safe: frozenset[str]
) -> str:
    # `safe` characters stay (never "%", so escapes cannot be forged); others are escaped.
    if unsafe.search(text) is None:
        return text
    if text.isascii():
        return text.translate(table)
    return "".join(char if char in safe else escape_text(char) for char in text)


def escape_light(text: str) -> str:
    """Escape only what could break a key's structure; keeps developer keys readable."""
    if not _LIGHT_UNSAFE.intersection(text) and text.isascii() and text.isprintable():
        return text
    return "".join(
        char
        if char.isascii() and char.isprintable() and char not in _LIGHT_UNSAFE
        else escape_text(char)
        for char in text
    )


def canonical_query(query: MultiMapping[str]) -> str:
    """The parsed query the handler sees (`request.query`), sorted by name; repeated
    parameters keep their relative order. `?v` and `?v=` are one value to the handler."""
    ordered = sorted(query.items(), key=_NAME_OF)
    return "&".join([escape_text(name) + "=" + escape_text(value) for name, value in ordered])


_NAME_OF: Final = operator.itemgetter(0)


def url_component(url: URL) -> str:
    """`path?canonical-query`, plus `~fragment` when aiohttp parsed one: the part of a
    default key taken from the URL aiohttp hands the handler (`request.rel_url`)."""
    component = escape_path(url.raw_path) + "?"
    if url.raw_query_string:
        component += canonical_query(url.query)
    if url.raw_fragment:
        component += ABSENT + escape_text(url.raw_fragment)
    return component


def host_component(request: KeyedRequest) -> str:
    """The request's host as the handler sees it (`request.host`, verbatim: the handler
    may echo it), prefixed with a scheme other than plain `http`."""
    scheme = request.scheme
    if scheme == "http":
        return escape_host(request.host)
    # `~` never occurs in an escaped value, so this form cannot meet a plain host's.
    return escape_text(scheme) + ABSENT + escape_host(request.host)


def header_component(headers: MultiMapping[str], name: str) -> str:
    """One request header's escaped value; repeated lines are joined, absence is `~`."""
    values = headers.getall(name, None)
    if values is None:
        return ABSENT
    return escape_text(", ".join(values))


def vary_suffix(request: KeyedRequest, names: tuple[str, ...]) -> str:
    """The key part naming the values the entry varies on: request headers, and for
    `host` the scheme and host the handler sees."""
    if not names:
        return ""
    if names == _HOST_ONLY:  # the default key's
        return "#host=" + host_component(request)
    headers = request.headers
    return "#" + "&".join(
        [
            f"{name}={host_component(request) if name == HOST else header_component(headers, name)}"
            for name in names
        ]
    )


_HOST_ONLY: Final = (HOST,)
_HOST_SUFFIX_CHARS: Final = len("#host=")


def bound_length(key: str, max_length: int) -> str:
    """Replace an over-long key by a readable prefix plus the digest of the whole key."""
    if len(key) <= max_length:
        return key
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
    keep = max(0, max_length - len(HASHED_MARKER) - len(digest))
    return key[:keep] + HASHED_MARKER + digest


def compose(base: str, suffix: str, max_length: int) -> str:
    """A full key: the bounded base, then the bounded `#vary` suffix (kept apart so every
    variant of one base shares its prefix, and so its Redis Cluster hash slot)."""
    if len(suffix) > max_length:
        suffix = "#" + hashlib.sha256(suffix.encode("utf-8", "surrogatepass")).hexdigest()
    return bound_length(base, max_length) + suffix


def request_key(base: str, request: KeyedRequest, vary: tuple[str, ...], max_length: int) -> str:
    """A request's full key: its base key plus the values it varies on."""
    if not vary:
        return base if len(base) <= max_length else bound_length(base, max_length)
    if vary is _HOST_ONLY and request.scheme == "http":
        # The default key's common case, `compose(base, vary_suffix(...))` without its calls:
        # a plain-http host that needs no escaping (`escape_host` returns it as it is).
        # compose keeps both parts as they are when each fits the bound on its own.
        host = request.host
        fits = len(base) <= max_length and len(host) + _HOST_SUFFIX_CHARS <= max_length
        if fits and _HOST_UNSAFE.search(host) is None:
            return f"{base}#host={host}"
    return compose(base, vary_suffix(request, vary), max_length)


def path_tag(url: URL) -> str:
    """The implicit tag of every entry stored for a path (RFC 9111 §4.4 invalidation).

    From the decoded path: a purge may reach more spellings of a path, never fewer.
    """
    return "path:" + escape_path(url.path)


def default_key(handler_name: str, url: URL) -> str:
    """`name:path?canonical-query`, the key used when a handler gives none; `url` is the
    request's `rel_url`. The host is not here: it is a Vary value (see `HOST`)."""
    return default_key_prefix(handler_name) + url_component(url)


def default_key_prefix(handler_name: str) -> str:
    """The part of a handler's default keys that names the handler (computed once)."""
    return escape_light(handler_name) + ":"


Getter = Callable[[KeyedRequest], str]


class KeyTemplate:
    """A compiled key template such as `"product:{match_info[id]}"`.

    Fields: `{path}`, `{host}`, `{match_info[NAME]}`, `{query[NAME]}`, `{headers[NAME]}`.
    The template is checked once, at decoration time; rendering is a few lookups.
    """

    __slots__ = ("_match_info_names", "_parts", "template")

    def __init__(self, template: str) -> None:
        self.template = template
        self._parts: list[tuple[str, Getter | None]] = []
        #: The `{match_info[NAME]}` fields' names, in order (for `compiled`).
        self._match_info_names: list[str] = []
        previous_was_field = False
        for literal, field, spec, conversion in string.Formatter().parse(template):
            if previous_was_field and field is not None and _is_ambiguous_separator(literal):
                raise ValueError(
                    f"key template {template!r}: put a separator such as ':' between fields,"
                    f" otherwise different values could produce the same key"
                )
            if field is None:
                self._parts.append((literal, None))
                continue
            if spec or conversion:
                raise ValueError(f"key template {template!r}: no format specs or conversions")
            self._parts.append((literal, _field_getter(template, field)))
            if field.startswith("match_info["):
                self._match_info_names.append(field[len("match_info[") : -1])
            previous_was_field = True

    def render(self, request: KeyedRequest) -> str:
        """The key for this request."""
        return "".join(
            [literal + getter(request) if getter else literal for literal, getter in self._parts]
        )

    def compiled(self) -> Callable[[KeyedRequest], str]:
        """`render` as one closure; a template with a single field costs one getter call."""
        fields = [(literal, getter) for literal, getter in self._parts if getter is not None]
        if len(fields) != 1:
            return self.render
        prefix, getter = fields[0]
        tail = "".join(literal for literal, got in self._parts if got is None)
        if self._parts[-1][1] is not None:
            tail = ""
        if self._match_info_names:  # the one field is `{match_info[NAME]}`: no getter call
            return _match_info_key(prefix, self._match_info_names[0], tail)
        return lambda request: prefix + getter(request) + tail


def _match_info_key(prefix: str, name: str, tail: str) -> Callable[[KeyedRequest], str]:
    absent = prefix + ABSENT + tail

    def key(request: KeyedRequest) -> str:
        value = request.match_info.get(name)
        if value is None:
            return absent
        if value.isascii() and value.isalnum():  # `escape_text` keeps these as they are
            return prefix + value + tail
        return prefix + escape_text(value) + tail

    return key


def _is_ambiguous_separator(literal: str) -> bool:
    # Escaped values consist of letters, digits and "%"; "~" marks an absent value.
    return all(char in _ALNUM or char in "%~" for char in literal)


def _field_getter(template: str, field: str) -> Getter:
    base, bracket, rest = field.partition("[")
    if base not in TEMPLATE_FIELDS or (bracket and not rest.endswith("]")):
        raise ValueError(
            f"key template {template!r}: unknown field {{{field}}}; use one of"
            " {path}, {host}, {match_info[...]}, {query[...]}, {headers[...]}"
        )
    argument = rest[:-1] if bracket else ""
    needs_argument = base in {"match_info", "query", "headers"}
    if needs_argument != bool(argument):
        raise ValueError(f"key template {template!r}: field {{{field}}} is malformed")
    return _GETTER_FACTORIES[base](argument)


def _path_getter(_: str) -> Getter:
    return lambda request: escape_path(request.rel_url.raw_path)


def _host_getter(_: str) -> Getter:
    return lambda request: escape_text(request.host)


def _match_info_getter(name: str) -> Getter:
    def get(request: KeyedRequest) -> str:
        value = request.match_info.get(name)
        return ABSENT if value is None else escape_text(value)

    return get


def _query_getter(name: str) -> Getter:
    def get(request: KeyedRequest) -> str:
        values = request.rel_url.query.getall(name, None)
        return ABSENT if values is None else ",".join([escape_text(value) for value in values])

    return get


def _headers_getter(name: str) -> Getter:
    return lambda request: header_component(request.headers, name)


_GETTER_FACTORIES: Final[Mapping[str, Callable[[str], Getter]]] = {
    "path": _path_getter,
    "host": _host_getter,
    "match_info": _match_info_getter,
    "query": _query_getter,
    "headers": _headers_getter,
}


def normalise_header_names(names: Iterable[str]) -> tuple[str, ...]:
    """Lower-cased, stripped, de-duplicated header names in a stable order."""
    seen: list[str] = []
    for name in names:
        normalised = name.strip().lower()
        if not normalised:
            raise ValueError("empty header name in vary")
        if normalised not in seen:
            seen.append(normalised)
    names_seen = tuple(seen)
    # The default key's names as the one shared tuple `request_key` recognises by identity.
    return _HOST_ONLY if names_seen == _HOST_ONLY else names_seen
