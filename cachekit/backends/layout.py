"""Redis key names of one namespace, their inverse, and the SCAN patterns of each kind.

For namespace `ns` and logical key `k` = base `b` + optional `#variant`:
    ns:gen          the ticket `G:P`: a new random G on clear() (O(1)), a new P on every
                    purge (tag_versions.py)
    ns:e:{b}#v      an encoded entry, expiring when its last stale window ends
    ns:l:{b}#v      the fill lock of that entry
    ns:v:{b}        the set of variant suffixes stored for base b (Vary), capped
    ns:t:{=TAG}     the sorted set of logical keys stored under TAG, scored by expiry (ms)
    ns:tv:{=TAG}    TAG's version (a random token), recorded by entries, replaced by purges
    ns:stats        counters (hits, misses, ...) published by every process, for the CLI
    ns:kh           the names of the handlers whose stored keys are counted (key_census.py)
    ns:k:{:H}:w:N   HyperLogLog of the keys handler H stored in time window N
    ns:k:{:H}:old   HyperLogLog of H's keys of the windows before the recent ones
    ns:k:{:H}:p     the set of H's key parts counted (`q:NAME` query, `h:NAME` Vary header)
    ns:k:{:H}:p:P   HyperLogLog of the values of H's key part P
    ns:w:{~workers}     the sorted set of app processes (workers) reporting their figures,
                        scored by their last report (Redis's clock, ms)
    ns:w:{~workers}:ID  worker ID's latest figures (JSON), expiring unless renewed
Everything about one base key shares the hash tag `{b}`, hence one Redis Cluster slot; a
tag's index and version share `{=TAG}` (the `=` keeps the hash tag non-empty); a handler's
key counts share `{:H}` (H escaped: no braces), so they are merged and counted together;
the workers' keys share `{~workers}`, so one script writes a report and its index entry,
one MGET reads every report.
"""

from __future__ import annotations

from collections.abc import Iterable

from cachekit.keys import escape_light


class KeyLayout:
    """The Redis keys of namespace `namespace`; a logical key is `base` or `base#variant`."""

    def __init__(self, namespace: str) -> None:
        self._namespace = namespace
        self._gen_key = f"{namespace}:gen"
        self._entry_prefix = f"{namespace}:e:"
        self._entry_opening = f"{namespace}:e:{{"  # of an entry key without variant

    @property
    def namespace(self) -> str:
        """The prefix of every key of this store."""
        return self._namespace

    def entry_key(self, key: str) -> str:
        """The Redis key holding the entry of logical key `key`."""
        return self._slotted("e", key)

    def entry_keys(self, keys: Iterable[str]) -> list[str]:
        """`entry_key` of each of `keys`: a lookup batch's, without a call per key."""
        opening = self._entry_opening
        return [opening + key + "}" if "#" not in key else self._slotted("e", key) for key in keys]

    def lock_key(self, key: str) -> str:
        """The Redis key holding the fill lock of logical key `key`."""
        return self._slotted("l", key)

    def variants_key(self, base: str) -> str:
        """The Redis key of the set of variant suffixes stored for base key `base`."""
        return f"{self._namespace}:v:{{{base}}}"

    def tag_key(self, tag: str) -> str:
        """The Redis key of the sorted set indexing the entries stored under `tag`."""
        return f"{self._namespace}:t:{{={tag}}}"

    def version_key(self, tag: str) -> str:
        """The Redis key of `tag`'s version (same slot as its index)."""
        return f"{self._namespace}:tv:{{={tag}}}"

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

    @property
    def counted_handlers_key(self) -> str:
        """The Redis set of handler names whose stored keys are counted."""
        return f"{self._namespace}:kh"

    def key_window_key(self, handler: str, window: int) -> str:
        """The HyperLogLog of the keys `handler` stored in time window `window`."""
        return f"{self._counts(handler)}:w:{window}"

    def key_history_key(self, handler: str) -> str:
        """The HyperLogLog of `handler`'s keys stored before its recent windows."""
        return f"{self._counts(handler)}:old"

    def key_parts_key(self, handler: str) -> str:
        """The set of `handler`'s key parts whose values are counted."""
        return f"{self._counts(handler)}:p"

    def key_part_key(self, handler: str, part: str) -> str:
        """The HyperLogLog of the values of `handler`'s key part `part`."""
        return f"{self._counts(handler)}:p:{part}"

    def _counts(self, handler: str) -> str:
        return f"{self._namespace}:k:{{:{escape_light(handler)}}}"

    @property
    def workers_key(self) -> str:
        """The Redis sorted set of the workers reporting their figures (worker ids)."""
        return f"{self._namespace}:w:{{~workers}}"

    def worker_key(self, worker: str) -> str:
        """The Redis key of worker `worker`'s latest figures (same slot as the index)."""
        return f"{self._namespace}:w:{{~workers}}:{worker}"

    # The namespace admits no SCAN wildcard characters (settings.NAMESPACE_PATTERN), so
    # these patterns match exactly the keys of their kind.

    @property
    def entries_pattern(self) -> str:
        """The SCAN pattern matching every entry key of the namespace."""
        return f"{self._entry_prefix}*"

    @property
    def tags_pattern(self) -> str:
        """The SCAN pattern matching every tag index of the namespace."""
        return f"{self._namespace}:t:*"

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
