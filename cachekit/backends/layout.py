"""Redis key names of one namespace (the layout documented in `redis.py`) and their inverse."""

from __future__ import annotations


class KeyLayout:
    """The Redis keys of namespace `namespace`; a logical key is `base` or `base#variant`."""

    def __init__(self, namespace: str) -> None:
        self._namespace = namespace
        self._gen_key = f"{namespace}:gen"
        self._entry_prefix = f"{namespace}:e:"

    @property
    def namespace(self) -> str:
        """The prefix of every key of this store."""
        return self._namespace

    def entry_key(self, key: str) -> str:
        """The Redis key holding the entry of logical key `key`."""
        return self._slotted("e", key)

    def lock_key(self, key: str) -> str:
        """The Redis key holding the fill lock of logical key `key`."""
        return self._slotted("l", key)

    def pending_key(self, key: str) -> str:
        """The Redis key where a cluster fill parks the entry of `key` until it is checked."""
        return self._slotted("p", key)

    def variants_key(self, base: str) -> str:
        """The Redis key of the set of variant suffixes stored for base key `base`."""
        return f"{self._namespace}:v:{{{base}}}"

    def tag_key(self, tag: str) -> str:
        """The Redis key of the sorted set indexing the entries stored under `tag`."""
        return f"{self._namespace}:t:{{={tag}}}"

    def purge_marker_key(self, tag: str) -> str:
        """The Redis key recording when `tag` was last purged (same slot as its index)."""
        return f"{self._namespace}:tp:{{={tag}}}"

    @property
    def generation_key(self) -> str:
        """The Redis key of the namespace generation."""
        return self._gen_key

    @property
    def entry_prefix(self) -> str:
        """The prefix shared by every entry key (and no other key) of the namespace."""
        return self._entry_prefix

    @property
    def stats_key(self) -> str:
        """The Redis hash of counters published by the app processes."""
        return f"{self._namespace}:stats"

    def _slotted(self, kind: str, key: str) -> str:
        base, mark, variant = key.partition("#")
        return f"{self._namespace}:{kind}:{{{base}}}{mark}{variant}"

    def key_of_entry(self, entry_key: str) -> str | None:
        """The logical key whose entry is stored under `entry_key` (`ns:e:{b}#v` gives
        `b#v`); None for any other key."""
        if not entry_key.startswith(self._entry_prefix):
            return None
        slotted = entry_key[len(self._entry_prefix) :]
        # A base never contains '#' (`_slotted` splits at the first one), so the first '#'
        # ends the hash tag; a '}' inside the base is fine.
        head, mark, variant = slotted.partition("#")
        if len(head) < 2 or head[0] != "{" or head[-1] != "}":
            return None
        return head[1:-1] + mark + variant
