"""The Redis store's lookups: batched per event-loop turn, one batch in flight at a time.

Lookups issued in the same event-loop turn share one MGET (together with the generation
key). At most `MAX_BATCHES_IN_FLIGHT` batches are out at once; lookups arriving meanwhile
wait for one to be answered and then go out together, each still resolving within the
store timeout counted from its own `get`. The batcher is built from:

- `MgetReads`: the round trip (the store's topology): `send_now`, answered from a
  connection's read callback without a task when a lookup connection is open, else `read`
  awaited in a task;
- a `LookupObserver` (the near cache, optional), told about each batch (see its rule 2);
- `drop_damaged`, which deletes an entry that could not be decoded;
- `TagVersions`, which says whether a tagged entry's recorded tag versions are current
  (`tag_versions.py`); entries it cannot vouch for wait for one more round trip
  (`MgetReads.read_versions`) before they are answered.
"""

from __future__ import annotations

import asyncio
from asyncio import Future
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, Final, Protocol

from cachekit.backends.base import Answer, StoreError
from cachekit.backends.tag_versions import (
    CURRENT,
    PURGE_BITS,
    VOID,
    TagVersions,
    parse_ticket,
    recorded_since,
    same_generation,
)
from cachekit.entry import CachedResponse, CorruptEntry
from cachekit.entry_format import decode
from cachekit.purging import as_purges_left

#: Lookup batches (MGETs) in flight at once per store. Lookups that arrive while this many
#: are out wait for the next reply and then go out together: under load a few large
#: batches instead of many of one key each, whose round trip costs as much as a large one.
#: One rather than two since hits got cheaper (bench/README.md, "one lookup batch in
#: flight"). Each lookup still resolves within the store timeout from its own `get`.
MAX_BATCHES_IN_FLIGHT: Final = 1
#: Most keys per MGET: beyond it, waiting lookups go out without waiting for the batches in
#: flight, split into MGETs of at most this many keys (bounded reply size and latency).
MAX_BATCH_KEYS: Final = 512

Waiters = list[asyncio.Future[Answer]]
#: The raw ticket (`ns:gen`) and one raw value per key, as one MGET returns them.
RawValues = tuple[bytes | None, list[bytes | None]]
#: Entries whose tag versions must be fetched before they are answered.
Unsettled = list[tuple[str, CachedResponse, Waiters]]


class SentBatch(Protocol):
    """The connection a batch went out on by `MgetReads.send_now`."""

    def abandon(self) -> None:
        """Give up on it: the batch timed out, or its reply was unusable."""
        ...


class MgetReads(Protocol):
    """How a batch reaches Redis: the generation and the entries of logical keys."""

    def read(self, keys: list[str]) -> Awaitable[RawValues]:
        """One round trip, awaited in a task (it may connect first)."""
        ...

    def read_versions(self, tags: list[str]) -> Awaitable[RawValues]:
        """The raw ticket and the raw version of each tag (None when missing), read so that
        the ticket is not older than the versions."""
        ...

    def send_now(self, keys: list[str], batch: LookupBatch) -> SentBatch | None:
        """Send at once, the reply going to `batch.set_result` (or `set_exception`) from
        the connection's read callback; None when that is not possible right now (no open
        lookup connection), and then `read` is used."""
        ...


class LookupObserver(Protocol):
    """Told about every batch: the near cache, which keeps what Redis returned."""

    def watch(self, keys: Iterable[str]) -> int:
        """`keys` are about to be read; returns the batch's ticket for `offer`."""
        ...

    def offer(self, key: str, result: Answer, ticket: int) -> None:
        """An entry read by the batch with `ticket`."""
        ...

    def unwatch(self, keys: Iterable[str]) -> None:
        """The batch that watched `keys` is over (answered or failed)."""
        ...


class LookupBatcher:
    """Batched lookups of one store (see the module docstring)."""

    def __init__(
        self,
        reads: MgetReads,
        timeout: float,
        drop_damaged: Callable[[str, bytes], Coroutine[Any, Any, None]],
        observer: LookupObserver | None = None,
    ) -> None:
        self._reads = reads
        self._timeout = timeout
        self._drop_damaged = drop_damaged
        self._observer = observer
        #: The tag versions fetched under the current ticket (see `tag_versions.py`).
        self.versions = TagVersions()
        self._pending: dict[str, Waiters] = {}
        self._pending_since = 0.0  # loop time of the oldest pending lookup
        self._flush_scheduled = False
        self._in_flight = 0  # lookup batches sent and not yet answered
        self._tasks: set[asyncio.Task[None]] = set()
        self._drained: asyncio.Future[None] | None = None  # see `close`
        #: Lookup batches (MGETs) sent and the keys they carried, for `Cache.stats()`.
        self.lookup_batches = 0
        self.lookup_keys = 0

    def stats(self) -> dict[str, int]:
        """Batches sent, keys looked up in them, and the lookups waiting right now."""
        return {
            "lookup_batches": self.lookup_batches,
            "lookup_keys": self.lookup_keys,
            "lookups_waiting": sum(len(waiters) for waiters in self._pending.values()),
        }

    @property
    def in_flight(self) -> int:
        """Batches sent and not answered (nor failed) yet."""
        return self._in_flight

    @property
    def tasks(self) -> frozenset[asyncio.Task[None]]:
        """Tasks running now: batches read through `MgetReads.read`, damaged-entry drops."""
        return frozenset(self._tasks)

    def get(self, key: str) -> asyncio.Future[Answer]:
        """The entry under `key` and the generation, from the next batch; resolves within
        the store timeout (or with `StoreError`)."""
        loop = asyncio.get_running_loop()
        # Future(loop=...) rather than loop.create_future(): the same object on asyncio's
        # loop, without a Python method call per lookup.
        waiter: asyncio.Future[Answer] = Future(loop=loop)
        pending = self._pending
        if not pending:
            self._pending_since = loop.time()
            if self._in_flight < MAX_BATCHES_IN_FLIGHT:
                self._flush_scheduled = True
                loop.call_soon(self._flush)
        elif len(pending) >= MAX_BATCH_KEYS and not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        waiters = pending.get(key)
        if waiters is None:
            pending[key] = [waiter]
        else:
            waiters.append(waiter)  # a hot key: one MGET slot for all its lookups
        return waiter

    def _flush(self) -> None:
        """Send the pending lookups as one batch (called once per event-loop turn, or when
        a batch in flight was answered)."""
        self._flush_scheduled = False
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        # Each lookup resolves within the store timeout counted from its `get`, also when
        # it waited here for a batch in flight.
        deadline = self._pending_since + self._timeout
        if len(pending) <= MAX_BATCH_KEYS:
            self._send(pending, deadline)
            return
        items = list(pending.items())
        for start in range(0, len(items), MAX_BATCH_KEYS):
            self._send(dict(items[start : start + MAX_BATCH_KEYS]), deadline)

    def _send(self, pending: dict[str, Waiters], deadline: float) -> None:
        self._in_flight += 1
        self.lookup_batches += 1
        self.lookup_keys += len(pending)
        keys = list(pending)
        observer = self._observer
        # Taken before the MGET is sent, released after its entries were offered: see
        # NearCache, rule 2.
        ticket = observer.watch(keys) if observer is not None else 0
        batch = LookupBatch(self, pending, keys, observer, ticket)
        try:
            batch.sent_on = self._reads.send_now(keys, batch)
        except Exception as exc:  # never leave a lookup (or the in-flight count) hanging
            batch.set_exception(exc)
            return
        if batch.sent_on is not None:
            batch.timer = asyncio.get_running_loop().call_at(deadline, batch.expire)
        else:
            self._spawn(self._lookup(batch, deadline))

    async def _lookup(self, batch: LookupBatch, deadline: float) -> None:
        """A batch's round trip through `MgetReads.read`, in a task."""
        try:
            async with asyncio.timeout_at(deadline):
                generation_raw, values = await self._reads.read(batch.keys)
        except Exception as exc:  # Redis, the timeout, or any surprise: fail open
            batch.set_exception(exc)
            return
        except asyncio.CancelledError:
            if batch.finish():
                batch.fail(StoreError("redis lookup cancelled"))
            raise
        if batch.finish():
            batch.answer(generation_raw, values)

    # ------------------------------------------------------------------ what a LookupBatch calls

    def batch_finished(self) -> None:
        """A batch was answered or failed: the lookups waiting for it may go out."""
        self._in_flight -= 1
        if self._pending and not self._flush_scheduled:
            loop = asyncio.get_running_loop()
            if isinstance(loop, asyncio.BaseEventLoop):
                # asyncio's loops run the callbacks scheduled last turn (handlers about to
                # look up) before this turn's I/O callbacks (this reply): they have run.
                self._flush()
            else:
                # uvloop runs I/O callbacks first: send after the handlers ready to run
                # have looked up too, or they miss this batch (bench/README.md, "on
                # uvloop, the next lookup batch goes out one callback after the reply").
                self._flush_scheduled = True
                loop.call_soon(self._flush)
        drained = self._drained
        if not self._in_flight and drained is not None and not drained.done():
            drained.set_result(None)

    def resolve(
        self, key: str, raw: bytes | None, ticket: int, waiters: Waiters, unsettled: Unsettled
    ) -> Answer | None:
        """Answer the lookups of `key` from its raw value read under `ticket`; returns the
        answer, or None when the value was damaged (those lookups fail with `CorruptEntry`,
        and the value is deleted) or its tag versions must be fetched first (then it is
        added to `unsettled`, for `settle`)."""
        answer: Answer = (None, ticket)
        if raw is not None:
            try:
                entry = decode(raw)
            except CorruptEntry as exc:
                self._spawn(self._drop_damaged(key, raw))
                _fail_all(waiters, exc)
                return None
            # `same_generation`, inlined: this runs for every Redis hit.
            if entry.generation >> PURGE_BITS == ticket >> PURGE_BITS and ticket:
                if not entry.tags:
                    answer = (entry, ticket)
                else:
                    since = self.versions.check(entry, ticket)
                    if since is None:
                        unsettled.append((key, entry, waiters))
                        return None
                    shown = entry if since == CURRENT else as_purges_left(entry, since)
                    answer = (shown, ticket)
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(answer)
        return answer

    def settle(self, unsettled: Unsettled) -> None:
        """Answer these lookups once their tags' current versions are fetched."""
        self._spawn(self._settle(unsettled))

    async def _settle(self, unsettled: Unsettled) -> None:
        tags = list(dict.fromkeys(tag for _, entry, _ in unsettled for tag in entry.tags))
        try:
            async with asyncio.timeout(self._timeout):
                ticket_raw, raw_versions = await self._reads.read_versions(tags)
            ticket = parse_ticket(ticket_raw)
            versions = [_as_text(raw) for raw in raw_versions]
            self.versions.learn(ticket, tags, versions)
        except Exception as exc:  # Redis, the timeout, or any surprise: fail open
            error = StoreError(f"redis lookup of tag versions failed: {exc!r}")
            for _, _, waiters in unsettled:
                _fail_all(waiters, error)
            return
        except asyncio.CancelledError:
            for _, _, waiters in unsettled:
                _fail_all(waiters, StoreError("redis lookup cancelled"))
            raise
        current = dict(zip(tags, versions, strict=True))
        for _, entry, waiters in unsettled:
            since = recorded_since(entry, current) if same_generation(entry, ticket) else VOID
            answer: Answer = (as_purges_left(entry, since), ticket)
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(answer)

    # ------------------------------------------------------------------ closing

    async def close(self) -> None:
        """Wait at most the store timeout for the batches in flight, then for the tasks."""
        if self._in_flight:
            drained = self._drained = asyncio.get_running_loop().create_future()
            await asyncio.wait([drained], timeout=self._timeout)
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=self._timeout)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


class LookupBatch:
    """One MGET's lookups, answered or failed exactly once.

    Sent by `MgetReads.send_now`, the batch is its own reply waiter: it has the three
    methods of a future that the lookup channel calls from its read callback, so the
    lookups resolve without a task or a future per batch, and a timer (`expire`) bounds the
    wait. Read through `MgetReads.read` in a task instead, that task calls `finish` and
    `answer` or `fail`. It talks to its batcher through `batch_finished` and `resolve`.
    """

    __slots__ = (
        "_batcher",
        "_done",
        "_observer",
        "_pending",
        "_ticket",
        "keys",
        "sent_on",
        "timer",
    )

    def __init__(
        self,
        batcher: LookupBatcher,
        pending: dict[str, Waiters],
        keys: list[str],
        observer: LookupObserver | None,
        ticket: int,
    ) -> None:
        self.keys = keys
        self.sent_on: SentBatch | None = None
        self.timer: asyncio.TimerHandle | None = None
        self._batcher = batcher
        self._pending = pending
        self._observer = observer  # watched with `ticket` until the batch is over
        self._ticket = ticket
        self._done = False

    def done(self) -> bool:
        """Answered or failed already (the reply waiter's interface)."""
        return self._done

    def set_result(self, reply: Any, /) -> None:
        """The MGET's reply: the generation, then one value per key."""
        if isinstance(reply, list) and len(reply) == len(self.keys) + 1:
            if self.finish():
                self.answer(reply[0], reply[1:])
        elif self.finish(abandon=True):
            self.fail(StoreError(f"redis lookup failed: unexpected reply to MGET {reply!r:.80}"))

    def set_exception(self, exception: BaseException, /) -> None:
        """The connection failed, or Redis answered with an error."""
        if self.finish():
            self.fail(StoreError(f"redis lookup failed: {exception!r}"))

    def expire(self) -> None:
        """The store timeout passed without a reply: the connection is given up too."""
        if self.finish(abandon=True):
            self.fail(StoreError(f"redis lookup failed: {TimeoutError()!r}"))

    def finish(self, *, abandon: bool = False) -> bool:
        """Mark the batch done (False if it already was) and let the next one go out;
        with `abandon`, first give up its connection, so the next one does not use it."""
        if self._done:
            return False
        self._done = True
        if self.timer is not None:
            self.timer.cancel()
        if abandon and self.sent_on is not None:
            self.sent_on.abandon()
        self._batcher.batch_finished()
        return True

    def answer(self, generation_raw: bytes | None, values: list[bytes | None]) -> None:
        """Resolve every lookup from the MGET's values (after `finish`)."""
        resolve = self._batcher.resolve
        pending = self._pending
        observer = self._observer
        ticket = self._ticket
        unsettled: Unsettled = []
        try:
            generation = parse_ticket(generation_raw)
            for key, raw in zip(self.keys, values, strict=True):
                answer = resolve(key, raw, generation, pending[key], unsettled)
                if observer is not None and answer is not None and answer[0] is not None:
                    observer.offer(key, answer, ticket)
        except Exception as exc:  # never leave a lookup waiting (nor break the connection)
            self.fail(StoreError(f"redis lookup failed: {exc!r}"))
        if unsettled:
            # Not offered to the near cache: the next lookup of these keys, under known
            # versions, offers them.
            self._batcher.settle(unsettled)
        self._unwatch()

    def fail(self, error: BaseException) -> None:
        """Fail every lookup not answered yet with `error` (after `finish`)."""
        for waiters in self._pending.values():
            _fail_all(waiters, error)
        self._unwatch()

    def _unwatch(self) -> None:
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.unwatch(self.keys)


def _fail_all(waiters: Iterable[asyncio.Future[Any]], error: BaseException) -> None:
    for waiter in waiters:
        if not waiter.done():
            waiter.set_exception(error)


def _as_text(raw: bytes | None) -> str | None:
    try:
        return raw.decode() if raw is not None else None
    except UnicodeDecodeError:
        return None
