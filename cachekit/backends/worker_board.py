"""Each app process's figures in Redis (`SharedWorkers` for the Redis stores): one report
per worker, expiring unless renewed, and an index of the workers scored by Redis's clock.

Keys from `KeyLayout.workers_key` and `worker_key`, in one Cluster slot: one script writes
a report with its index entry (`scripts.REPORT_WORKER`), one MGET reads every report.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from cachekit.backends import scripts
from cachekit.backends.base import WorkerReport
from cachekit.backends.layout import KeyLayout


class WorkerBoard:
    """The workers' reports of one namespace; `run` is the topology's (errors become
    `StoreError`)."""

    def __init__(
        self, client: Any, layout: KeyLayout, run: Callable[[Awaitable[Any]], Awaitable[Any]]
    ) -> None:
        self._client = client
        self._layout = layout
        self._run = run
        self._report = client.register_script(scripts.REPORT_WORKER)

    async def publish(self, worker: str, report: bytes, keep: float, most: int) -> None:
        """See `SharedWorkers.publish_worker`."""
        layout = self._layout
        keys = [layout.workers_key, layout.worker_key(worker)]
        await self._run(self._report(keys=keys, args=[worker, report, _ms(keep), most]))

    async def withdraw(self, worker: str) -> None:
        """See `SharedWorkers.withdraw_worker`."""
        layout = self._layout
        await self._run(self._client.zrem(layout.workers_key, worker))
        await self._run(self._client.delete(layout.worker_key(worker)))

    async def reports(self, most: int) -> list[WorkerReport]:
        """See `SharedWorkers.worker_reports`: a report that expired since its worker was
        indexed is left out."""
        layout = self._layout
        indexed = await self._run(
            self._client.zrevrange(layout.workers_key, 0, most - 1, withscores=True)
        )
        if not indexed:
            return []
        workers = [_text(member) for member, _ in indexed]
        data = await self._run(self._client.mget([layout.worker_key(w) for w in workers]))
        return [
            WorkerReport(worker, float(score) / 1000, value)
            for worker, (_, score), value in zip(workers, indexed, data, strict=True)
            if value is not None
        ]


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _text(member: Any) -> str:
    return member.decode("utf-8", "replace") if isinstance(member, bytes) else str(member)
