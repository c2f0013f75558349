"""Running jobs: at most ``max_running`` at once, by queue and priority, each to its end.

The engine decides what a command does to a job; this module runs them.  A
job waits in its queue's line in ``lines`` (``queues.WaitingLines``: by
priority, then age; each queue with its own limit and pause), or in
``_delayed``, waiting out a retry's delay, then queued, until a slot is
free.  There is no scheduler task: starting
happens whenever a job is queued or one ends (``start_ready``).  Each start
makes a ``Run`` (``run``), which holds what that run is asked (cancel,
suspend, its time limit) until its handler ends.  An async handler runs as a
task on the loop; a plain function runs in a worker thread (one that does not
stop when cancelled is abandoned there: see ``drain``).  A failed job runs
again while its handler's ``retries`` allow.  Every job ends through
``finish`` (``lifecycle.finish``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from ..config import Config
from ..errors import JobFailed
from ..wire.states import JobState, Outcome
from . import lifecycle
from .directory import JobDirectory
from .handlers import Handler
from .history import RETRY_EVENT, last_job_event
from .job import Job
from .lifecycle import CancelReason
from .pacing import paced
from .queues import WaitingLines
from .run import Run

__all__ = ["JobRunner", "CANCEL_WAIT_S"]

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
        self._running: dict[Job, Run] = {}
        #: Runs abandoned because their handlers did not stop when cancelled: the
        #: thread goes on until the handler returns (Python cannot stop a thread).
        self._abandoned: dict[concurrent.futures.Future[Any], Job] = {}
        # (No thread starts before the first job is handed to it.)
        self._executor = self._new_executor()
        self._hurry = asyncio.Event()
        #: The engine's loop, once it has started (see ``Engine.start``).
        self.loop: asyncio.AbstractEventLoop | None = None
        #: Called (on the loop) when a run is over and its slot is free, after the
        #: queued jobs have had their start (a cluster's node claims more then).
        self.on_slot_free: Callable[[], None] | None = None

    def close(self) -> None:
        """Drop the jobs still waiting for a worker thread (the server is stopping)."""
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

    @property
    def max_running(self) -> int:
        return self._config.max_running

    def is_running(self, job: Job) -> bool:
        return job in self._running

    def run_of(self, job: Job) -> Run | None:
        """The job's run, while its handler runs."""
        return self._running.get(job)

    def enqueue(self, job: Job) -> None:
        """Queue a job and start what can start."""
        lines = self.lines
        if (self.starting and len(self._running) < self._config.max_running
                and lines.may_start_now(job)):
            # The usual case, nothing waiting: the job would be queued only to be
            # taken straight back (start_ready's loop, for one job).
            self._start(job, self.loop or asyncio.get_running_loop())
            return
        lines.push(job)
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
        last = last_job_event(job.record)
        if last is not None and last.status == RETRY_EVENT:
            due = job.record.retry_at  # (stored since schema 2 of a cluster's store)
            if due is None:
                due = last.timestamp + handler.retry_delay(job.attempt - 1)
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
        loop = asyncio.get_running_loop()
        self._delayed[job] = loop.call_later(delay_s, self._requeue, job)

    def _requeue(self, job: Job) -> None:
        """A failed job's delay is over: queue it, unless it has left the wait
        (a cancel or a suspend stops the timer; see ``withdraw``)."""
        self._delayed.pop(job, None)
        if job.state is JobState.QUEUED and job not in self.lines and job not in self._running:
            self.enqueue(job)

    # -- running --------------------------------------------------------------------

    def start_ready(self) -> None:
        """Start queued jobs while slots are free (on the loop)."""
        lines = self.lines
        if not (self.starting and lines.count):
            return
        loop = self.loop or asyncio.get_running_loop()
        while self.starting and lines.count and len(self._running) < self._config.max_running:
            job = lines.pop_next()
            if job is None:  # every queue with jobs waiting is paused or at its limit
                break
            self._start(job, loop)

    def _start(self, job: Job, loop: asyncio.AbstractEventLoop) -> None:
        """Start a job taken from (or not put in) its line."""
        handler = self.handlers.get(job.project)
        if handler is None:  # gone with a RestartServer's reload
            job.error(f"No handler for project {job.project!r} after the job modules "
                      f"were reloaded")
            self.finish(job, Outcome.FAILED)
            return
        lifecycle.start(job)
        if job.record.retry_at is not None:  # (its delay is over)
            job.record.retry_at = None
        run = self._running[job] = job.run = Run(job, handler, loop)
        self.lines.started(job)
        run.started(loop.create_task(self._run(run)))

    async def _run(self, run: Run) -> None:
        job = run.job
        try:
            run.begin()
            result = await self._call(run)
            outcome = Outcome.CANCELLED if run.cancel_requested else _outcome_of(result)
        except asyncio.CancelledError:
            if not run.cancel_requested:
                raise
            outcome = Outcome.CANCELLED
        except JobFailed as exc:
            job.error(exc.reason, code=exc.code)
            outcome = Outcome.FAILED
        except Exception as exc:  # a handler's bug must not take the server down
            log.exception("job %s (%s) raised", job.transaction_id, job.project)
            lifecycle.handler_raised(job, exc)
            outcome = Outcome.FAILED
        finally:
            if self._running.get(job) is run:  # (else it was abandoned)
                del self._running[job]
                self.lines.stopped(job)
        outcome = run.end(outcome)
        if not (outcome is Outcome.FAILED and self._retry(run)):
            self._end(run, outcome)
        if job.run is run:  # the handler has returned: no Job <-> Run cycle for the GC
            job.run = None
        self.start_ready()
        if self.on_slot_free is not None:
            self.on_slot_free()

    def _call(self, run: Run) -> Awaitable[Any]:
        """The handler's awaitable: its coroutine itself (no extra frame per job; with
        a durable store, paced to it), or its run in a worker thread."""
        handler = run.handler
        if handler.is_async:
            if self._durable:  # (its lines wait for the store: see pacing)
                return paced(handler.func(run.job), run.job.stream)
            return handler.func(run.job)
        # run_in_executor's two steps, keeping the thread's own future: it says
        # when the handler has returned, even once the loop is gone.
        run.thread = self._executor.submit(handler.func, run.job)
        return asyncio.wrap_future(run.thread)

    def _retry(self, run: Run) -> bool:
        """Queue a failed job to run again if its handler's ``retries`` allow it
        (not once it was cancelled: it failed while it stopped, or after a
        restart abandoned it); return True if it was.

        While the server stops, a durable store keeps the job queued, and the
        next start runs it after what is left of its delay; without one,
        nothing would run it again, so it fails.
        """
        job, handler = run.job, run.handler
        attempt = job.attempt
        if (attempt > handler.retries or run.leave_to_recovery or run.cancelled
                or job.state.is_final or not (self.retrying or self._durable)):
            return False
        delay = handler.retry_delay(attempt)
        later = f", in {delay:g} s" if delay else ""
        job.run = None  # the next run starts afresh
        lifecycle.retry(job, f"Job queued to run again (attempt {attempt + 1} of "
                             f"{handler.retries + 1}{later}).")
        # (stored with the job: a cluster's node claims it only once it is due)
        job.record.retry_at = time.time() + delay if delay else None
        if run.suspend_requested:  # asked for during the run: its end is a safe point
            lifecycle.suspend(job)
        elif self.retrying:
            if delay:
                self._delay(job, delay)
            else:
                self.lines.push(job)
        # (else the server is stopping: the store keeps it queued, as it keeps the
        # jobs that were queued; their monitors re-attach after the restart)
        return True

    # -- ending ---------------------------------------------------------------------

    def cancel(self, job: Job, reason: CancelReason = CancelReason.USER) -> None:
        """Cancel a queued, suspended or running job (the engine has checked that it
        may be): see ``Engine.cancel``."""
        run = self._running.get(job)
        if run is None:
            self.withdraw(job)
            self.finish(job, Outcome.CANCELLED, reason)
        else:
            run.cancel(reason)

    def _end(self, run: Run, outcome: Outcome) -> None:
        """A run is over: finish its job, unless it is left to recovery."""
        job = run.job
        if job.state.is_final:  # an abandoned run whose handler returned at last
            return
        if run.leave_to_recovery:
            lifecycle.leave_to_recovery(job)
        else:
            self.finish(job, outcome, run.cancel_reason)

    def finish(self, job: Job, outcome: Outcome,
               reason: CancelReason = CancelReason.USER) -> None:
        """End a job (``lifecycle.finish``), and let a store that keeps nothing
        forget the oldest finished jobs."""
        lifecycle.finish(job, outcome, reason)
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

    async def drain(self, grace_s: float, *, keep_retryable: bool,
                    reason: CancelReason = CancelReason.USER) -> None:
        """Start nothing more; give running jobs ``grace_s`` (less if hurried), then
        cancel them for ``reason``, and abandon those that do not stop within
        ``CANCEL_WAIT_S``.  With ``keep_retryable``, a ``retry_on_restart`` job is
        left to recovery."""
        self.starting = False
        await self._wait_running(grace_s, hurriable=True)
        for run in list(self._running.values()):
            if keep_retryable and run.handler.retry_on_restart:
                run.leave_to_recovery = True
            run.cancel(reason)
        await self._wait_running(CANCEL_WAIT_S)
        if self._running:
            # Its threads may still be busy with abandoned jobs: the jobs to come
            # get new ones (the old threads end when their handlers return).
            self._executor.shutdown(wait=False)
            self._executor = self._new_executor()
        for job, run in list(self._running.items()):
            # A blocking handler that never calls the Job API cannot be stopped;
            # its monitors still get their ending, and its thread is abandoned.
            log.warning("job %s did not stop when cancelled; abandoning it", job.transaction_id)
            del self._running[job]
            self.lines.stopped(job)
            if run.thread is not None:
                self._abandoned[run.thread] = job
            self._end(run, Outcome.CANCELLED)
        for thread in [thread for thread in self._abandoned if thread.done()]:
            del self._abandoned[thread]  # (a restart's, returned since)

    def stuck_jobs(self) -> list[Job]:
        """The jobs whose handlers still run: running, or abandoned in a thread
        that has not returned.  Safe to call from another thread."""
        abandoned = [job for thread, job in list(self._abandoned.items()) if not thread.done()]
        return [*list(self._running), *abandoned]

    def when_threads_end(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once every abandoned thread has returned: at once if
        none is left, else in the last one to return (the loop may be gone by then)."""
        left = [thread for thread in list(self._abandoned) if not thread.done()]
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

        for thread in left:
            thread.add_done_callback(one_ended)

    async def _wait_running(self, timeout_s: float, *, hurriable: bool = False) -> None:
        """Wait until no job runs or ``timeout_s`` passes; if ``hurriable``, also
        until ``hurry`` is called.  Cancelled jobs always get their ``timeout_s``
        to stop: a hurried server still ends them in order."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        hurry = loop.create_task(self._hurry.wait()) if hurriable else loop.create_future()
        try:
            while self._running and not hurry.done() and loop.time() < deadline:
                tasks = [run.task for run in self._running.values() if run.task is not None]
                await asyncio.wait([*tasks, hurry],
                                   timeout=deadline - loop.time(),
                                   return_when=asyncio.FIRST_COMPLETED)
        finally:
            hurry.cancel()


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
