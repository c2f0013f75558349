"""The job engine: accepts jobs, runs at most ``max_running`` at once, records their ends.

A submitted job is stored, then started at once if a slot is free, otherwise
queued in FIFO order; each job that ends starts the next.  There is no
scheduler task: starting happens on submit, on resume and on completion.  An
async handler runs as a task on the loop; a plain function runs in a worker
thread.  Every job ends through ``_finish``, which records exactly one
completion line and the ``Transaction ... ended`` line and closes the stream.

Live jobs (queued, running, suspended, and the finished ones a memory store keeps)
are ``Job`` objects in the ``JobDirectory``; with a durable store a finished job leaves
memory once it is stored, and lookups fall back to the store.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import functools
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from .codes import Reply, Status
from .config import Config
from .errors import JobFailed, RequestError
from .handlers import Handler
from .directory import JobDirectory
from .job import RETRY_EVENT, Job, TimeLimit
from .lines import clip, format_line
from .records import HistoryEvent, JobRecord
from .states import JobState, Outcome, can_transition
from .store import Recordable, Store

__all__ = ["Engine"]

log = logging.getLogger("jobmonitor.engine")

MAX_TRANSACTION_NUMBER = 9_999_999
#: How long a cancelled job may take to stop before it is abandoned.
CANCEL_WAIT_S = 5.0
#: How often finished jobs older than ``keep_days`` are deleted.
PURGE_INTERVAL_S = 3600.0


class Engine:
    """Runs jobs for one server."""

    def __init__(self, handlers: Mapping[str, Handler], config: Config, store: Store) -> None:
        self._handlers = dict(handlers)
        self._config = config
        self._store = store
        #: Every job by transaction ID (and client key), live or stored.
        self.jobs = JobDirectory(store)
        # Every job's hooks, as bound methods made once (one each per job would be
        # 128 bytes more per waiting job).  A store that keeps nothing needs no word
        # of changes.
        self._on_change = store.changed if store.durable else None
        self._on_event = self.jobs.log_event
        self._queue: collections.deque[Job] = collections.deque()
        #: Failed jobs waiting out their delay before they are queued to run again.
        self._delayed: dict[Job, asyncio.TimerHandle] = {}
        #: Jobs whose first commit is under way: what a same-token submit awaits.
        self._adding: dict[str, list[asyncio.Future[None]] | None] = {}
        self._running: dict[Job, asyncio.Future[Any]] = {}
        self._last_number = 0
        self._accepting = False
        self._starting = False
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._purger: asyncio.Task[None] | None = None
        self._hurry = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None  # set by start()
        self.machine_name = config.machine_name or socket.gethostname()
        # Every stream's first line: formatted once, shared by all jobs.
        self._machine_line = format_line("J", Status.INFO, f"Machine name: {self.machine_name}")

    # -- life cycle -----------------------------------------------------------

    async def start(self) -> None:
        """Open the store, recover unfinished jobs, and start running jobs."""
        self._loop = asyncio.get_running_loop()
        self._store.on_persisted = self._persisted
        recovery = await self._store.open()
        self._last_number = recovery.last_number
        self.jobs.seed_task_log(recovery.recent_events)
        self._executor = self._new_executor()
        for record in recovery.unfinished:
            self._recover(record)
        self._accepting = self._starting = True
        if self._config.keep_days > 0:
            self._purger = asyncio.get_running_loop().create_task(self._purge_loop())
        self._start_ready()

    async def stop(self, grace_s: float) -> None:
        """Stop starting jobs, give running ones ``grace_s``, cancel the rest, close the store.

        With a durable store, queued jobs stay queued for the next start and
        running jobs of ``retry_on_restart`` handlers are left to recovery.
        """
        self._accepting = False
        if self._purger is not None:
            self._purger.cancel()
        self._notify_live(f"Server stopping: running jobs have {grace_s:g} s to finish")
        if not self._store.durable:  # no next start to wait for: queued, delayed, suspended
            for job in self.jobs.live_jobs():
                if not job.state.is_final and job not in self._running:
                    self.cancel(job)
        for timer in self._delayed.values():  # (a durable store keeps them queued)
            timer.cancel()
        self._delayed.clear()
        await self._drain_running(grace_s, keep_retryable=self._store.durable)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        await self._store.close()

    async def restart(self, grace_s: float, handlers: Mapping[str, Handler]) -> None:
        """Let running jobs finish within ``grace_s`` (cancel the rest), swap in
        ``handlers``, and start again (unless the server began to stop
        meanwhile); queued jobs keep their place."""
        self._starting = False
        self._notify_live(f"Job engine restarting: running jobs have {grace_s:g} s to finish")
        await self._drain_running(grace_s, keep_retryable=False)
        self._handlers = dict(handlers)
        if self._accepting:  # else the server began to stop meanwhile: start nothing
            self._starting = True
            self._start_ready()

    def _new_executor(self) -> concurrent.futures.ThreadPoolExecutor:
        return concurrent.futures.ThreadPoolExecutor(
            max_workers=self._config.max_running, thread_name_prefix="jobmonitor-job")

    def _notify_live(self, notice: str) -> None:
        for job in self.jobs.live_jobs():
            if not job.state.is_final:
                job._record_status(Status.NOTICE, notice)

    def hurry(self) -> None:
        """Stop waiting for running jobs: cancel them now (a second signal)."""
        self._hurry.set()

    async def _drain_running(self, grace_s: float, *, keep_retryable: bool) -> None:
        self._starting = False
        await self._wait_running(grace_s, hurriable=True)
        for job in list(self._running):
            if keep_retryable and self._handler(job).retry_on_restart:
                job._leave_to_recovery = True
            self.cancel(job)
        await self._wait_running(CANCEL_WAIT_S)
        if self._running and self._executor is not None:
            # Its threads may still be busy with abandoned jobs: the jobs to come
            # get new ones (the old threads end when their handlers return).
            self._executor.shutdown(wait=False)
            self._executor = self._new_executor()
        for job in list(self._running):
            # A blocking handler that never calls the Job API cannot be stopped;
            # its monitors still get their ending, and its thread is abandoned.
            log.warning("job %s did not stop when cancelled; abandoning it", job.transaction_id)
            self._running.pop(job)
            self._end(job, Outcome.CANCELLED)

    async def _wait_running(self, timeout_s: float, *, hurriable: bool = False) -> None:
        """Wait until no job runs or ``timeout_s`` passes; if ``hurriable``, also
        until ``hurry`` is called.  Cancelled jobs always get their ``timeout_s``
        to stop: a hurried server still ends them in order."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        hurry = loop.create_task(self._hurry.wait()) if hurriable else loop.create_future()
        try:
            while self._running and not hurry.done() and loop.time() < deadline:
                await asyncio.wait([*self._running.values(), hurry],
                                   timeout=deadline - loop.time(),
                                   return_when=asyncio.FIRST_COMPLETED)
        finally:
            hurry.cancel()

    # -- counts ---------------------------------------------------------------------

    @property
    def queued_count(self) -> int:
        """Jobs waiting to run: in the queue, or waiting out a retry's delay."""
        return len(self._queue) + len(self._delayed)

    @property
    def running_count(self) -> int:
        return len(self._running)

    def handler_names(self) -> list[str]:
        return sorted(self._handlers)

    # -- commands ---------------------------------------------------------------

    async def submit(self, project: str, params: Mapping[str, str],
                     doc_variables: Mapping[str, str], *, identity: str = "anonymous",
                     job_token: str | None = None) -> tuple[str, Job | None]:
        """Create, store and queue (or start) a job; return its transaction ID and
        the live job (None for an earlier, finished job with the same token).

        Raises:
            RequestError: UNKNOWN_PROJECT; whatever the handler's ``check`` raises;
            SERVER_BUSY while shutting down, when the queue is full, or when
            transaction numbers are exhausted.
        """
        if job_token:
            earlier = await self.jobs.earlier(identity, job_token)
            if earlier is not None:
                if earlier in self._adding:  # not acknowledged before it is stored
                    await self._until_added(earlier)
                return earlier, self.jobs.live(earlier)
        handler = self._handlers.get(project)
        if handler is None:
            raise RequestError(Reply.UNKNOWN_PROJECT, clip(project, 80))
        if handler.check is not None:
            handler.check(params)
        if not self._accepting:
            raise RequestError(Reply.SERVER_BUSY, "the server is shutting down")
        limit = self._config.max_queued_jobs
        if limit and self.queued_count >= limit:
            raise RequestError(Reply.SERVER_BUSY, f"{limit} jobs are already waiting")
        now = time.time()
        record = JobRecord(self._next_transaction_id(), project, dict(params),
                           dict(doc_variables), identity=identity, job_token=job_token or None,
                           status=JobState.QUEUED, worker=self.machine_name, created=now,
                           updated=now, history=[HistoryEvent("job", "queued", now)])
        job = self._adopt(record)
        job.stream.seed(self._machine_line)
        if self._store.durable:  # a store that keeps nothing has nothing to wait for
            await self._add(job)
        self.jobs.log_event(job, record.history[0])
        # Cancelled or suspended while it was being stored: not queued.
        if job.state is JobState.QUEUED:
            self._queue.append(job)
            self._start_ready()
        return job.transaction_id, job

    async def _add(self, job: Job) -> None:
        """Store a new job; if that fails, forget it (its submit is refused).  A
        submit of the same job token meanwhile waits for the outcome."""
        transaction_id = job.transaction_id
        self._adding[transaction_id] = None
        try:
            await self._store.add(job)
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
        waiter = self._loop.create_future()
        waiters.append(waiter)
        await waiter

    def cancel(self, job: Job) -> None:
        """Cancel a queued, suspended or running job.

        A queued job ends at once; an async job at its next await; a job in a
        thread at its next call to the ``Job`` API.  A job being stopped for its
        time limit says so and ends cancelled (not failed, not run again).

        Raises:
            RequestError: INVALID_STATE when the job has already ended.
        """
        self._check(job, JobState.CANCELLED)
        if job._cancel_requested:
            limit = job._time_limit
            if limit is not None and limit.timed_out:  # being stopped for its time limit:
                limit.timed_out = False  # now it ends cancelled, and is not run again
                job.error(limit.reason)
            return
        job._cancel_requested = True
        job._wake()
        task = self._running.get(job)
        if task is None:
            if job in self._queue:
                self._queue.remove(job)
            self._undelay(job)
            self._finish(job, Outcome.CANCELLED)
        elif self._handler(job).is_async:
            task.cancel()

    def suspend(self, job: Job) -> str:
        """Suspend a queued job at once, or a running one at its next checkpoint
        (at once inside ``Job.pausable``).

        Returns the reply text, which says which of the two happened.

        Raises:
            RequestError: INVALID_STATE when the job is not queued or running.
        """
        self._check(job, JobState.SUSPENDED)
        if job not in self._running:  # queued, or still being stored
            if job in self._queue:
                self._queue.remove(job)
            self._undelay(job)
            job._set_state(JobState.SUSPENDED, "suspended")
            job._record_status(Status.SUSPENDED)
            return f"{job.transaction_id} suspended"
        job._suspend_requested = True
        if job._pauser is not None:
            job._pause()
            return f"{job.transaction_id} suspended"
        return f"{job.transaction_id} suspend requested"

    def resume(self, job: Job) -> str:
        """Resume a suspended job.

        Raises:
            RequestError: INVALID_STATE when the job is not suspended.
        """
        if job.state is not JobState.SUSPENDED:
            raise RequestError(Reply.INVALID_STATE,
                               f"{job.transaction_id} is {job.state.value}, not Suspended")
        job._record_status(Status.RESUMED)
        if job in self._running:
            job._set_state(JobState.PROCESSING, "resumed")
            job._wake()
        else:
            job._set_state(JobState.QUEUED, "resumed")
            if job.transaction_id not in self._adding:  # else its submit queues it
                self._queue.append(job)
                self._start_ready()
        return f"{job.transaction_id} resumed"

    async def delete(self, transaction_id: str) -> None:
        """Delete a finished job's record and lines.

        Raises:
            RequestError: UNKNOWN_TRANSACTION; INVALID_STATE while it is active.
        """
        record = await self.jobs.record(transaction_id)
        if not record.status.is_final:
            raise RequestError(Reply.INVALID_STATE,
                               f"{transaction_id} is {record.status.value}; cancel it first")
        self.jobs.forget(transaction_id)
        await self._store.flush()
        await self._store.delete(transaction_id)

    # -- running ------------------------------------------------------------------

    def _check(self, job: Job, new: JobState) -> None:
        if not can_transition(job.state, new):
            raise RequestError(Reply.INVALID_STATE,
                               f"{job.transaction_id} is {job.state.value}")

    def _handler(self, job: Job) -> Handler:
        return self._handlers[job.project]

    def _adopt(self, record: JobRecord) -> Job:
        job = Job(record, self._loop)
        if self._store.durable:
            job.stream.durable = record.line_count
        job.on_change = self._on_change
        job.on_event = self._on_event
        self.jobs.add(job)
        return job

    def _next_transaction_id(self) -> str:
        if self._last_number >= MAX_TRANSACTION_NUMBER:
            raise RequestError(Reply.SERVER_BUSY, "transaction numbers are exhausted")
        self._last_number += 1
        return f"T{self._last_number:07d}"

    def _start_ready(self) -> None:
        while self._starting and self._queue and len(self._running) < self._config.max_running:
            job = self._queue.popleft()
            if job.project not in self._handlers:  # gone with a RestartServer's reload
                job.error(f"No handler for project {job.project!r} after the job modules "
                          f"were reloaded")
                self._finish(job, Outcome.FAILED)
                continue
            job.record.started = time.time()
            timeout_s = self._handlers[job.project].timeout_s
            if timeout_s is not None:  # (it starts with the state change below)
                job._time_limit = TimeLimit(self._loop, timeout_s,
                                            functools.partial(self._time_out, job))
            job._set_state(JobState.PROCESSING, "start")
            self._running[job] = self._loop.create_task(self._run(job))

    async def _run(self, job: Job) -> None:
        handler = self._handler(job)
        try:
            result = await self._call(handler, job)
            outcome = Outcome.CANCELLED if job._cancel_requested else _outcome_of(result)
        except asyncio.CancelledError:
            if not job._cancel_requested:
                raise
            outcome = Outcome.CANCELLED
        except JobFailed as exc:
            job.error(exc.reason, code=exc.code)
            outcome = Outcome.FAILED
        except Exception as exc:  # a handler's bug must not take the server down
            log.exception("job %s (%s) raised", job.transaction_id, job.project)
            job._record_status(Status.HANDLER_EXCEPTION, f"{type(exc).__name__}: {exc}")
            outcome = Outcome.FAILED
        finally:
            self._running.pop(job, None)
        limit = job._time_limit
        if limit is not None:
            limit.stop()
            if limit.timed_out and outcome is Outcome.CANCELLED:
                job.error(limit.reason)
                outcome = Outcome.FAILED
        if not (outcome is Outcome.FAILED and self._retry(job, handler)):
            self._end(job, outcome)
        self._start_ready()

    def _retry(self, job: Job, handler: Handler) -> bool:
        """Queue a failed job to run again if its handler's ``retries`` allow it
        (not while the server stops, nor once it was cancelled: it failed while
        it stopped, or after a restart abandoned it); return True if it was."""
        attempt = job.attempt
        limit = job._time_limit
        cancelled = job._cancel_requested and not (limit is not None and limit.timed_out)
        if (attempt > handler.retries or not self._accepting or job._leave_to_recovery
                or cancelled):
            return False
        delay = handler.retry_delay(attempt)
        job._cancel_requested = False  # (a time limit stops a job as a cancel does)
        job._time_limit = None
        job.record.started = None  # queued, not interrupted, if the server restarts now
        later = f", in {delay:g} s" if delay else ""
        job._record_status(Status.REQUEUED, f"Job queued to run again (attempt {attempt + 1} "
                                            f"of {handler.retries + 1}{later}).")
        job._set_state(JobState.QUEUED, RETRY_EVENT)
        if job._suspend_requested:  # asked for during the run: its end is a safe point
            job._suspend_requested = False
            job._set_state(JobState.SUSPENDED, "suspended")
            job._record_status(Status.SUSPENDED)
        elif delay:
            self._delayed[job] = self._loop.call_later(delay, self._requeue, job)
        else:
            self._queue.append(job)
        return True

    def _undelay(self, job: Job) -> None:
        """A job waiting out its delay was cancelled or suspended: stop its timer
        (left running, it would hold the job, and queue it early after a resume
        and another failure)."""
        timer = self._delayed.pop(job, None)
        if timer is not None:
            timer.cancel()

    def _requeue(self, job: Job) -> None:
        """A failed job's delay is over: queue it, unless it has left the wait
        (a cancel or a suspend stops the timer; see ``_undelay``)."""
        self._delayed.pop(job, None)
        if job.state is JobState.QUEUED and job not in self._queue and job not in self._running:
            self._queue.append(job)
            self._start_ready()

    def _time_out(self, job: Job) -> None:
        """A job used up its handler's ``timeout_s``: stop it as a cancel does (it
        then fails, see ``_run``); not a job already being cancelled."""
        if job.state.is_final or job._cancel_requested or job._time_limit is None:
            return
        job._time_limit.timed_out = True
        job._cancel_requested = True
        job._wake()
        task = self._running.get(job)
        handler = self._handlers.get(job.project)
        if task is not None and handler is not None and handler.is_async:
            task.cancel()

    def _end(self, job: Job, outcome: Outcome) -> None:
        """A job has stopped running: finish it, unless it is left to recovery."""
        if job._leave_to_recovery:
            job.stream.close()  # left running in the store: recovery runs it again
        else:
            self._finish(job, outcome)

    def _call(self, handler: Handler, job: Job) -> Awaitable[Any]:
        """The handler's awaitable: its coroutine itself (no extra frame per job), or
        its run in a worker thread."""
        if handler.is_async:
            return handler.func(job)  # type: ignore[return-value]
        return asyncio.get_running_loop().run_in_executor(self._executor, handler.func, job)

    def _finish(self, job: Job, outcome: Outcome) -> None:
        if job.state.is_final:
            return
        record = job.record
        record.outcome = outcome
        record.completed = time.time()
        # The two last lines never vary but for the transaction ID: made here, not
        # formatted from their texts each time.
        job.stream.extend([_COMPLETION_LINES[outcome],
                           _ENDED_HEAD + job.transaction_id.encode() + _ENDED_TAIL])
        job._set_state(outcome.state, _FINISH_EVENTS[outcome])
        job.stream.close()
        job.stream.on_flush = None  # no more lines; and no Job <-> stream cycle for the GC
        if not self._store.durable:
            self.jobs.keep_finished(job, self._config.max_finished_in_memory)
        # A job that succeeds is routine (thousands a second); the others are news.
        level = logging.DEBUG if outcome is Outcome.SUCCESS else logging.INFO
        if log.isEnabledFor(level):
            log.log(level, "job %s (%s) ended: %s", job.transaction_id, job.project,
                    outcome.value)

    # -- durability --------------------------------------------------------------------

    def _recover(self, record: JobRecord) -> None:
        job = self._adopt(record)
        handler = self._handlers.get(record.project)
        was_running = record.started is not None
        if handler is None:
            job.error(f"No handler for project {record.project!r} after a server restart")
            self._finish(job, Outcome.FAILED)
        elif not was_running:
            if record.status is JobState.QUEUED:
                self._queue_recovered(job, handler)
        elif handler.retry_on_restart:
            job._record_status(Status.INTERRUPTED)
            job._record_status(Status.REQUEUED)
            record.started = None
            job._set_state(JobState.QUEUED, "requeued")
            self._queue.append(job)
        else:
            job._record_status(Status.INTERRUPTED)
            self._finish(job, Outcome.FAILED)

    def _queue_recovered(self, job: Job, handler: Handler) -> None:
        """Queue a job that was waiting when the server stopped; one that was
        waiting out a retry's delay waits for what is left of it."""
        last = next((event for event in reversed(job.record.history) if event[0] == "job"), None)
        if last is not None and last[1] == RETRY_EVENT:
            due = last[2] + handler.retry_delay(job.attempt - 1)
            left = due - time.time()
            if left > 0:
                self._delayed[job] = self._loop.call_later(left, self._requeue, job)
                return
        self._queue.append(job)

    def when_stored(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once what has changed so far is stored: at the end of
        this loop turn, or with a durable store after its next commit."""
        if self._store.durable:
            self._store.call_when_stored(callback)
        else:
            self._loop.call_soon(callback)

    def _persisted(self, item: Recordable, stored_lines: int) -> None:
        if isinstance(item, Job):
            self.jobs.stored(item, stored_lines, self._config.max_lines_in_memory)

    async def purge_expired(self) -> int:
        """Delete finished jobs older than ``keep_days``; return how many the store had."""
        cutoff = time.time() - self._config.keep_days * 86400
        self.jobs.expire(cutoff)
        await self._store.flush()
        purged = await self._store.purge(cutoff)
        if purged:
            log.info("deleted %d jobs older than %g days", purged, self._config.keep_days)
        return purged

    async def _purge_loop(self) -> None:
        while True:
            try:
                await self.purge_expired()
            except Exception:
                log.exception("purging old jobs failed")
            await asyncio.sleep(PURGE_INTERVAL_S)


_COMPLETION_LINES = {outcome: format_line("J", outcome.status, outcome.status.text)
                     for outcome in Outcome}
_ENDED_HEAD, _ENDED_TAIL = (part.encode() for part in format_line(
    "J", Status.ENDED, Status.ENDED.text).decode().split("{transaction_id}"))

_FINISH_EVENTS = {
    Outcome.SUCCESS: "complete",
    Outcome.PARTIAL: "complete",
    Outcome.FAILED: "failed",
    Outcome.CANCELLED: "cancelled",
}


def _outcome_of(result: Any) -> Outcome:
    """Map a handler's return value to an outcome."""
    if result is None:
        return Outcome.SUCCESS
    if isinstance(result, Outcome):
        return result
    if isinstance(result, str):
        try:
            return Outcome(result.lower())
        except ValueError:
            pass
    raise TypeError(f"a job handler must return an Outcome or None, not {result!r}")

