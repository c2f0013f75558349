"""The memory store: jobs live only in the engine's tables, for one process.

Every method of ``Store`` is spelled out, each saying why it does nothing here:
the engine keeps every job this store could be asked about, and asks the
store only for what it no longer has.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from ..wire.records import JobRecord
from .base import Recordable, Recovery, Store

__all__ = ["MemoryStore"]


class MemoryStore(Store):
    """Keeps nothing: jobs live only in the engine's tables, for one process."""

    durable = False

    async def open(self) -> Recovery:
        """Nothing was kept before this process: no job to recover."""
        return Recovery()

    async def close(self, *, keep_lock: bool = False) -> None:
        """Nothing to write and no file to let go."""

    def release_lock(self) -> None:
        """No lock: any number of servers may each keep their own jobs."""

    async def add(self, job: Recordable) -> None:
        """Never called (the store is not durable): the engine holds the job."""

    def changed(self, job: Recordable, urgent: bool = False) -> None:
        """Never called (the store is not durable): nothing to write."""

    async def flush(self) -> None:
        """Nothing is ever waiting to be written."""

    def call_when_stored(self, callback: Callable[[], None]) -> None:
        """Nothing is ever waiting to be written: at the end of this loop turn."""
        asyncio.get_running_loop().call_soon(callback)

    async def load(self, transaction_id: str) -> JobRecord | None:
        """A job the engine does not hold is gone: None."""
        return None

    async def find_token(self, identity: str, job_token: str) -> str | None:
        """The engine knows the client keys of every job it holds: None."""
        return None

    async def read_lines(self, transaction_id: str, from_line: int, limit: int) -> list[bytes]:
        """A job's lines are all in memory while the engine holds it: none here."""
        return []

    async def list_records(self, identity: str | None, after: int,
                           limit: int) -> Sequence[JobRecord]:
        """The engine lists the jobs it holds; there are no others."""
        return []

    async def delete(self, transaction_id: str) -> None:
        """Only the engine holds the job; it forgets it itself."""

    async def purge(self, finished_before: float) -> int:
        """The engine forgets expired jobs itself; none are kept here to delete."""
        return 0

    async def check(self) -> list[str]:
        """Nothing is stored, so nothing can be damaged."""
        return []
