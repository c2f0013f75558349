"""A cluster in one process: a ``FakeDatabase`` several ``FakeSharedStore``s share.

Each node (an engine) gets its own ``FakeSharedStore``; they all read and write
one ``FakeDatabase``, as PostgreSQL nodes share one database.  The fake keeps
the contract of ``jobmonitor.store.shared`` where the engine can tell:

- holding with epochs: a held job's changes are written only while the row is
  still held by this node at the epoch it took; else they are dropped and the
  node hears ``lost``;
- ``claim`` by priority then age, ``take`` of a job nobody live holds,
  ``request`` to the live holder (its ``requested`` hook, on the next turn, if
  it still holds the job then); a ``release`` hands the actions asked of the
  job and not read yet back to the releasing node (its ``requested`` hook),
  or with ``keep_requests`` leaves them for the next holder, whom a ``claim``
  or ``take`` hands them to;
- tokens unique per submitter: ``add``/``add_held`` raise ``TokenTaken``;
- ``wait_lines`` woken by every commit that touches the job;
- a node the test declares dead (``declare_dead``) loses its jobs: queued ones
  are released for others to claim, running ones are taken over by a live node
  (its ``taken_over`` hook); the dead node itself hears ``lost`` at its next
  ``heartbeat``.

Commits happen at the end of the loop turn in which something changed (as a
group commit would, a little later), so monitors and followers are sent only
lines that are stored.  Transaction numbers come in small blocks, to exercise
``more_numbers``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from jobmonitor.errors import StoreUnavailable
from jobmonitor.store.base import Recordable, Recovery, TaskEvent
from jobmonitor.store.shared import Action, ClusterHooks, NodeInfo, SharedStore, TokenTaken
from jobmonitor.wire.records import JobRecord
from jobmonitor.wire.states import JobState

__all__ = ["FakeDatabase", "FakeSharedStore"]

#: Numbers a node takes from the database at a time.
NUMBER_BLOCK = 5
_RUNNING = (JobState.PROCESSING, JobState.SUSPENDED)


@dataclass(slots=True)
class _Row:
    record: JobRecord
    lines: list[bytes] = field(default_factory=list)
    node_id: str | None = None
    epoch: int = 0
    #: Actions asked of the holder that it has not read yet, in order.
    requested: list[Action] = field(default_factory=list)


class FakeDatabase:
    """What the nodes share: jobs, lines, tokens, numbers, nodes, events."""

    def __init__(self) -> None:
        self.rows: dict[str, _Row] = {}
        self.tokens: dict[tuple[str, str], str] = {}
        self.nodes: dict[str, FakeSharedStore] = {}  # live nodes by node_id
        self.events: list[TaskEvent] = []
        self.paused: set[str] = set()  # queues paused in the whole cluster
        self.down = False  # True: every call raises StoreUnavailable
        self._numbers = itertools.count(1)
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}

    def next_block(self) -> list[int]:
        return [next(self._numbers) for _ in range(NUMBER_BLOCK)]

    def check_up(self) -> None:
        if self.down:
            raise StoreUnavailable("the fake database is down")

    def live(self, node_id: str | None) -> bool:
        return node_id is not None and node_id in self.nodes

    def touched(self, transaction_id: str) -> None:
        """A commit wrote this job: wake its ``wait_lines``."""
        for waiter in self._waiters.pop(transaction_id, ()):
            if not waiter.done():
                waiter.set_result(None)

    def waiter(self, transaction_id: str) -> asyncio.Future[None]:
        future = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(transaction_id, []).append(future)
        return future

    def work_added(self) -> None:
        for node in list(self.nodes.values()):
            node.call_hook(lambda hooks: hooks.work_available())

    def declare_dead(self, dead: FakeSharedStore, heir: FakeSharedStore | None = None) -> None:
        """The reaper's one transaction: ``dead`` leaves the live nodes; its queued
        jobs are released, its running ones go to ``heir`` (else the first live node)."""
        self.nodes.pop(dead.node_id, None)
        heir = heir or next(iter(self.nodes.values()), None)
        taken: list[JobRecord] = []
        released = False
        for row in self.rows.values():
            if row.node_id != dead.node_id:
                continue
            row.epoch += 1
            row.requested.clear()  # (as the reaper clears them)
            if row.record.status in _RUNNING and heir is not None:
                row.node_id = heir.node_id
                heir.held[row.record.transaction_id] = row.epoch
                taken.append(heir.copy_of(row))
            else:
                row.node_id = None
                released = True
        if taken and heir is not None:
            heir.call_hook(lambda hooks: hooks.taken_over(taken))
        if released:
            self.work_added()


class FakeSharedStore(SharedStore):
    """One node's view of a ``FakeDatabase``."""

    _ids = itertools.count(1)

    def __init__(self, database: FakeDatabase, node_name: str, address: str = "") -> None:
        self.db = database
        self.node_name = node_name
        self.address = address
        self.node_id = self._new_id()
        self.started = time.time()
        #: transaction ID -> the epoch this node holds it at.
        self.held: dict[str, int] = {}
        self.hooks: ClusterHooks | None = None
        self.closed = False
        self._numbers: list[int] = []
        self._dirty: dict[str, Recordable] = {}
        self._history_taken: dict[str, int] = {}
        self._commit: asyncio.Handle | None = None
        self._when_stored: list[Callable[[], None]] = []

    def _new_id(self) -> str:
        return f"{self.node_name}#{next(self._ids)}"

    def call_hook(self, call: Callable[[ClusterHooks], None]) -> None:
        hooks = self.hooks
        if hooks is not None and not self.closed:
            asyncio.get_running_loop().call_soon(call, hooks)

    def copy_of(self, row: _Row) -> JobRecord:
        record = row.record.copy()
        record.history = list(record.history)
        record.outputs = list(record.outputs)
        record.line_count = len(row.lines)
        return record

    def heartbeat(self) -> None:
        """What a heartbeat finds: a node declared dead hears ``lost`` for all it
        held and registers again under a new id."""
        if self.closed or self.node_id in self.db.nodes:
            return
        lost = list(self.held)
        self.held.clear()
        self._dirty = {tid: job for tid, job in self._dirty.items() if tid in self.held}
        self.node_id = self._new_id()
        self.db.nodes[self.node_id] = self
        if lost:
            self.call_hook(lambda hooks: hooks.lost(lost))

    # -- Store ------------------------------------------------------------------------

    def attach(self, hooks: ClusterHooks) -> None:
        self.hooks = hooks

    async def open(self) -> Recovery:
        self.db.check_up()
        self.db.nodes[self.node_id] = self
        if self.hooks is not None:
            self.hooks.queues_paused(frozenset(self.db.paused))
        return Recovery(recent_events=list(self.db.events[-100:]))

    async def close(self, *, keep_lock: bool = False) -> None:
        self._commit_now()
        self.closed = True
        if self.db.nodes.get(self.node_id) is self:
            self.db.declare_dead(self)

    def release_lock(self) -> None:
        """No lock: many nodes share the database."""

    def take_number(self) -> int | None:
        return self._numbers.pop(0) if self._numbers else None

    async def more_numbers(self) -> None:
        self.db.check_up()
        self._numbers.extend(self.db.next_block())

    async def add(self, job: Recordable) -> None:
        self._insert(job, held=False)
        self.db.work_added()

    async def add_held(self, job: Recordable) -> None:
        self._insert(job, held=True)

    def _insert(self, job: Recordable, *, held: bool) -> None:
        self.db.check_up()
        record = job.record
        tid = job.transaction_id
        if record.job_token:
            key = (record.identity, record.job_token)
            earlier = self.db.tokens.get(key)
            if earlier is not None:
                raise TokenTaken(earlier)
            self.db.tokens[key] = tid
        stream = job.stream
        row = _Row(self._snapshot(job), list(stream.lines[:stream.flushed - stream.base]))
        row.record.line_count = len(row.lines)
        if held:
            row.node_id, row.epoch = self.node_id, 1
            self.held[tid] = 1
        self.db.rows[tid] = row
        self._log_events(tid, row.record)
        count = len(row.lines)
        if self.on_persisted is not None:
            asyncio.get_running_loop().call_soon(self.on_persisted, job, count)

    def changed(self, job: Recordable, urgent: bool = False) -> None:
        self._dirty[job.transaction_id] = job
        if self._commit is None:
            self._commit = asyncio.get_running_loop().call_soon(self._commit_now)

    async def flush(self) -> None:
        self._commit_now()

    def call_when_stored(self, callback: Callable[[], None]) -> None:
        if self._dirty:
            self._when_stored.append(callback)
        else:
            asyncio.get_running_loop().call_soon(callback)

    def _commit_now(self) -> None:
        """Write every held job that changed; drop (and report lost) the fenced."""
        self._commit = None
        if self.db.down:
            if self._dirty:
                self._commit = asyncio.get_running_loop().call_later(0.05, self._commit_now)
            return
        dirty, self._dirty = self._dirty, {}
        lost: list[str] = []
        for tid, job in dirty.items():
            row = self.db.rows.get(tid)
            epoch = self.held.get(tid)
            if row is None or epoch is None or row.node_id != self.node_id or row.epoch != epoch:
                if epoch is not None:
                    del self.held[tid]
                    lost.append(tid)
                continue
            stream = job.stream
            start = len(row.lines) - stream.base
            row.lines.extend(stream.lines[start:stream.flushed - stream.base])
            row.record = self._snapshot(job)
            row.record.line_count = len(row.lines)
            self._log_events(tid, row.record)
            if row.record.status.is_final:
                row.node_id = None
                del self.held[tid]
            self.db.touched(tid)
            if self.on_persisted is not None:
                self.on_persisted(job, len(row.lines))
        if lost:
            self.call_hook(lambda hooks: hooks.lost(lost))
        callbacks, self._when_stored = self._when_stored, []
        for callback in callbacks:
            callback()

    @staticmethod
    def _snapshot(job: Recordable) -> JobRecord:
        record = job.record.copy()
        record.history = list(record.history)
        record.outputs = list(record.outputs)
        return record

    def _log_events(self, tid: str, record: JobRecord) -> None:
        taken = self._history_taken.get(tid, 0)
        for event in record.history[taken:]:
            if event.stage == "job":
                self.db.events.append(TaskEvent(tid, record.project, event))
        self._history_taken[tid] = len(record.history)

    # -- reading ----------------------------------------------------------------------

    async def load(self, transaction_id: str) -> JobRecord | None:
        self.db.check_up()
        row = self.db.rows.get(transaction_id)
        return None if row is None else self.copy_of(row)

    async def find_token(self, identity: str, job_token: str) -> str | None:
        self.db.check_up()
        return self.db.tokens.get((identity, job_token))

    async def read_lines(self, transaction_id: str, from_line: int, limit: int) -> list[bytes]:
        self.db.check_up()
        row = self.db.rows.get(transaction_id)
        if row is None or from_line < 1:
            return []
        return row.lines[from_line - 1:from_line - 1 + limit]

    async def list_records(self, identity: str | None, after: int,
                           limit: int) -> Sequence[JobRecord]:
        return self._listed(identity, after, limit, active=False)

    async def list_active(self, identity: str | None, after: int,
                          limit: int) -> Sequence[JobRecord]:
        return self._listed(identity, after, limit, active=True)

    def _listed(self, identity: str | None, after: int, limit: int, *,
                active: bool) -> list[JobRecord]:
        self.db.check_up()
        rows = sorted((row for row in self.db.rows.values()
                       if row.record.number > after
                       and (identity is None or row.record.identity == identity)
                       and not (active and row.record.status.is_final)),
                      key=lambda row: row.record.number)
        return [self.copy_of(row) for row in rows[:limit]]

    async def delete(self, transaction_id: str) -> None:
        self.db.check_up()
        row = self.db.rows.pop(transaction_id, None)
        if row is not None and row.record.job_token:
            self.db.tokens.pop((row.record.identity, row.record.job_token), None)

    async def purge(self, finished_before: float) -> int:
        return 0

    async def check(self) -> list[str]:
        return []

    async def recent_events(self, limit: int) -> list[TaskEvent]:
        self.db.check_up()
        return list(self.db.events[-limit:])

    async def nodes(self) -> list[NodeInfo]:
        self.db.check_up()
        running: dict[str, int] = {}
        for row in self.db.rows.values():
            if row.node_id is not None and row.record.status in _RUNNING:
                running[row.node_id] = running.get(row.node_id, 0) + 1
        return sorted((NodeInfo(node.node_name, node.address, node.started, 0.0,
                                running.get(node_id, 0))
                       for node_id, node in self.db.nodes.items()), key=lambda n: n.name)

    # -- holding ----------------------------------------------------------------------

    async def claim(self, limit: int, queues: Sequence[str] | None = None) -> list[JobRecord]:
        self.db.check_up()
        now = time.time()
        ready = [row for row in self.db.rows.values()
                 if row.node_id is None and (queues is None or row.record.queue in queues)
                 and row.record.queue not in self.db.paused
                 and ((row.record.status is JobState.QUEUED
                       and (row.record.retry_at or 0) <= now)
                      or (row.record.status is JobState.CREATED
                          and (row.record.run_at or 0) <= now))]
        ready.sort(key=lambda row: (-row.record.priority, row.record.created, row.record.number))
        return [self._hold(row) for row in ready[:limit]]

    def _hold(self, row: _Row) -> JobRecord:
        row.node_id = self.node_id
        row.epoch += 1
        tid = row.record.transaction_id
        self.held[tid] = row.epoch
        self._history_taken[tid] = len(row.record.history)
        if row.requested:  # (left by a node that let go of it: this node's to read)
            self.call_hook(self._reader_of(row))
        return self.copy_of(row)

    def _reader_of(self, row: _Row) -> Callable[[ClusterHooks], None]:
        """What reads the actions asked of a job this node holds (as the store's
        read of its requests: only while it still holds it)."""
        node = self

        def read(hooks: ClusterHooks) -> None:
            if row.node_id == node.node_id and row.requested:
                asked = list(row.requested)
                row.requested.clear()
                for action in asked:
                    hooks.requested(row.record.transaction_id, action)

        return read

    async def take(self, transaction_id: str) -> JobRecord | None:
        self.db.check_up()
        row = self.db.rows.get(transaction_id)
        if (row is None or row.record.status.is_final
                or (row.node_id != self.node_id and self.db.live(row.node_id))):
            return None
        return self._hold(row)

    async def request(self, transaction_id: str, action: Action) -> bool:
        self.db.check_up()
        row = self.db.rows.get(transaction_id)
        if row is None or not self.db.live(row.node_id):
            return False
        holder = self.db.nodes[row.node_id]  # type: ignore[index]  # (live: not None)
        row.requested.append(action)
        holder.call_hook(holder._reader_of(row))
        return True

    async def set_paused(self, queue: str, paused: bool) -> None:
        """Every live node hears of it at once (PostgreSQL's nodes a moment later)."""
        self.db.check_up()
        if paused:
            self.db.paused.add(queue)
        else:
            self.db.paused.discard(queue)
        names = frozenset(self.db.paused)
        for node in list(self.db.nodes.values()):
            if node.hooks is not None and not node.closed:
                node.hooks.queues_paused(names)

    def release(self, transaction_id: str, *, keep_requests: bool = False) -> None:
        self._commit_now()
        row = self.db.rows.get(transaction_id)
        epoch = self.held.pop(transaction_id, None)
        if row is not None and row.node_id == self.node_id and row.epoch == epoch:
            row.node_id = None
            row.epoch += 1
            if row.requested and not keep_requests:  # handed back, to pass on
                asked = list(row.requested)
                row.requested.clear()

                def hand_back(hooks: ClusterHooks) -> None:
                    for action in asked:
                        hooks.requested(transaction_id, action)

                self.call_hook(hand_back)
            self.db.work_added()

    async def wait_lines(self, transaction_id: str, stored_lines: int, timeout: float) -> None:
        self.db.check_up()
        row = self.db.rows.get(transaction_id)
        if row is None or len(row.lines) > stored_lines:
            return
        waiter = self.db.waiter(transaction_id)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(waiter, timeout)
