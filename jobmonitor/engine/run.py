"""One run of a job: what it was asked, how it pauses, and how it is stopped.

The runner makes a ``Run`` when it starts a job and drops it when the handler
has returned (or has been abandoned).  Everything that belongs to this run and
not to the job lives here, in one place:

- a cancel asked for, and why (``CancelReason``): an async handler's task is
  cancelled; a handler in a worker thread gets ``CancelledError`` from its next
  call to the ``Job`` API;
- the handler's time limit (``TimeLimit``), which counts down only while the job
  runs, and whether it ran out: the run is then stopped as a cancel stops it,
  and ends failed with the handler's reason line;
- a suspend asked for: it takes effect at the handler's next checkpoint, or at
  once inside ``Job.pausable``, whose pause and resume callbacks it holds;
- being left to recovery: the server stops, and its next start runs the job
  again (``retry_on_restart`` with a durable store).

The job learns of its run through ``job.run`` (a ``job.JobRun``); every change
of the job's state is recorded through ``lifecycle``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

from ..wire.states import JobState, Outcome
from . import lifecycle
from .handlers import Handler
from .job import Job
from .lifecycle import CancelReason
from .time_limit import TimeLimit

__all__ = ["Run"]


class Run:
    """A job's run, from its start to its handler's end.

    Made for every job that starts, so it sets only what each run has: the
    rest are class-level defaults until something changes them.
    """

    #: The task that runs the handler (its coroutine, or its wait for a thread).
    task: asyncio.Future[Any] | None = None
    #: A plain-function handler's run in a worker thread.
    thread: concurrent.futures.Future[Any] | None = None
    cancel_requested = False
    #: Why it was cancelled (what its end says).
    cancel_reason = CancelReason.USER
    #: Stopped because its time limit ran out (a cancel while it stops clears it).
    timed_out = False
    #: A suspend waits for the next checkpoint (or ``pausable``).
    suspend_requested = False
    #: The server stops: end the run without finishing the job (see ``lifecycle``).
    leave_to_recovery = False
    time_limit: TimeLimit | None = None
    # The task has taken its first step: cancelling it reaches the handler.
    _begun = False
    # Inside ``Job.pausable``: how to pause the work at once and let it go on,
    # and whether it is paused now.
    _pause_work: Callable[[], object] | None = None
    _resume_work: Callable[[], object] | None = None
    _held = False
    # A checkpoint waiting to be resumed: made only when one waits.
    _resume_waiter: asyncio.Future[None] | None = None
    _thread_resumed: threading.Event | None = None

    def __init__(self, job: Job, handler: Handler, loop: asyncio.AbstractEventLoop) -> None:
        self.job = job
        self.handler = handler
        self._loop = loop
        if handler.timeout_s is not None:
            self.time_limit = TimeLimit(loop, handler.timeout_s, self._time_out)

    def __repr__(self) -> str:
        return f"<Run of {self.job!r}>"

    @property
    def cancelled(self) -> bool:
        """True when someone asked to cancel the run (not its time limit)."""
        return self.cancel_requested and not self.timed_out

    # -- the runner's side ---------------------------------------------------------

    def started(self, task: asyncio.Future[Any]) -> None:
        """The job has started (``lifecycle.start``) in ``task``: the clock runs."""
        self.task = task
        if self.time_limit is not None:
            self.time_limit.start()

    def begin(self) -> None:
        """The task's first step, before the handler is called.

        Raises:
            asyncio.CancelledError: the run was cancelled before it began (the
            handler is not called).
        """
        self._begun = True
        if self.cancel_requested:
            raise asyncio.CancelledError()

    def end(self, outcome: Outcome) -> Outcome:
        """The handler has returned or raised, with ``outcome``: stop the clock.
        A run stopped for its time limit says so and fails."""
        if self.time_limit is not None:
            self.time_limit.stop()
        if self.timed_out and outcome is Outcome.CANCELLED:
            self.job.error(self.timeout_reason)
            return Outcome.FAILED
        return outcome

    @property
    def timeout_reason(self) -> str:
        """The error line of a run stopped for its time limit: the handler's own
        (a program's ``make timed out after 60 s``), or ``Job timed out after 60 s``."""
        handler = self.handler
        if handler.timeout_reason is not None:
            return handler.timeout_reason(self.job)
        return f"Job timed out after {handler.timeout_s:g} s"

    def cancel(self, reason: CancelReason) -> None:
        """Stop the handler (see the module's docstring).  A run being stopped for
        its time limit says so now, and ends cancelled (not failed, not run again)."""
        if self.cancel_requested:
            if self.timed_out:
                self.timed_out = False
                self.cancel_reason = reason
                self.job.error(self.timeout_reason)
            return
        self.cancel_requested = True
        self.cancel_reason = reason
        self._stop_handler()

    def _time_out(self) -> None:
        if self.cancel_requested or self.job.state.is_final:
            return
        self.timed_out = self.cancel_requested = True
        self._stop_handler()

    def _stop_handler(self) -> None:
        self.wake()
        # A task cancelled before its first step would never run its coroutine
        # (nor end the job): one that has not begun sees the flag in ``begin``.
        if self._begun and self.task is not None and self.handler.is_async:
            self.task.cancel()

    # -- suspending --------------------------------------------------------------------

    def suspend(self) -> bool:
        """``SuspendJob``: pause at the next checkpoint, or now inside
        ``Job.pausable``; return True if the job paused now."""
        self.suspend_requested = True
        if self._pause_work is not None:
            self.pause()
        return self.job.state is JobState.SUSPENDED

    def pause(self) -> None:
        """On the loop: a requested suspension takes effect.  Not for a run that
        is being stopped (its work must stay able to take the stop), nor once the
        job has left processing: then any waiting checkpoint just goes on."""
        job = self.job
        if not self.suspend_requested or self.cancel_requested or (
                job.state is not JobState.PROCESSING):
            self.wake()
            return
        self.suspend_requested = False
        if self._pause_work is not None and not self._held:
            self._pause_work()
            self._held = True
        if self.time_limit is not None:
            self.time_limit.stop()
        lifecycle.suspend(job)

    def resume(self) -> None:
        """``ResumeJob``: the paused run goes on."""
        lifecycle.resume(self.job, running=True)
        if self.time_limit is not None:
            self.time_limit.start()
        self.wake()

    def wake(self) -> None:
        """Let the paused work go on (resumed, or to be stopped)."""
        if self._held:
            self._held = False
            if self._resume_work is not None:
                self._resume_work()
        waiter, self._resume_waiter = self._resume_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        event, self._thread_resumed = self._thread_resumed, None
        if event is not None:
            event.set()

    # -- the job's side (``job.JobRun``) ------------------------------------------------

    async def pause_point(self) -> None:
        """A checkpoint on the loop.

        Raises:
            asyncio.CancelledError: the run is being stopped.
        """
        if self.cancel_requested:
            raise asyncio.CancelledError()
        if self.suspend_requested:
            waiter = self._resume_waiter = self._loop.create_future()
            self.pause()
            await waiter

    def pause_point_blocking(self) -> None:
        """A checkpoint in a worker thread: it blocks while the job is suspended.

        Raises:
            asyncio.CancelledError: the run is being stopped.
        """
        if self.cancel_requested:
            raise asyncio.CancelledError()
        if self.suspend_requested:
            event = self._thread_resumed = threading.Event()
            self._loop.call_soon_threadsafe(self.pause)
            event.wait()

    @contextlib.contextmanager
    def pausable(self, pause: Callable[[], object],
                 resume: Callable[[], object]) -> Iterator[None]:
        """See ``Job.pausable``.

        Raises:
            RuntimeError: nested.
        """
        if self._pause_work is not None:
            raise RuntimeError("Job.pausable blocks cannot be nested")
        self._pause_work, self._resume_work = pause, resume
        try:
            if self.suspend_requested:
                self.pause()
            yield
        finally:
            held, self._held = self._held, False
            self._pause_work = self._resume_work = None
            if held:
                resume()
