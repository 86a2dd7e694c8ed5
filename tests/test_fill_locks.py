"""`FillLocks` and `FillLock`: taking, releasing and asking about cross-process fill locks
through the guard, on the embedded store, fakeredis and a real Redis; stuck locks bounded."""

from __future__ import annotations

from typing import Any

import pytest

from cachekit.backends.base import StoreError
from cachekit.cache import Cache
from cachekit.fill_locks import FillLock
from tests.apps import settings, store_for


async def test_in_process_the_lock_is_always_ours(store_kind: str, request: Any) -> None:
    cache = Cache(settings(lock_ttl=5), store=store_for(request, store_kind))
    try:
        first, second = FillLock(cache.locks, "k"), FillLock(cache.locks, "k")
        assert await first.take() is True and first.held
        if cache.store.remote:
            assert await second.take() is False and not second.held
            assert await cache.locks.held("k") is True
            await second.release()  # not ours: nothing happens
            assert await cache.locks.held("k") is True
        await first.release()
        assert not first.held
        if cache.store.remote:
            assert await cache.locks.held("k") is False
            assert await second.take() is True
            await second.release()
    finally:
        await cache.close()


async def test_a_store_that_cannot_say_gives_none(monkeypatch: pytest.MonkeyPatch) -> None:
    cache = Cache(settings(), store=store_for(None, "fakeredis"))

    async def broken(*args: Any) -> bool:
        raise StoreError("down")

    monkeypatch.setattr(cache.store, "acquire_lock", broken)
    monkeypatch.setattr(cache.store, "lock_held", broken)
    lock = FillLock(cache.locks, "k")
    assert await lock.take() is None and not lock.held
    assert await cache.locks.held("k") is None
    assert cache.store_errors() == {"lock": 2}
    await cache.close()


async def test_stuck_locks_are_remembered_until_their_ttl_and_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cache = Cache(settings(lock_ttl=5, lock_timeout=1))
    cache.locks.remember_stuck("k")
    assert cache.locks.is_stuck("k")
    cache.locks.forget_stuck("k")
    assert not cache.locks.is_stuck("k")
    monkeypatch.setattr("cachekit.fill_locks.STUCK_LOCKS_KEPT", 10)
    for n in range(50):
        cache.locks.remember_stuck(f"k{n}")
    assert cache.locks.stuck_count() <= 10
