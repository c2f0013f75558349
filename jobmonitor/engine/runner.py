"""Running jobs: at most ``max_running`` at once, by queue and priority, each to its end.

The engine decides what a command does to a job; this module runs them.  A
job waits in its queue's line in ``lines`` (``queues.WaitingLines``: by
priority, then age; each queue with its own limit and pause), or in
``_delayed``, waiting out a retry's delay, then queued, until a slot is
free.  There is no scheduler task: starting
happens whenever a job is queued or one ends (``start_ready``).  An async
handler runs as a task on the loop; a plain function runs in a worker thread
(one that does not stop when cancelled is abandoned there: see ``drain``).
A handler's ``timeout_s`` stops the job as a cancel does, and the job fails;
a failed job runs again while its handler's ``retries`` allow.  Every job
ends through ``finish``, which records exactly one completion line and the
``Transaction ... ended`` line and closes the stream.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from ..wire.codes import Status
from ..config import Config
from .directory import JobDirectory
from ..errors import JobFailed
from .handlers import Handler
from .job import RETRY_EVENT, START_EVENT, Job
from .queues import WaitingLines
from ..wire.lines import format_line
from ..wire.states import JobState, Outcome
from .time_limit import TimeLimit

__all__ = ["JobRunner"]

log = logging.getLogger("jobmonitor.engine")

#: How long a cancelled job may take to stop before it is abandoned.
CANCEL_WAIT_S = 5.0


class JobRunner:
    """The queue, the running jobs and their ends, for one engine."""

    def __init__(self, handlers: Mapping[str, Handler], config: Config, jobs: JobDirectory,
                 *, durable: bool) -> None:
        #: By project; replaced whole by a restart.
        self.handlers = dict(handlers)
        #: Queued jobs are started (not while the engine is stopped or restarting).
        self.starting = False
        #: Failed jobs are queued to run again here (not once the server is stopping:
        #: then only a durable store keeps them queued, for the next start).
        self.retrying = False
        self._config = config
        self._jobs = jobs
        self._durable = durable
        #: The queues' waiting lines (issue 20: was one FIFO deque).
        self.lines = WaitingLines(config)
        #: Failed jobs waiting out their delay before they are queued to run again.
        self._delayed: dict[Job, asyncio.TimerHandle] = {}
        self._running: dict[Job, asyncio.Future[Any]] = {}
        #: The handler each running job started with (a reload may replace its
        #: project's, or remove it, while it runs).
        self._started_with: dict[Job, Handler] = {}
        #: The worker-thread runs of the running plain-function jobs.
        self._threads: dict[Job, concurrent.futures.Future[Any]] = {}
        #: Runs abandoned because their handlers did not stop when cancelled: the
        #: thread goes on until the handler returns (Python cannot stop a thread).
        self._abandoned: dict[concurrent.futures.Future[Any], Job] = {}
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._hurry = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None  # set by open()

    def open(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._executor = self._new_executor()

    def close(self) -> None:
        """Drop the jobs still waiting for a worker thread (the server is stopping)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    def configure(self, config: Config) -> None:
        """Use these settings from now on (a reload): a new ``max_running`` gets a
        pool of as many threads (the old one's go on with the jobs they run)."""
        resized = config.max_running != self._config.max_running
        self._config = config
        self.lines.configure(config)
        if resized and self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = self._new_executor()
        self.start_ready()

    def _new_executor(self) -> concurrent.futures.ThreadPoolExecutor:
        return concurrent.futures.ThreadPoolExecutor(
            max_workers=self._config.max_running, thread_name_prefix="jobmonitor-job")

    # -- where jobs are -------------------------------------------------------------

    @property
    def queued_count(self) -> int:
        """Jobs waiting to run: in the queue, or waiting out a retry's delay."""
        return self.lines.count + len(self._delayed)

    def delayed_jobs(self) -> list[Job]:
        """The jobs waiting out a retry's delay."""
        return list(self._delayed)

    @property
    def running_count(self) -> int:
        return len(self._running)

    def is_running(self, job: Job) -> bool:
        return job in self._running

    def handler(self, job: Job) -> Handler:
        """The handler a running job started with, else its project's."""
        return self._started_with.get(job) or self.handlers[job.project]

    def enqueue(self, job: Job) -> None:
        """Queue a job and start what can start."""
        self.lines.push(job)
        self.start_ready()

    def append(self, job: Job) -> None:
        """Queue a job without starting anything (recovery, before the start)."""
        self.lines.push(job)

    def withdraw(self, job: Job) -> None:
        """Take a job that is not running out of the queue, or out of its retry's
        delay (its timer, left running, would hold the job, and queue it early
        after a resume and another failure)."""
        self.lines.remove(job)
        timer = self._delayed.pop(job, None)
        if timer is not None:
            timer.cancel()

    def queue_recovered(self, job: Job, handler: Handler) -> None:
        """Queue a job that was waiting when the server stopped; one that was
        waiting out a retry's delay waits for what is left of it."""
        last = next((event for event in reversed(job.record.history) if event[0] == "job"), None)
        if last is not None and last[1] == RETRY_EVENT:
            due = last[2] + handler.retry_delay(job.attempt - 1)
            left = due - time.time()
            if left > 0:
                self._delay(job, left)
                return
        self.lines.push(job)

    def clear_delays(self) -> None:
        """Stop every retry's timer (the server is stopping: a durable store keeps
        those jobs queued for the next start)."""
        for timer in self._delayed.values():
            timer.cancel()
        self._delayed.clear()

    def _delay(self, job: Job, delay_s: float) -> None:
        assert self._loop is not None
        self._delayed[job] = self._loop.call_later(delay_s, self._requeue, job)

    def _requeue(self, job: Job) -> None:
        """A failed job's delay is over: queue it, unless it has left the wait
        (a cancel or a suspend stops the timer; see ``withdraw``)."""
        self._delayed.pop(job, None)
        if job.state is JobState.QUEUED and job not in self.lines and job not in self._running:
            self.enqueue(job)

    # -- running --------------------------------------------------------------------

    def start_ready(self) -> None:
        loop = self._loop
        lines = self.lines
        while self.starting and lines.count and len(self._running) < self._config.max_running:
            assert loop is not None  # (the engine starts jobs only once it has opened us)
            job = lines.pop_next()
            if job is None:  # every queue with jobs waiting is paused or at its limit
                break
            handler = self.handlers.get(job.project)
            if handler is None:  # gone with a RestartServer's reload
                job.error(f"No handler for project {job.project!r} after the job modules "
                          f"were reloaded")
                self.finish(job, Outcome.FAILED)
                continue
            job.record.started = time.time()
            if handler.timeout_s is not None:  # (it starts with the state change below)
                job._time_limit = TimeLimit(loop, handler.timeout_s,
                                            functools.partial(self._time_out, job))
            job._set_state(JobState.PROCESSING, START_EVENT)
            self._started_with[job] = handler
            lines.started(job)
            self._running[job] = loop.create_task(self._run(job))

    async def _run(self, job: Job) -> None:
        handler = self.handler(job)
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
            if self._running.pop(job, None) is not None:
                self.lines.stopped(job)
            self._started_with.pop(job, None)
            if not handler.is_async:
                self._threads.pop(job, None)
        limit = job._time_limit
        if limit is not None:
            limit.stop()
            if limit.timed_out and outcome is Outcome.CANCELLED:
                job.error(limit.reason)
                outcome = Outcome.FAILED
        if not (outcome is Outcome.FAILED and self._retry(job, handler)):
            self._end(job, outcome)
        self.start_ready()

    def _call(self, handler: Handler, job: Job) -> Awaitable[Any]:
        """The handler's awaitable: its coroutine itself (no extra frame per job), or
        its run in a worker thread."""
        if handler.is_async:
            return handler.func(job)  # type: ignore[return-value]
        assert self._executor is not None and self._loop is not None  # (opened)
        # run_in_executor's two steps, keeping the thread's own future: it says
        # when the handler has returned, even once the loop is gone.
        run = self._threads[job] = self._executor.submit(handler.func, job)
        return asyncio.wrap_future(run, loop=self._loop)

    def _retry(self, job: Job, handler: Handler) -> bool:
        """Queue a failed job to run again if its handler's ``retries`` allow it
        (not once it was cancelled: it failed while it stopped, or after a
        restart abandoned it); return True if it was.

        While the server stops, a durable store keeps the job queued, and the
        next start runs it after what is left of its delay; without one,
        nothing would run it again, so it fails.
        """
        attempt = job.attempt
        limit = job._time_limit
        cancelled = job._cancel_requested and not (limit is not None and limit.timed_out)
        if (attempt > handler.retries or job._leave_to_recovery or cancelled
                or not (self.retrying or self._durable)):
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
        elif self.retrying:
            if delay:
                self._delay(job, delay)
            else:
                self.lines.push(job)
        # (else the server is stopping: the store keeps it queued, as it keeps the
        # jobs that were queued; their monitors re-attach after the restart)
        return True

    def _time_out(self, job: Job) -> None:
        """A job used up its handler's ``timeout_s``: stop it as a cancel does (it
        then fails, see ``_run``); not a job already being cancelled."""
        if job.state.is_final or job._cancel_requested or job._time_limit is None:
            return
        job._time_limit.timed_out = True
        job._cancel_requested = True
        job._wake()
        task = self._running.get(job)
        handler = self._started_with.get(job)
        if task is not None and handler is not None and handler.is_async:
            task.cancel()

    # -- ending ---------------------------------------------------------------------

    def cancel(self, job: Job) -> None:
        """Cancel a queued, suspended or running job (the engine has checked that it
        may be): see ``Engine.cancel``."""
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
            self.withdraw(job)
            self.finish(job, Outcome.CANCELLED)
        elif self.handler(job).is_async:
            task.cancel()

    def _end(self, job: Job, outcome: Outcome) -> None:
        """A job has stopped running: finish it, unless it is left to recovery."""
        if job._leave_to_recovery:
            job.stream.close()  # left running in the store: recovery runs it again
        else:
            self.finish(job, outcome)

    def finish(self, job: Job, outcome: Outcome) -> None:
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
        if not self._durable:
            self._jobs.keep_finished(job, self._config.max_finished_in_memory)
        # A job that succeeds is routine (thousands a second); the others are news.
        level = logging.DEBUG if outcome is Outcome.SUCCESS else logging.INFO
        if log.isEnabledFor(level):
            log.log(level, "job %s (%s) ended: %s", job.transaction_id, job.project,
                    outcome.value)

    # -- stopping -------------------------------------------------------------------

    def hurry(self) -> None:
        """Stop waiting for running jobs: cancel them now (a second signal)."""
        self._hurry.set()

    async def drain(self, grace_s: float, *, keep_retryable: bool) -> None:
        """Start nothing more; give running jobs ``grace_s`` (less if hurried), then
        cancel them, and abandon those that do not stop within ``CANCEL_WAIT_S``.
        With ``keep_retryable``, a ``retry_on_restart`` job is left to recovery."""
        self.starting = False
        await self._wait_running(grace_s, hurriable=True)
        for job in list(self._running):
            if keep_retryable and self.handler(job).retry_on_restart:
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
            self.lines.stopped(job)
            run = self._threads.pop(job, None)
            if run is not None:
                self._abandoned[run] = job
            self._end(job, Outcome.CANCELLED)
        for run in [run for run in self._abandoned if run.done()]:
            del self._abandoned[run]  # (a restart's, returned since)

    def stuck_jobs(self) -> list[Job]:
        """The jobs whose handlers still run: running, or abandoned in a thread
        that has not returned.  Safe to call from another thread."""
        abandoned = [job for run, job in list(self._abandoned.items()) if not run.done()]
        return [*list(self._running), *abandoned]

    def when_threads_end(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once every abandoned thread has returned: at once if
        none is left, else in the last one to return (the loop may be gone by then)."""
        left = [run for run in list(self._abandoned) if not run.done()]
        if not left:
            callback()
            return
        count = [len(left)]
        lock = threading.Lock()

        def one_ended(_: object) -> None:
            with lock:
                count[0] -= 1
                last = count[0] == 0
            if last:
                callback()

        for run in left:
            run.add_done_callback(one_ended)

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
