"""The directory of jobs: finding a job, live or stored, and what is known about it.

Every unfinished job is a live ``Job`` in memory; a finished one may be too
(with the memory store, the last ``max_finished_in_memory`` of them), or only in
the store.  Lookups answer from memory first and fall back to the store, so
callers never need to know which.  The directory also counts each job's monitors
and keeps the server-wide task log.  It runs nothing: the engine decides what
jobs do.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
from typing import NamedTuple

from ..errors import RequestError, StoreUnavailable
from ..store.base import Store, TaskEvent
from ..store.shared import SharedStore
from ..wire.codes import Reply
from ..wire.lines import clip
from ..wire.records import HistoryEvent, JobRecord, parse_transaction_id
from ..wire.variables import TASK_LOG_SIZE
from .counters import COUNTED_EVENTS, JobCounters
from .job import Job

__all__ = ["JobDirectory", "JobPage", "TASK_LOG_SIZE", "IDLE_TAIL_LINES"]

_new_tuple = tuple.__new__
#: Stored lines of a job kept in memory when no monitor needs older ones.
IDLE_TAIL_LINES = 1000


class JobPage(NamedTuple):
    """A page of a job listing."""

    records: list[JobRecord]
    #: The cursor for the next page (the last listed transaction ID), or None
    #: when no job follows.
    next_after: str | None


class JobDirectory:
    """Live jobs by transaction ID and by client key, with the store behind them."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._jobs: dict[str, Job] = {}
        self._tokens: dict[tuple[str, str], str] = {}
        self._monitors: dict[str, int] = {}  # a plain dict: Counter's default is a Python call
        self._task_log: collections.deque[TaskEvent] = collections.deque(maxlen=TASK_LOG_SIZE)
        # With a store that keeps nothing: the finished jobs kept, oldest first.  An
        # ordered dict, not a deque: a job deleted or expired leaves it at once.
        self._finished: collections.OrderedDict[str, None] = collections.OrderedDict()
        #: What the metrics endpoint reports (jobs submitted and finished, lines sent).
        self.counters = JobCounters()
        #: A cluster's reads of stored lines under way, shared by equal asks.
        self._reading: dict[tuple[str, int, int], asyncio.Future[list[bytes]]] = {}

    # -- membership ---------------------------------------------------------------

    def add(self, job: Job) -> None:
        self._jobs[job.transaction_id] = job
        token = job.record.job_token
        if token:
            self._tokens[(job.identity, token)] = job.transaction_id

    def forget(self, transaction_id: str) -> None:
        """Drop a job from memory (it is stored, deleted, or expired)."""
        job = self._jobs.pop(transaction_id, None)
        self._finished.pop(transaction_id, None)
        if job is not None and job.record.job_token:
            self._tokens.pop((job.identity, job.record.job_token), None)

    def keep_finished(self, job: Job, limit: int) -> None:
        """Keep a finished job of a store that keeps nothing, forgetting the oldest
        beyond ``limit`` (0: no limit), so such a server's memory stays bounded."""
        if not limit:
            return
        finished = self._finished
        finished[job.record.transaction_id] = None
        while len(finished) > limit:
            self.forget(finished.popitem(last=False)[0])

    def live_jobs(self) -> list[Job]:
        return list(self._jobs.values())

    def expire(self, cutoff: float) -> None:
        """Forget jobs that finished before ``cutoff``."""
        for job in list(self._jobs.values()):
            if job.record.completed is not None and job.record.completed < cutoff:
                self.forget(job.transaction_id)

    def stored(self, job: Job, stored_lines: int, max_lines_in_memory: int) -> None:
        """After a commit: let monitors have the stored lines; drop stored lines no
        monitor needs (and, past the cap, those a slow monitor needs: it reads them
        back from the store); let a stored, finished job go."""
        stream = job.stream
        stream.stored(stored_lines)  # before anything else: watchers wait on it
        if self._jobs.get(job.transaction_id) is not job:
            return
        keep_from = len(stream) + 1 - IDLE_TAIL_LINES  # a short tail for re-attaching
        needed = stream.first_needed_line()
        if needed is not None:
            keep_from = min(keep_from, needed)  # what monitors still have to be sent...
        keep_from = max(keep_from, len(stream) + 1 - max_lines_in_memory)
        stream.trim(min(keep_from, stored_lines + 1))  # ...never what is not stored
        if job.state.is_final and stored_lines == len(stream):
            self.forget(job.transaction_id)

    # -- lookups ------------------------------------------------------------------

    def live(self, transaction_id: str) -> Job | None:
        """The job if it is in memory (every unfinished job is)."""
        return self._jobs.get(transaction_id)

    def find(self, transaction_id: str) -> Job:
        """The in-memory job with this transaction ID.

        Raises:
            RequestError: UNKNOWN_TRANSACTION.
        """
        job = self._jobs.get(parse_transaction_id(transaction_id) or "")
        if job is None:
            raise RequestError(Reply.UNKNOWN_TRANSACTION, clip(transaction_id))
        return job

    async def earlier(self, identity: str, job_token: str) -> str | None:
        """The transaction ID of this submitter's job with this client key, if any."""
        key = (identity, job_token)
        found = self._tokens.get(key) or await self._store.find_token(identity, job_token)
        # Asked again after the store: a submit with this key may have made its job
        # while the store looked (the caller makes one without awaiting anything).
        return found or self._tokens.get(key)

    async def resolve(self, transaction_id: str | None, identity: str,
                      job_token: str | None) -> str:
        """The transaction ID named directly, or by the submitter's job token.

        Raises:
            RequestError: UNKNOWN_TRANSACTION.
        """
        if transaction_id:
            named = parse_transaction_id(transaction_id)
            if named is None:  # (quoted as it always was: upper case)
                raise RequestError(Reply.UNKNOWN_TRANSACTION, clip(transaction_id.strip().upper()))
            return named
        found = await self.earlier(identity, job_token) if job_token else None
        if found is None:
            raise RequestError(Reply.UNKNOWN_TRANSACTION,
                               f"no job with job token {clip(job_token or '')!r}")
        return found

    async def record(self, transaction_id: str) -> JobRecord:
        """A snapshot of a job, live or stored.

        Raises:
            RequestError: UNKNOWN_TRANSACTION.
        """
        job = self._jobs.get(transaction_id)
        if job is not None:
            return job.snapshot()
        record = await self._store.load(transaction_id)
        if record is None:
            raise RequestError(Reply.UNKNOWN_TRANSACTION, clip(transaction_id))
        return record

    async def list_page(self, active_only: bool, identity: str | None, *,
                        after: str | None, limit: int) -> JobPage:
        """Up to ``limit`` jobs after transaction ``after`` (from the first without),
        in transaction order: active ones, or all that are kept; optionally only
        one submitter's.  ``next_after`` is set when more jobs follow.

        Live jobs come from memory, the rest from the store a page at a time; a
        job in both is shown as it is in memory.  Each source gives its first
        ``limit`` + 1 jobs after the cursor, so together they hold this page and
        tell whether another follows.
        """
        # Transaction IDs have a fixed width, so they sort as their numbers do.
        after = after or ""
        chosen = heapq.nsmallest(limit + 1, (
            transaction_id for transaction_id, job in self._jobs.items()
            if transaction_id > after and (identity is None or job.identity == identity)
            and not (active_only and job.state.is_final)))
        # Taken before the store is asked: a job let go meanwhile is stored by then.
        records = {tid: self._jobs[tid].snapshot() for tid in chosen}
        shared = self._store if isinstance(self._store, SharedStore) else None
        # (every active job of a single server is in memory; a cluster's are not)
        if not active_only or shared is not None:
            lister = shared.list_active if shared is not None and active_only else \
                self._store.list_records
            stored = await lister(identity, int(after[1:]) if after else 0, limit + 1)
            for record in stored:
                records.setdefault(record.transaction_id, record)
        page = [records[tid] for tid in sorted(records)[:limit + 1]]
        if len(page) > limit:
            return JobPage(page[:limit], page[limit - 1].transaction_id)
        return JobPage(page, None)

    async def more_stored(self, transaction_id: str, next_line: int, wait_s: float, *,
                          look_first: bool = True) -> bool:
        """For a monitor of a job this server does not hold (a cluster's node):
        False once the job has ended (or is gone) with no line from ``next_line``
        on; else True, once that line is stored or the job's state changed, or
        after ``wait_s``.  Without a shared store, at once False (a job not in
        memory has ended).

        ``look_first``: read the job's record before waiting (at the start of a
        follow, and after its ended line).  Else the record is read only after a
        wait that no news ended (the store wakes the wait for every commit of the
        job's lines or state), so a follower costs no read of it per commit.
        """
        store = self._store
        if not isinstance(store, SharedStore):
            return False
        try:
            if look_first and not await _may_grow(store, transaction_id, next_line):
                return False
            loop = asyncio.get_running_loop()
            started = loop.time()
            await store.wait_lines(transaction_id, next_line - 1, wait_s)
            if look_first or loop.time() - started < wait_s / 2:
                return True  # (news: the caller reads what came)
            return await _may_grow(store, transaction_id, next_line)
        except StoreUnavailable:  # (an outage: the monitor waits for the store's return)
            await asyncio.sleep(wait_s)
        return True

    async def read_lines(self, transaction_id: str, from_line: int, limit: int) -> list[bytes]:
        """Recorded lines from ``from_line`` on, from memory or the store."""
        job = self._jobs.get(transaction_id)
        if job is not None and job.stream.in_memory(from_line):
            durable = job.stream.durable
            if durable is not None:  # only what a crash cannot take back
                limit = min(limit, durable - from_line + 1)
            lines = job.stream.read(from_line - 1, from_line - 1 + max(limit, 0))
        elif isinstance(self._store, SharedStore):
            lines = await self._shared_read(transaction_id, from_line, limit)
        else:
            lines = await self._store.read_lines(transaction_id, from_line, limit)
        self.counters.lines_sent += len(lines)
        return lines

    async def _shared_read(self, transaction_id: str, from_line: int,
                           limit: int) -> list[bytes]:
        """A shared store's lines, one read for the monitors asking for the same
        ones at once (a commit on another node wakes all its followers here)."""
        key = (transaction_id, from_line, limit)
        reading = self._reading.get(key)
        if reading is None:
            reading = asyncio.ensure_future(
                self._store.read_lines(transaction_id, from_line, limit))
            self._reading[key] = reading
            reading.add_done_callback(lambda _: self._reading.pop(key, None))
        return await asyncio.shield(reading)

    # -- monitors and the task log ----------------------------------------------------

    def monitor_count(self, transaction_id: str) -> int:
        """How many connections follow this job's stream now."""
        return self._monitors.get(transaction_id, 0)

    def monitor_total(self) -> int:
        """How many connections follow job streams now, over all jobs."""
        return sum(self._monitors.values())

    def monitor_attached(self, transaction_id: str) -> None:
        monitors = self._monitors
        monitors[transaction_id] = monitors.get(transaction_id, 0) + 1

    def monitor_detached(self, transaction_id: str) -> None:
        monitors = self._monitors
        count = monitors.get(transaction_id, 0) - 1
        if count > 0:
            monitors[transaction_id] = count
        else:
            monitors.pop(transaction_id, None)

    def log_event(self, job: Job, event: HistoryEvent) -> None:
        # tuple.__new__: a named tuple's own constructor is a Python-level call,
        # and three of these are made for every job.
        record = job.record
        self._task_log.append(_new_tuple(TaskEvent, (record.transaction_id, record.project,
                                                     event)))
        if event.status in COUNTED_EVENTS:  # (not the start, nor retries and resumes)
            self.counters.job_event(record.project, event, record.outcome)

    def seed_task_log(self, events: list[TaskEvent]) -> None:
        self._task_log.extend(events)

    def task_log(self) -> list[TaskEvent]:
        """Recent job events across the server, oldest first."""
        return list(self._task_log)


async def _may_grow(store: SharedStore, transaction_id: str, next_line: int) -> bool:
    """Whether a job in a shared store may still have line ``next_line``: it is
    there, and it has not ended or has that line already."""
    record = await store.load(transaction_id)
    if record is None:
        return False
    return not record.status.is_final or record.line_count >= next_line
