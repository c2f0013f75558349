"""The job engine: what each command does to a job, and the server's jobs across restarts.

A submitted job is stored, then handed to the ``JobRunner`` (``runner``),
which starts it at once if a slot is free and otherwise queues it.  The
engine checks that a command may change a job's state (``lifecycle``'s
table), recovers the jobs a stopped server left unfinished, and stops and
restarts the runner.  A job the shutdown cancels says so
(``CancelReason.SHUTDOWN``); a ``RestartServer`` or ``CancelJob`` does not.

A job may name its queue and priority (``queues``), and a due time: it then
waits as ``Created`` in ``DueJobs`` until that time, and recurring schedules
make jobs at theirs (``schedule``); ``rerun`` makes a new job like a finished one.

Live jobs (scheduled, queued, running, suspended, and the finished ones a memory store keeps)
are ``Job`` objects in the ``JobDirectory``; with a durable store a finished job leaves
memory once it is stored, and lookups fall back to the store.

With a store several servers share (PostgreSQL), the engine is one node of a
cluster and has in memory only the jobs it holds (``cluster``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Mapping

from ..config import Config
from ..errors import RequestError, StoreUnavailable
from ..store.base import Recordable, Store
from ..store.shared import Action, SharedStore, TokenTaken
from ..wire.codes import Reply, Status
from ..wire.lines import clip, format_line
from ..wire.records import JobRecord
from ..wire.states import JobState
from . import lifecycle
from .cluster import Clustered
from .controls import Controls
from .directory import JobDirectory
from .handlers import Handler
from .job import Job
from .keeping import Keeping
from .lifecycle import CancelReason
from .placing import Placing
from .queues import Placement
from .runner import JobRunner
from .schedule import Clock, DueJobs, Recurring, WallClock

__all__ = ["Engine"]

log = logging.getLogger("jobmonitor.engine")

MAX_TRANSACTION_NUMBER = 9_999_999
#: Longest a stopping node waits for a claim under way (the store's statements
#: time out well before).
CLAIM_WAIT_S = 10.0


#: The variables of every new job that has none (see ``Engine._submit``).
_NO_VARIABLES: dict[str, str] = {}


class Engine(Clustered, Placing, Keeping, Controls):
    """One server's jobs: what the commands do to them, and their life across starts
    and stops (the ``JobRunner`` runs them; ``Placing`` holds the parts for
    queues, due times, schedules and reruns; ``Clustered`` those of a cluster's node)."""

    def __init__(self, handlers: Mapping[str, Handler], config: Config, store: Store, *,
                 clock: Clock | None = None) -> None:
        """``clock``: what due times and schedules read the time from (default: the
        system's; a test passes one it moves by hand)."""
        self._config = config
        self._store = store
        #: The store several nodes share, when this engine is one of a cluster's.
        self._shared = store if isinstance(store, SharedStore) else None
        #: Every job by transaction ID (and client key), live or stored.
        self.jobs = JobDirectory(store)
        # Every job's hooks, as bound methods made once (one each per job would be
        # 128 bytes more per waiting job).  A store that keeps nothing needs no word
        # of changes.
        self._on_change = store.changed if store.durable else None
        self._on_event = self.jobs.log_event
        self._runner = JobRunner(handlers, config, self.jobs, durable=store.durable)
        self.clock: Clock = clock or WallClock()
        #: Jobs waiting for their due time (``Created``), and the recurring schedules.
        self._due = DueJobs(self.clock, self._now_due)
        self._schedules = Recurring(self.clock, self._make_scheduled)
        #: Jobs whose first commit is under way: what a same-token submit awaits.
        self._adding: dict[str, list[asyncio.Future[None]] | None] = {}
        self._last_number = 0
        self._accepting = False
        self._purger: asyncio.Task[None] | None = None
        #: The loop the engine was started on: asking asyncio for the running loop
        #: costs a getpid() system call each time, and a job asked three times.
        self._loop: asyncio.AbstractEventLoop | None = None
        self.machine_name = config.machine_name or socket.gethostname()
        if self._shared is not None:  # (a node's jobs name the node)
            self.machine_name = self._shared.node_name
        #: When this engine started, and the address its server listens on
        #: (set by the server): what ``ListNodes`` shows of a single server.
        self.started_at = time.time()
        self.address = ""
        # A cluster's node: a transaction number taken from the store and not used
        # yet, the slots promised to submits being stored, and the claim under way.
        self._spare_number: int | None = None
        self._reserved = 0
        self._claiming: asyncio.Task[None] | None = None
        self._claim_again = False
        # Work after a command another node asked for, and the jobs being let go
        # of with the actions asked of them meanwhile (see Clustered.settle).
        self._settling: set[asyncio.Task[None]] = set()
        self._releasing: dict[str, list[Action]] = {}
        self._work_seen = 1  # (see Clustered._slot_freed)
        self._work_claimed = 0
        # Every stream's first line: formatted once, shared by all jobs.
        self._machine_line = format_line("J", Status.INFO, f"Machine name: {self.machine_name}")

    # -- life cycle -----------------------------------------------------------

    async def start(self) -> None:
        """Open the store, recover unfinished jobs, and start running jobs."""
        self._loop = self._runner.loop = asyncio.get_running_loop()
        self._store.on_persisted = self._persisted
        if self._shared is not None:
            self._shared.attach(self)
            self._runner.on_slot_free = self._slot_freed
        recovery = await self._store.open()
        self._last_number = recovery.last_number
        self.jobs.seed_task_log(recovery.recent_events)
        for record in recovery.unfinished:
            self._recover(record)
        self._accepting = self._runner.starting = self._runner.retrying = True
        self._due.start()  # (what fell due while the server was down is queued now)
        self._schedules.start(self._config.schedules, recovery.schedule_marks)
        if self._config.keep_days > 0:
            self._purger = asyncio.get_running_loop().create_task(self._purge_loop())
        self._runner.start_ready()
        self._claim_soon()

    async def stop(self, grace_s: float) -> None:
        """Stop starting jobs, give running ones ``grace_s``, cancel the rest, close the store.

        A cancelled job whose handler has not stopped ``runner.CANCEL_WAIT_S``
        later is abandoned (it ends cancelled, or is left to recovery), and its
        thread goes on: the store stays locked until that thread returns.
        With a durable store, queued jobs stay queued for the next start and
        running jobs of ``retry_on_restart`` handlers are left to recovery.
        The jobs it cancels end with ``J0005004`` before ``J0000023``.
        """
        self._accepting = self._runner.retrying = False
        self._schedules.stop()
        self._due.stop()
        if self._purger is not None:
            self._purger.cancel()
        self._notify_live(f"Server stopping: running jobs have {grace_s:g} s to finish")
        if not self._store.durable:  # no next start to wait for: queued, delayed, suspended
            for job in self.jobs.live_jobs():
                if not job.state.is_final and not self._runner.is_running(job):
                    self.cancel(job, CancelReason.SHUTDOWN)
        self._runner.clear_delays()  # (a durable store keeps those jobs queued)
        await self._runner.drain(grace_s, keep_retryable=self._store.durable,
                                 reason=CancelReason.SHUTDOWN)
        self._runner.close()
        if self._shared is not None:  # queued and waiting jobs go to the other nodes
            if self._claiming is not None:  # (it lets go of what it gets: see _claim)
                await asyncio.wait([self._claiming], timeout=CLAIM_WAIT_S)
            if self._settling:  # (actions passed on may take a job: let go of it below)
                await asyncio.wait(list(self._settling), timeout=CLAIM_WAIT_S)
            self._release_waiting()
            with contextlib.suppress(StoreUnavailable):  # (else the lease's end lets go)
                await self._store.flush()
        # A handler abandoned in its thread may still be at work: the store stays
        # locked until it returns, so that no new server runs its job beside it.
        # (A cluster's node without one leaves the cluster at once.)
        keep_lock = self._shared is None or bool(self._runner.stuck_jobs())
        await self._store.close(keep_lock=keep_lock)
        self._runner.when_threads_end(self._store.release_lock)

    async def restart(self, grace_s: float, handlers: Mapping[str, Handler]) -> None:
        """Let running jobs finish within ``grace_s`` (cancel the rest), swap in
        ``handlers``, and start again (unless the server began to stop
        meanwhile); queued jobs keep their place."""
        runner = self._runner
        runner.starting = False
        self._notify_live(f"Job engine restarting: running jobs have {grace_s:g} s to finish")
        await runner.drain(grace_s, keep_retryable=False)
        runner.handlers = dict(handlers)
        if self._accepting:  # else the server began to stop meanwhile: start nothing
            runner.starting = True
            runner.start_ready()

    def configure(self, config: Config) -> None:
        """Use these settings from now on (a reload; the store's and the machine
        name stay as they were opened)."""
        self._config = config
        self._runner.configure(config)
        for name in self._cluster_paused:  # (a cluster's pause outlasts the file's)
            self._runner.lines.pause(name)
        self._claim_soon()  # (a cluster's node: more slots may be free now)
        self._schedules.configure(config.schedules)
        purging = self._purger is not None and not self._purger.done()
        if config.keep_days > 0 and not purging and self._accepting:
            self._purger = asyncio.get_running_loop().create_task(self._purge_loop())

    def replace_handlers(self, handlers: Mapping[str, Handler]) -> None:
        """Run new and queued jobs with ``handlers`` from now on (a reload); running
        jobs go on with the handlers they started with."""
        self._runner.handlers = dict(handlers)
        self._runner.start_ready()  # (nothing if stopped or restarting)

    def _notify_live(self, notice: str) -> None:
        for job in self.jobs.live_jobs():
            if not job.state.is_final:
                lifecycle.notice(job, notice)

    def hurry(self) -> None:
        """Stop waiting for running jobs: cancel them now (a second signal)."""
        self._runner.hurry()

    def stuck_jobs(self) -> list[Job]:
        """Jobs whose handlers still run: running, or abandoned by a stop or a
        restart in a thread that has not returned.  Safe from any thread."""
        return self._runner.stuck_jobs()

    def when_threads_end(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once no abandoned handler thread is left (at once if
        none is; else in the thread that returns last)."""
        self._runner.when_threads_end(callback)

    # -- counts ---------------------------------------------------------------------

    @property
    def queued_count(self) -> int:
        """Jobs waiting to run: in the queue, or waiting out a retry's delay."""
        return self._runner.queued_count

    @property
    def running_count(self) -> int:
        return self._runner.running_count

    @property
    def store(self) -> Store:
        """Where the jobs are kept (read-only use: the metrics read its commit times)."""
        return self._store

    def handler_names(self) -> list[str]:
        return sorted(self._runner.handlers)

    # -- commands ---------------------------------------------------------------

    async def submit(self, project: str, params: Mapping[str, str],
                     doc_variables: Mapping[str, str], *, identity: str = "anonymous",
                     job_token: str | None = None,
                     placement: Placement | None = None) -> tuple[str, Job | None]:
        """Create, store and queue (or start) a job; return its transaction ID and
        the live job (None for an earlier, finished job with the same token).
        ``placement``: its queue, priority and due time (a job due later waits as
        ``Created``).

        Raises:
            RequestError: UNKNOWN_PROJECT; whatever the handler's ``check`` raises;
            INVALID_VALUE for a queue the server does not allow; SERVER_BUSY while
            shutting down, when the queue is full, or when transaction numbers are
            exhausted; StoreUnavailable (SERVER_BUSY) when the store cannot write
            the job (no job is left behind).
        """
        if self._shared is not None:  # (a cluster's numbers come from its store)
            await self._reserve_number()
        try:
            if job_token:
                earlier = await self.jobs.earlier(identity, job_token)
                if earlier is not None:
                    if earlier in self._adding:  # not acknowledged before it is stored
                        await self._until_added(earlier)
                    return earlier, self.jobs.live(earlier)
            return await self._submit(project, params, doc_variables, identity, job_token,
                                      placement)
        except TokenTaken as exc:  # another node stored a job with this token first
            return exc.transaction_id, self.jobs.live(exc.transaction_id)

    async def _submit(self, project: str, params: Mapping[str, str],
                      doc_variables: Mapping[str, str], identity: str, job_token: str | None,
                      placement: Placement | None) -> tuple[str, Job | None]:
        handler = self._runner.handlers.get(project)
        if handler is None:
            raise RequestError(Reply.UNKNOWN_PROJECT, clip(project, 80))
        if handler.check is not None:
            handler.check(params)
        queue = self._queue_for(placement.queue if placement else None, handler)
        self._admit()
        now = time.time()
        # The handler's own project name (thousands of jobs may wait, each with
        # its record), and one empty dict for all jobs without variables: a
        # record's dicts are replaced, never changed (its copies share them too).
        record = JobRecord(self._next_transaction_id(), handler.project,
                           dict(params) if params else _NO_VARIABLES,
                           dict(doc_variables) if doc_variables else _NO_VARIABLES,
                           identity=identity, job_token=job_token or None,
                           worker=self.machine_name, created=now)
        record.queue = queue
        more_lines = self._placed(record, placement, now)
        if self._shared is None and not self._store.durable:  # (nothing to wait for)
            job = self._queue_new(self._adopt_new(record, more_lines), True)
        else:
            job = await self._accept(record, *more_lines)
        # (in a cluster, a job this node does not run is only in the store)
        return record.transaction_id, job if self.jobs.live(job.transaction_id) is job else None

    def _admit(self) -> None:
        """Refuse a new job while stopping, or when too many jobs wait.

        Raises:
            RequestError: SERVER_BUSY.
        """
        if not self._accepting:
            raise RequestError(Reply.SERVER_BUSY, "the server is shutting down")
        limit = self._config.max_queued_jobs
        # (jobs not due yet count too: each is held in memory all the same)
        if limit and self.queued_count + len(self._due) >= limit:
            raise RequestError(Reply.SERVER_BUSY, f"{limit} jobs are already waiting")

    async def _accept(self, record: JobRecord, *more_lines: bytes) -> Job:
        """Make a new job of ``record``, store it, and queue it (or hold it until due)."""
        job = self._adopt_new(record, more_lines)
        held = True
        if self._shared is not None:
            held = await self._add_shared(job)
        elif self._store.durable:  # a store that keeps nothing has nothing to wait for
            await self._add(job)
        return self._queue_new(job, held)

    def _adopt_new(self, record: JobRecord, more_lines: tuple[bytes, ...]) -> Job:
        """The live job of a new ``record``, with its first lines."""
        job = self._adopt(record)
        job.stream.seed(self._machine_line)
        for line in more_lines:
            job.stream.seed(line)
        return job

    def _queue_new(self, job: Job, held: bool) -> Job:
        """A new job is stored (``held``: by this node): log its first events, and
        queue it (or hold it until due)."""
        for event in job.record.history:
            self.jobs.log_event(job, event)
        if not held:  # in the store for any node to claim
            return job
        # Cancelled or suspended while it was being stored: not queued.
        if job.state is JobState.QUEUED:
            self._runner.enqueue(job)
        elif job.state is JobState.CREATED:
            self._due.add(job)
        return job

    async def _add(self, job: Job,
                   add: Callable[[Recordable], Awaitable[None]] | None = None) -> None:
        """Store a new job (with ``add``: the store's by default); if that fails,
        forget it (its submit is refused).  A submit of the same job token
        meanwhile waits for the outcome."""
        transaction_id = job.transaction_id
        self._adding[transaction_id] = None
        try:
            await (add or self._store.add)(job)
        except BaseException as exc:
            self.jobs.forget(transaction_id)
            for waiter in self._adding.pop(transaction_id) or ():
                if not waiter.done():
                    waiter.set_exception(exc)
            raise
        for waiter in self._adding.pop(transaction_id) or ():
            if not waiter.done():
                waiter.set_result(None)

    async def _until_added(self, transaction_id: str) -> None:
        waiters = self._adding[transaction_id]
        if waiters is None:
            waiters = self._adding[transaction_id] = []
        waiter = asyncio.get_running_loop().create_future()
        waiters.append(waiter)
        await waiter

    # -- jobs -------------------------------------------------------------------

    def _adopt(self, record: JobRecord) -> Job:
        job = Job(record, self._loop or asyncio.get_running_loop())
        if self._store.durable:
            job.stream.durable = record.line_count
        job.on_change = self._on_change
        job.on_event = self._on_event
        job.stream.counters = self.jobs.counters
        self.jobs.add(job)
        return job

    def _next_transaction_id(self) -> str:
        if self._shared is not None:  # (_reserve_number has taken one)
            number, self._spare_number = self._spare_number, None
            if number is None:
                raise RequestError(Reply.SERVER_BUSY, "no transaction number at hand")
            return f"T{number:07d}"
        if self._last_number >= MAX_TRANSACTION_NUMBER:
            raise RequestError(Reply.SERVER_BUSY, "transaction numbers are exhausted")
        self._last_number += 1
        return f"T{self._last_number:07d}"
