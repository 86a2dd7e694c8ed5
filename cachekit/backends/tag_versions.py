"""Tag versions and the namespace ticket: how a purge holds whatever Redis evicts.

Every tag has a version key `ns:tv:{=TAG}` holding a random token. A fill records in its
entry the version of each of its tags (creating the ones missing); a purge of TAG replaces
its token. A lookup serves an entry only while every version it recorded is still current,
so an entry of a purged tag is a miss even where Redis evicted the tag's index (the index
only lets a purge free memory at once); an evicted version key makes its entries misses
too (a false miss, never a wrong hit).

The ticket. `ns:gen` holds `G:P`: G changes on `clear()` (an entry is valid only under the
G it was stored under) and P on every purge, both random, never counted up, so a key that
Redis evicted and a fill re-created can never bring an old value back. Every lookup batch
reads the ticket with its entries, which lets a process keep the versions it fetched
(`TagVersions`) for as long as the ticket is unchanged, and lets a fill be stored only if
the ticket its lookup returned is still current once its tag versions are read: a fill that
raced a purge is never stored, and the first fill after a purge is. No clocks are involved.

Soft purges. A version is `H` (after a hard purge or when created) or `H~MS~S`: a soft purge
keeps the hard part H and writes its wall-clock time MS (in ms) and a new random S. An entry
records the whole version; one that recorded another version with the same H is served as
stale from MS on (`purging.soft_purged`), so entries stay stale-servable across several soft
purges in a row; a hard purge replaces H, and every entry of the tag is a miss.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping, Sequence
from typing import Final

from cachekit.entry import CachedResponse, strings_size
from cachekit.memo import BoundedMemo

#: Bits of the ticket's purge part P (the generation G sits above them).
PURGE_BITS: Final = 32
#: Budget of the versions a process keeps between purges (README, "Memory budget").
VERSIONS_MAX_BYTES: Final = 1 << 20


def parse_ticket(raw: bytes | None) -> int:
    """The ticket `G:P` read from `ns:gen` as one int (G above `PURGE_BITS`); 0 when the key
    is missing or damaged, a ticket under which no entry is valid. A bare `G` (written by
    earlier versions) has P = 0."""
    if raw is None:
        return 0
    generation, _, purges = raw.partition(b":")
    try:
        value = int(generation) << PURGE_BITS | (int(purges) if purges else 0)
    except ValueError:
        return 0
    return value if value >> PURGE_BITS and 0 <= value < 1 << 63 else 0


def ticket_text(ticket: int) -> str:
    """`G:P`, as `ns:gen` holds it."""
    return f"{ticket >> PURGE_BITS}:{ticket & ((1 << PURGE_BITS) - 1)}"


def same_generation(entry: CachedResponse, ticket: int) -> bool:
    """Whether `entry` was stored under the generation of `ticket` (no clear since)."""
    generation = ticket >> PURGE_BITS
    return bool(generation) and entry.generation >> PURGE_BITS == generation


def new_generation() -> str:
    """A random G (never 0)."""
    return str(secrets.randbelow((1 << 30) - 1) + 1)


def new_purge() -> str:
    """A random P."""
    return str(secrets.randbits(PURGE_BITS))


def fresh_ticket() -> str:
    """A new ticket `G:P`, for a ticket key that is missing."""
    return f"{new_generation()}:{new_purge()}"


def new_version() -> str:
    """A random tag version token."""
    return secrets.token_hex(8)


#: `version_state` of a version that is current, and of one a hard purge replaced.
CURRENT: Final = math.inf
VOID: Final = -math.inf


def version_state(recorded: str, current: str | None) -> float:
    """`CURRENT` when `recorded` is the `current` version, the time (seconds) of the latest
    soft purge when only soft purges replaced it, or `VOID` (a hard purge, missing, damaged)."""
    if current == recorded:
        return CURRENT
    if current is None:
        return VOID
    hard, _, soft = current.partition("~")
    at = soft.partition("~")[0]
    if not at.isdigit() or recorded.partition("~")[0] != hard:
        return VOID
    return int(at) / 1000


def recorded_since(entry: CachedResponse, current: Mapping[str, str | None]) -> float:
    """The earliest `version_state` of the versions `entry` recorded (`VOID` for an entry
    that recorded none although tagged)."""
    versions = entry.tag_versions
    if len(versions) != len(entry.tags):
        return VOID
    return min(
        (
            version_state(version, current.get(tag))
            for tag, version in zip(entry.tags, versions, strict=True)
        ),
        default=CURRENT,
    )


def recorded_current(entry: CachedResponse, current: Mapping[str, str | None]) -> bool:
    """Whether every version `entry` recorded is current (neither purge since)."""
    return recorded_since(entry, current) == CURRENT


class TagVersions:
    """The tag versions this process fetched, valid while the ticket is unchanged.

    `check` is the hit path's question: `CURRENT` when every version the entry recorded is
    the one kept here under the batch's ticket (no purge anywhere since they were read), the
    time of the earliest soft purge of one of them, `VOID` for an entry that cannot be
    checked; None when a version is not kept, or differs otherwise (a purge or an evicted
    and re-created key: fetch it and decide with `recorded_since`). Bounded in bytes
    (`VERSIONS_MAX_BYTES`).
    """

    __slots__ = ("_memo", "_ticket")

    def __init__(self, max_bytes: int = VERSIONS_MAX_BYTES) -> None:
        self._memo: BoundedMemo[str, str] = BoundedMemo("tag versions", max_bytes)
        self._ticket = 0

    def check(self, entry: CachedResponse, ticket: int) -> float | None:
        """See the class docstring: `CURRENT`, `VOID`, a soft purge's time, or None."""
        if ticket != self._ticket:
            self._memo.clear()
            self._ticket = ticket
            return None
        versions, tags = entry.tag_versions, entry.tags
        if len(versions) != len(tags):
            return VOID  # written without versions: it cannot be checked
        get = self._memo.get
        if len(tags) == 1 and get(tags[0]) == versions[0]:
            return CURRENT  # the loop's answer for one tag whose version is kept (the usual hit)
        since = CURRENT
        for tag, version in zip(tags, versions, strict=True):
            current = get(tag)
            if current != version:
                state = version_state(version, current)
                if state == VOID:
                    return None  # not kept, or replaced: fetch it to be sure
                since = min(since, state)
        return since

    def learn(self, ticket: int, tags: Sequence[str], versions: Sequence[str | None]) -> None:
        """Keep versions fetched under `ticket` (read in one round trip with it)."""
        if ticket != self._ticket:
            self._memo.clear()
            self._ticket = ticket
        for tag, version in zip(tags, versions, strict=True):
            if version is not None:
                self._memo.put(tag, version, strings_size((tag, version)))

    def __len__(self) -> int:
        return len(self._memo)
