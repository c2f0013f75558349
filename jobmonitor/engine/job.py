"""The ``Job`` a handler receives: its inputs, and the calls that report progress.

``info``, ``error`` and ``progress`` format the message once and append it to
the job's stream; they never block and never wait for a monitor.  A handler
that is a plain function runs in a worker thread: its calls are handed to the
event loop in batches (one wake-up per batch, not per line), and once the job
is cancelled its next call raises ``asyncio.CancelledError`` in that thread.

Everything recorded about the job lives in one ``JobRecord`` (``job.record``);
the engine and the store read it, handlers use the methods here.  Its state
changes only through ``lifecycle``; what a run was asked (cancel, suspend) and
how it pauses is its ``run``'s (``run.Run``, which the runner owns): a
checkpoint asks the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import threading
import time
from collections.abc import Callable, Mapping
from threading import get_ident
from types import MappingProxyType
from typing import Any, Protocol

from ..wire.codes import ERROR_THRESHOLD, SERVER_CODES, Status
from ..wire.lines import format_lines
from ..wire.records import HistoryEvent, JobRecord, Output
from ..wire.states import JobState, Outcome
from .history import ESTIMATE_EVENT, JOB_STAGE, RETRY_EVENT, count_events
from .stream import JobStream

__all__ = ["Job", "JobRun", "MAX_UNSTORED_LINES"]

#: The head of a plain information line, from the code table (the hot path's one
#: formatted piece; lines.format_line makes the same for every other code).
_INFO = Status.INFO
_INFO_HEAD = f"J{int(_INFO):07d}: "
#: Guards every job's batch of calls from worker threads (held for a list swap).
_THREAD_LOCK = threading.Lock()
#: With a durable store, a job at a checkpoint waits while more of its lines than
#: this are not yet stored: a chatty job cannot fill memory faster than the
#: store writes (lines can leave memory only once stored).
MAX_UNSTORED_LINES = 20_000


#: One int object per loop thread's ID, for every job made on it to share (a
#: thread's ID is a big int: a new object at each ``get_ident()``).
_IDENTS: dict[int, int] = {}


def _one_ident(ident: int) -> int:
    return _IDENTS.setdefault(ident, ident)


def _storable(text: str) -> str:
    """``text`` with each lone surrogate (a file name read with ``os.fsdecode``)
    written out as ``\\udcff``, as the wire shows it: a store cannot encode one."""
    return text if text.isprintable() else text.encode("utf-8", "backslashreplace").decode()


class JobRun(Protocol):
    """What a job asks of its run (``run.Run``, made by the runner for each run).
    Spelled here, where it is used, so that this module imports nothing above it."""

    @property
    def cancel_requested(self) -> bool: ...

    @property
    def suspend_requested(self) -> bool: ...

    async def pause_point(self) -> None:
        """On the loop: raise ``CancelledError`` once cancelled; wait while a
        requested suspension lasts."""

    def pause_point_blocking(self) -> None:
        """The same from a worker thread (it blocks while suspended)."""

    def pausable(self, pause: Callable[[], object],
                 resume: Callable[[], object]) -> contextlib.AbstractContextManager[None]: ...


class Job:
    """One job: what it was given, what it has said, and where it stands.

    Handlers use ``params``, ``doc_variables``, ``transaction_id``, ``info``,
    ``error``, ``progress``, ``checkpoint``, ``stage``, ``estimate`` and
    ``add_output``; the rest is read by the server.
    """

    __slots__ = ("record", "stream", "on_change", "on_event", "last_message", "run",
                 "_loop", "_loop_thread", "_thread_pending", "__weakref__")

    def __init__(self, record: JobRecord, loop: asyncio.AbstractEventLoop) -> None:
        self.record = record
        self.stream = JobStream(loop, base=record.line_count)
        self.stream.on_flush = self._flushed
        #: The job's last message (its status message): kept here per line and
        #: copied to the record per flush.
        self.last_message = record.status_message
        #: Called (on the loop) whenever the record or the lines changed.
        self.on_change: Callable[[Job, bool], None] | None = None
        #: Called (on the loop) with each ``job`` stage event (for the task log).
        self.on_event: Callable[[Job, HistoryEvent], None] | None = None
        #: The job's run, set by the runner when it starts; once the run is over,
        #: kept until the next one (a thread abandoned in it still sees it
        #: cancelled), but not while the job waits to run again.
        self.run: JobRun | None = None
        self._loop = loop
        self._loop_thread = _one_ident(get_ident())
        self._thread_pending: list[Callable[[], None]] | None = None

    def __repr__(self) -> str:
        return f"<Job {self.transaction_id} {self.project!r} {self.state.value}>"

    # -- what the job is ------------------------------------------------------

    @property
    def params(self) -> Mapping[str, str]:
        """The job variables, read-only (made on each use: a waiting job keeps none)."""
        return MappingProxyType(self.record.params)

    @property
    def doc_variables(self) -> Mapping[str, str]:
        """The doc variables, read-only."""
        return MappingProxyType(self.record.doc_variables)

    @property
    def transaction_id(self) -> str:
        return self.record.transaction_id

    @property
    def project(self) -> str:
        return self.record.project

    @property
    def job_name(self) -> str:
        """The optional ``JobName`` job variable ("" when absent)."""
        return self.record.job_name

    @property
    def identity(self) -> str:
        """Who submitted the job."""
        return self.record.identity

    @property
    def state(self) -> JobState:
        return self.record.status

    @property
    def outcome(self) -> Outcome | None:
        return self.record.outcome

    @property
    def progress_done(self) -> int:
        return self.record.progress_done

    @property
    def progress_total(self) -> int:
        return self.record.progress_total

    @property
    def attempt(self) -> int:
        """Which run of the job this is: 1, then 2 and on when its handler's
        ``retries`` run it again after a failure."""
        return 1 + count_events(self.record, RETRY_EVENT)

    @property
    def cancel_requested(self) -> bool:
        """True once someone asked to cancel this job (or its run is being
        stopped for its time limit)."""
        run = self.run
        return (run.cancel_requested if run is not None
                else self.record.status is JobState.CANCELLED)

    @property
    def suspend_requested(self) -> bool:
        """True while a suspension waits for the job's next checkpoint."""
        run = self.run
        return run is not None and run.suspend_requested

    def snapshot(self) -> JobRecord:
        """A copy of the job's record as it is now."""
        record = self.record.copy()
        record.status_message = self.last_message
        record.history = list(record.history)
        record.outputs = list(record.outputs)
        record.line_count = len(self.stream)
        return record

    # -- the handler's API ------------------------------------------------

    def info(self, text: str, *, code: int = Status.INFO) -> None:
        """Send an information line (``J0000100`` unless ``code`` says otherwise).

        Raises:
            ValueError: ``code`` is not an information code (1..4999), or is one
                only the server sends (``codes.SERVER_CODES``: the end, outcomes,
                suspend and restart notices).
            asyncio.CancelledError: from a worker thread, once the job is cancelled.
        """
        # The stream's hot path: one plain line from the loop, formatted in one go.
        if (code is _INFO and text.__class__ is str and text.isprintable()
                and get_ident() == self._loop_thread):
            stream = self.stream
            if not stream.closed:
                stream.lines.append(f"{_INFO_HEAD}{text}\r\n".encode())
                if not stream.scheduled:
                    stream.schedule()
                self.last_message = text
            return
        if code != Status.INFO and (not 0 < code < ERROR_THRESHOLD or code in SERVER_CODES):
            raise ValueError(f"information codes are 1..4999 but the server's own, got {code}")
        self._say(code, str(text))

    def error(self, text: str, *, code: int = Status.ERROR) -> None:
        """Send an error line (``J0005000`` unless ``code`` says otherwise).

        Raises:
            ValueError: ``code`` is not an error code (5000..9999999), or is one
                only the server sends (``codes.SERVER_CODES``).
            asyncio.CancelledError: from a worker thread, once the job is cancelled.
        """
        if not ERROR_THRESHOLD <= code <= 9_999_999 or code in SERVER_CODES:
            raise ValueError(f"error codes are 5000..9999999 but the server's own, got {code}")
        self._say(code, str(text))

    def progress(self, done: int, total: int, message: str = "") -> None:
        """Record progress and send a ``J0000110`` line such as ``Progress: 3/10 (30%)``.

        Raises:
            ValueError: ``done`` or ``total`` is negative, or ``done > total > 0``.
            asyncio.CancelledError: from a worker thread, once the job is cancelled.
        """
        done, total = int(done), int(total)
        if done < 0 or total < 0 or (total and done > total):
            raise ValueError(f"invalid progress {done}/{total}")
        percent = f" ({done * 100 // total}%)" if total else ""
        text = f"Progress: {done}/{total}{percent}"
        message = _storable(str(message))
        self._from_any_thread(self._set_progress, done, total, message)
        self._say(Status.PROGRESS, f"{text} {message}" if message else text)

    def stage(self, stage: str, status: str, *, date: dt.datetime | None = None,
              info: str | None = None) -> None:
        """Add an event to the job's history, e.g. ``job.stage("evaluation", "start")``."""
        event = HistoryEvent(_storable(str(stage)), _storable(str(status)), time.time(),
                             _timestamp(date) if date is not None else None,
                             info if info is None else _storable(str(info)))
        text = f"Stage {event.stage}: {event.status}" + (f" ({event.info})" if event.info else "")
        self._from_any_thread(self._add_history, event)
        self._say(Status.STAGE, text)

    def estimate(self, completion: dt.datetime) -> None:
        """Record an estimated completion time (shown in status replies and history)."""
        when = _timestamp(completion)

        def apply() -> None:
            self.record.estimated = when
            self._add_history(HistoryEvent(JOB_STAGE, ESTIMATE_EVENT, time.time(), when))

        self._from_any_thread(apply)

    def add_output(self, name: str, uri: str, media_type: str | None = None) -> None:
        """Register something the job produced; ``RetrieveJob`` lists it."""
        output = Output(_storable(str(name)), _storable(str(uri)),
                        media_type if media_type is None else _storable(str(media_type)))

        def apply() -> None:
            self.record.outputs.append(output)
            self._changed()

        self._from_any_thread(apply)

    def checkpoint(self) -> Any:
        """A safe point to pause or stop at.

        From an async handler: ``await job.checkpoint()``.  From a handler in a
        worker thread: ``job.checkpoint()`` (it blocks while suspended).  With a
        durable store it also waits while more than ``MAX_UNSTORED_LINES`` of the
        job's lines are not yet stored, so a chatty job is held to the store's pace.

        Raises:
            asyncio.CancelledError: the job has been cancelled.
        """
        if get_ident() == self._loop_thread:
            return self._checkpoint_async()
        self._checkpoint_thread()
        return None

    def pausable(self, pause: Callable[[], object],
                 resume: Callable[[], object]) -> contextlib.AbstractContextManager[None]:
        """Inside this block, ``SuspendJob`` pauses the job at once, not at a checkpoint.

        For work that can be stopped from outside at any moment, such as a child
        process (``jobmonitor.programs`` sends it SIGSTOP and SIGCONT)::

            with job.pausable(lambda: proc.send_signal(signal.SIGSTOP),
                              lambda: proc.send_signal(signal.SIGCONT)):
                await proc.wait()

        ``pause()`` stops the work and ``resume()`` lets it go on; both are called
        on the event loop and must not block.  A suspend requested before the
        block takes effect on entering it.  Leaving the block while paused (the
        job was cancelled) calls ``resume()`` first.  Async handlers only.

        Raises:
            RuntimeError: called outside the event loop's thread, or nested.
        """
        if get_ident() != self._loop_thread:
            raise RuntimeError("Job.pausable is for async handlers (the event loop's thread)")
        run = self.run
        if run is None:  # not started by a runner: nothing can suspend it
            return contextlib.nullcontext()
        return run.pausable(pause, resume)

    # -- checkpoints --------------------------------------------------------------

    async def _checkpoint_async(self) -> None:
        run = self.run
        if run is not None:
            await run.pause_point()
        await self._until_stored()
        if run is not None and run.cancel_requested:
            raise asyncio.CancelledError()

    def _checkpoint_thread(self) -> None:
        run = self.run
        if run is not None:
            run.pause_point_blocking()
        if self.stream.unstored() > MAX_UNSTORED_LINES:
            asyncio.run_coroutine_threadsafe(self._until_stored(), self._loop).result()
        if run is not None and run.cancel_requested:
            raise asyncio.CancelledError()

    async def _until_stored(self) -> None:
        """Backpressure: wait while too many of this job's lines are not stored."""
        waiter = self.stream.wait_stored(MAX_UNSTORED_LINES)
        if waiter is not None:
            await waiter

    # -- recording --------------------------------------------------------------

    def _say(self, code: int, text: str) -> None:
        self._from_any_thread(self._record_line, code, text)

    def _record_line(self, code: int, text: str) -> None:
        self.stream.extend(format_lines("J", code, text))
        self.last_message = _storable(text)

    def _from_any_thread(self, func: Callable[..., None], *args: Any) -> None:
        """Run ``func`` on the loop: now if we are on it, else batched from a thread."""
        if get_ident() == self._loop_thread:
            func(*args)
            return
        run = self.run
        if run is not None and run.cancel_requested:
            raise asyncio.CancelledError()
        with _THREAD_LOCK:
            pending = self._thread_pending
            first = not pending
            if pending is None:
                pending = self._thread_pending = []
            pending.append(lambda: func(*args))
        if first:
            self._loop.call_soon_threadsafe(self._take_from_thread)

    def _take_from_thread(self) -> None:
        with _THREAD_LOCK:
            pending, self._thread_pending = self._thread_pending or [], []
        for call in pending:
            call()

    def _set_progress(self, done: int, total: int, message: str) -> None:
        record = self.record
        record.progress_done, record.progress_total = done, total
        record.progress_message = message
        self._changed()

    def _add_history(self, event: HistoryEvent) -> None:
        self.record.history.append(event)
        self._changed()

    def _flushed(self) -> None:
        """New lines went out: the record's last message and update time follow."""
        record = self.record
        record.status_message = self.last_message
        record.updated = time.time()
        if self.on_change is not None:
            self.on_change(self, self.stream.watcher_count > 0)

    def _changed(self) -> None:
        if self.on_change is not None:
            # Monitors see only stored lines: while any wait, do not let it wait.
            self.on_change(self, self.stream.watcher_count > 0)


def _timestamp(value: dt.datetime) -> float:
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.timestamp()

