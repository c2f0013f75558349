"""Where jobs are kept: the store interface, the in-memory store, and store URLs.

The engine owns the live jobs; a store makes them outlive the process.  A store
deals in ``JobRecord``s and encoded lines, never in running jobs: what it needs
of a live job is the ``Recordable`` view (its record and the stream's lines).

``add`` returns only once the job is durable (a submit is acknowledged after
it); ``changed`` only marks a job, and the store writes what changed in its
own time (the SQLite store: in group commits at most ``commit_interval_s``
apart).  The memory store keeps nothing beyond the engine's own tables.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Protocol

from .errors import ConfigError
from .records import HistoryEvent, JobRecord

__all__ = ["Store", "MemoryStore", "Recordable", "Recovery", "TaskEvent", "open_store"]


class _Lines(Protocol):
    lines: list[bytes]
    base: int
    flushed: int  # lines up to here have been announced (``changed``); the rest will be

    def __len__(self) -> int: ...


class Recordable(Protocol):
    """What a store reads from a live job."""

    @property
    def transaction_id(self) -> str: ...

    @property
    def stream(self) -> _Lines: ...

    #: The live record: read on the loop and copied from at once, never kept.
    #: Its ``status_message`` is the last flushed line's; ``line_count`` is not kept.
    record: JobRecord


class TaskEvent(NamedTuple):
    """One entry of the server-wide task log."""

    transaction_id: str
    project: str
    event: HistoryEvent


@dataclass(slots=True)
class Recovery:
    """What a store hands the engine when it opens."""

    last_number: int = 0
    unfinished: list[JobRecord] = field(default_factory=list)
    recent_events: list[TaskEvent] = field(default_factory=list)


class Store(abc.ABC):
    """Persistence for jobs, their lines, history and outputs."""

    #: True when jobs survive a restart (queued jobs are kept at shutdown).
    durable: bool = False
    #: Called on the loop after a commit, with the jobs whose lines it stored and
    #: how many of their lines are now stored.
    on_persisted: Callable[[Recordable, int], None] | None = None

    @abc.abstractmethod
    async def open(self) -> Recovery:
        """Open (creating if needed) and say what was there."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Write everything pending and close."""

    @abc.abstractmethod
    async def add(self, job: Recordable) -> None:
        """Record a new job and its lines so far; return once durable.  Called only
        on a durable store."""

    @abc.abstractmethod
    def changed(self, job: Recordable, urgent: bool = False) -> None:
        """The job's record or lines changed; write them soon (``urgent``: someone
        is waiting on them, start a commit now).  Called only on a durable store."""

    async def flush(self) -> None:
        """Return once everything changed so far is written."""

    def call_when_stored(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` on the loop once what has changed so far is stored
        (right after the commit that takes it), or at the end of this loop turn
        when nothing waits."""
        asyncio.get_running_loop().call_soon(callback)

    async def load(self, transaction_id: str) -> JobRecord | None:
        """A stored job's record, or None."""
        return None

    async def find_token(self, identity: str, job_token: str) -> str | None:
        """The transaction ID of the job with this client key, or None."""
        return None

    async def read_lines(self, transaction_id: str, from_line: int, limit: int) -> list[bytes]:
        """Up to ``limit`` stored lines from line number ``from_line`` on."""
        return []

    async def list_records(self, identity: str | None, after: int,
                           limit: int) -> Sequence[JobRecord]:
        """A page of stored jobs: up to ``limit`` of those numbered above ``after``
        (optionally one submitter's), in number order, with their outputs but
        without their history (a listing shows none).  A store that keeps jobs
        reads them page by page, never all at once."""
        return []

    async def delete(self, transaction_id: str) -> None:
        """Remove a job, its lines, history and outputs."""

    async def purge(self, finished_before: float) -> int:
        """Delete jobs that finished before this time; return how many."""
        return 0


class MemoryStore(Store):
    """Keeps nothing: jobs live only in the engine's tables, for one process."""

    durable = False

    async def open(self) -> Recovery:
        return Recovery()

    async def close(self) -> None:
        return None

    async def add(self, job: Recordable) -> None:
        return None

    def changed(self, job: Recordable, urgent: bool = False) -> None:
        return None


def open_store(url: str, *, data_dir: str = ".", commit_interval_s: float = 0.05,
               synchronous: str = "full") -> Store:
    """Make the store a URL names.

    ``memory://``; ``sqlite:///relative/path.db`` (relative to the working
    directory); ``sqlite:////absolute/path.db``; ``sqlite://`` alone means
    ``jobmonitor.db`` in ``data_dir``.

    Raises:
        ConfigError: the URL names no known store.
    """
    if url in ("memory://", "memory"):
        return MemoryStore()
    if url.startswith("sqlite://"):
        from .sqlite_store import SqliteStore

        path = url.removeprefix("sqlite://").removeprefix("/")
        if not path:
            path = str(Path(data_dir) / "jobmonitor.db")
        return SqliteStore(path, commit_interval_s=commit_interval_s, synchronous=synchronous)
    raise ConfigError(f"store: unknown store URL {url!r} (expected memory:// or sqlite:///PATH)")
