"""A store for engine tests without sockets: it keeps what it is given in memory
and records every call, in order, so a test can say what the engine asked of it.

``durable=True`` makes the engine treat it as a durable store (queued jobs are
kept at a stop, a ``retry_on_restart`` job is left to recovery); ``recovery``
is what ``open`` hands the engine, as a store reopened after a stop would.
Each job's lines count as stored at once (after each ``changed``), so a
watcher of a durable job is sent them in the same loop turn.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from jobmonitor.store.base import Recordable, Recovery, Store
from jobmonitor.wire.records import JobRecord


class FakeStore(Store):
    """An in-memory ``Store`` that records its calls (``calls``)."""

    def __init__(self, *, durable: bool = False, recovery: Recovery | None = None) -> None:
        self.durable = durable
        self.recovery = recovery if recovery is not None else Recovery()
        #: ``(method, transaction ID or argument)`` per call, in order.
        self.calls: list[tuple[str, object]] = []
        #: The last record each job handed over (a copy).
        self.records: dict[str, JobRecord] = {}
        self.closed = False

    def called(self, method: str) -> list[object]:
        """The arguments of every call of ``method``, in order."""
        return [argument for name, argument in self.calls if name == method]

    async def open(self) -> Recovery:
        self.calls.append(("open", None))
        return self.recovery

    async def close(self, *, keep_lock: bool = False) -> None:
        self.calls.append(("close", keep_lock))
        self.closed = True

    def release_lock(self) -> None:
        self.calls.append(("release_lock", None))

    async def add(self, job: Recordable) -> None:
        self.calls.append(("add", job.transaction_id))
        self._keep(job)

    def changed(self, job: Recordable, urgent: bool = False) -> None:
        self.calls.append(("changed", job.transaction_id))
        self._keep(job)

    async def flush(self) -> None:
        self.calls.append(("flush", None))

    def call_when_stored(self, callback: Callable[[], None]) -> None:
        asyncio.get_running_loop().call_soon(callback)

    async def load(self, transaction_id: str) -> JobRecord | None:
        return self.records.get(transaction_id)

    async def find_token(self, identity: str, job_token: str) -> str | None:
        return next((record.transaction_id for record in self.records.values()
                     if (record.identity, record.job_token) == (identity, job_token)), None)

    async def read_lines(self, transaction_id: str, from_line: int, limit: int) -> list[bytes]:
        return []

    async def list_records(self, identity: str | None) -> Sequence[JobRecord]:
        return [record for record in self.records.values()
                if identity is None or record.identity == identity]

    async def delete(self, transaction_id: str) -> None:
        self.calls.append(("delete", transaction_id))
        self.records.pop(transaction_id, None)

    async def purge(self, finished_before: float) -> int:
        self.calls.append(("purge", finished_before))
        return 0

    async def check(self) -> list[str]:
        return []

    def _keep(self, job: Recordable) -> None:
        record = job.record.copy()
        record.history = list(record.history)
        self.records[job.transaction_id] = record
        if self.durable and self.on_persisted is not None:
            # Stored at once: the engine hears of it as after a commit.
            stream = job.stream
            count = len(stream)
            asyncio.get_running_loop().call_soon(self.on_persisted, job, count)
