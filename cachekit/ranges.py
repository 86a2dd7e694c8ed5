"""Byte ranges from stored responses (RFC 9110 §14): which part of a stored body a `Range`
request gets, judged with `If-Range`. Pure: the answers are built in `responses`.

Only a single range is cut out; several ranges get the full 200, which RFC 9110 §14.2
allows (a server may ignore Range), as does any header cachekit cannot read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from cachekit.directives import header_values
from cachekit.http_dates import parse_http_date

_DIGITS: Final = frozenset("0123456789")


@dataclass(frozen=True, slots=True)
class ByteRange:
    """Bytes `first`..`last` (inclusive) of a representation `length` bytes long."""

    first: int
    last: int
    length: int

    @property
    def content_range(self) -> str:
        """The `Content-Range` value of the 206."""
        return f"bytes {self.first}-{self.last}/{self.length}"


@dataclass(frozen=True, slots=True)
class Unsatisfiable:
    """No range of the request overlaps the representation: a 416."""

    length: int

    @property
    def content_range(self) -> str:
        """The `Content-Range` value of the 416 (RFC 9110 §15.5.17)."""
        return f"bytes */{self.length}"


#: The answer to a Range request: a part, a 416, or None for the full 200.
RangeAnswer = ByteRange | Unsatisfiable | None


def _position(text: str) -> int | None:
    text = text.strip(" \t")
    if not text or not _DIGITS.issuperset(text) or len(text) > 19:
        return None
    return int(text)


def select_range(value: str, length: int) -> RangeAnswer:
    """The part of a `length`-byte body that `Range: value` asks for (RFC 9110 §14.1.2).

    Syntax errors, other units and several ranges: None (the full 200). A body of no bytes
    is always sent whole.
    """
    unit, equals, specs = value.partition("=")
    if not equals or unit.strip(" \t").lower() != "bytes" or length == 0:
        return None
    parts = [part for part in specs.split(",") if part.strip(" \t")]
    if len(parts) != 1:
        return None  # none (invalid), or several: the full representation
    first_text, dash, last_text = parts[0].partition("-")
    if not dash:
        return None
    if not first_text.strip(" \t"):  # suffix: the last N bytes
        suffix = _position(last_text)
        if suffix is None:
            return None
        if suffix == 0:
            return Unsatisfiable(length)
        return ByteRange(max(0, length - suffix), length - 1, length)
    first = _position(first_text)
    if first is None:
        return None
    last = length - 1
    if last_text.strip(" \t"):
        asked = _position(last_text)
        if asked is None or asked < first:
            return None  # invalid: ignored (RFC 9110 §14.1.1)
        last = min(asked, last)
    if first >= length:
        return Unsatisfiable(length)
    return ByteRange(first, last, length)


def if_range_holds(if_range: str | None, etag: str, lines: tuple[tuple[str, str], ...]) -> bool:
    """Whether `If-Range` lets the range apply (RFC 9110 §13.1.5): absent; an entity-tag
    equal by strong comparison to the stored one (weak tags never match); or an HTTP date
    equal to the stored `Last-Modified`."""
    if if_range is None:
        return True
    if_range = if_range.strip(" \t")
    if if_range.startswith('"'):
        return bool(etag) and not etag.startswith("W/") and if_range == etag
    if if_range.startswith("W/"):
        return False
    since = parse_http_date(if_range)
    modified = header_values(lines, "Last-Modified")
    return since is not None and len(modified) == 1 and parse_http_date(modified[0]) == since
