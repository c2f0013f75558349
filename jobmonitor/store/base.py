"""Where jobs are kept: the store interface every backend implements.

The engine owns the live jobs; a store makes them outlive the process.  A store
deals in ``JobRecord``s and encoded lines, never in running jobs: what it needs
of a live job is the ``Recordable`` view (its record and the stream's lines).

``add`` returns only once the job is durable (a submit is acknowledged after
it); ``changed`` only marks a job, and the store writes what changed in its
own time (the SQLite store: in group commits at most ``commit_interval_s``
apart).  The memory store keeps nothing beyond the engine's own tables.

A store that cannot be used now (a full disk, a database another program has
locked) raises ``StoreUnavailable`` from ``add``, ``flush``, ``delete``,
``purge`` and its reads; what it was given to write and did not refuse, it keeps
and writes once it can.

Backends live beside this module (``memory``, ``sqlite/``); ``batching`` is the
group commit a durable one builds on.  The package's ``open_store`` picks one
from a store URL.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from ..wire.records import HistoryEvent, JobRecord
from .timings import Durations

__all__ = ["Store", "Recordable", "Recovery", "TaskEvent"]


class _Lines(Protocol):
    base: int
    flushed: int  # lines up to here have been announced (``changed``); the rest will be

    def __len__(self) -> int: ...

    def pieces(self, start: int, stop: int, most: int) -> list[tuple[int, bytes]]:
        """Lines ``start`` to ``stop`` (0-based, in memory) joined, in pieces of at
        most ``most`` lines: (how many lines, their bytes)."""


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
    #: Per recurring schedule, the last due time a job was made for (issue 20).
    schedule_marks: dict[str, float] = field(default_factory=dict)


class Store(abc.ABC):
    """Persistence for jobs, their lines, history and outputs.

    Every method is abstract: a backend says what each one does, even where that
    is nothing (the memory store), so one it forgot cannot quietly answer "unknown
    transaction" (it cannot be made at all).  ``batching.GroupCommitStore`` is the
    writing half of a durable backend, whatever its database.
    """

    #: True when jobs survive a restart (queued jobs are kept at shutdown).
    durable: bool = False
    #: Called on the loop after a commit, with the jobs whose lines it stored and
    #: how many of their lines are now stored.
    on_persisted: Callable[[Recordable, int], None] | None = None
    #: How long commits take (a store that commits nothing has none).
    commit_durations: Durations | None = None

    @abc.abstractmethod
    async def open(self) -> Recovery:
        """Open (creating if needed) and say what was there."""

    @abc.abstractmethod
    async def close(self, *, keep_lock: bool = False) -> None:
        """Write everything pending and close.  ``keep_lock``: a store that only
        one server may open at a time goes on refusing others until
        ``release_lock`` (or the process's end): a handler of this server still
        runs, and a new server would run its job again beside it."""

    @abc.abstractmethod
    def release_lock(self) -> None:
        """Let other servers open the store, after ``close(keep_lock=True)``
        (idempotent; the store is closed, so any thread may call it)."""

    @abc.abstractmethod
    async def add(self, job: Recordable) -> None:
        """Record a new job and its lines so far; return once durable.  Called only
        on a durable store.

        Raises:
            StoreUnavailable: the job could not be stored, and nothing of it is kept.
        """

    @abc.abstractmethod
    def changed(self, job: Recordable, urgent: bool = False) -> None:
        """The job's record or lines changed; write them soon (``urgent``: someone
        is waiting on them, start a commit now).  Called only on a durable store."""

    @abc.abstractmethod
    async def flush(self) -> None:
        """Return once everything changed so far is written."""

    @abc.abstractmethod
    def call_when_stored(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` on the loop once what has changed so far is stored
        (right after the commit that takes it), or at the end of this loop turn
        when nothing waits (nor will: a closed store)."""

    # -- reading and deleting ------------------------------------------------------
    # (Asked only about what the engine no longer has in memory: a job that is not
    # stored is answered as unknown, so none of these may be left out.)

    @abc.abstractmethod
    async def load(self, transaction_id: str) -> JobRecord | None:
        """A stored job's record, or None."""

    @abc.abstractmethod
    async def find_token(self, identity: str, job_token: str) -> str | None:
        """The transaction ID of the job with this client key, or None."""

    @abc.abstractmethod
    async def read_lines(self, transaction_id: str, from_line: int, limit: int) -> list[bytes]:
        """Up to ``limit`` stored lines from line number ``from_line`` on."""

    @abc.abstractmethod
    async def list_records(self, identity: str | None, after: int,
                           limit: int) -> Sequence[JobRecord]:
        """A page of stored jobs: up to ``limit`` of those numbered above ``after``
        (optionally one submitter's), in number order, with their outputs but
        without their history (a listing shows none).  A store that keeps jobs
        reads them page by page, never all at once."""

    @abc.abstractmethod
    async def delete(self, transaction_id: str) -> None:
        """Remove a job, its lines, history and outputs."""

    @abc.abstractmethod
    async def purge(self, finished_before: float) -> int:
        """Delete jobs that finished before this time; return how many."""

    @abc.abstractmethod
    async def check(self) -> list[str]:
        """Check what is stored, without opening the store for a server; return
        the problems found (none: an empty list).

        Raises:
            ConfigError: the store cannot be checked (a server is using it, it is
                missing, or it is not fit to open at all).
        """
