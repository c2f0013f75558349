"""The job engine: accepts jobs, runs at most ``max_running`` at once, records their ends.

A submitted job is stored, then started at once if a slot is free, otherwise
queued in FIFO order; each job that ends starts the next.  There is no
scheduler task: starting happens on submit and on completion.  An async handler
runs as a task on the loop; a plain function runs in a worker thread.  Every job
ends through ``_finish``, which records exactly one completion line and the
``Transaction ... ended`` line and closes the job's stream.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import inspect
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Union

from .codes import Reply, Status
from .config import Config
from .errors import JobFailed, RequestError
from .job import Job
from .states import JobState, Outcome
from .store import Store

__all__ = ["Engine", "Handler", "HandlerFunc"]

log = logging.getLogger("jobmonitor.engine")

HandlerFunc = Callable[[Job], Union[Awaitable[Any], Any]]
MAX_TRANSACTION_NUMBER = 9_999_999
#: How long a cancelled job may take to stop at shutdown before it is abandoned.
CANCEL_WAIT_S = 5.0


@dataclass(frozen=True, slots=True)
class Handler:
    """A registered job handler."""

    project: str
    func: HandlerFunc
    retry_on_restart: bool = False

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.func)


class Engine:
    """Runs jobs for one server."""

    def __init__(self, handlers: Mapping[str, Handler], config: Config, store: Store) -> None:
        self._handlers = dict(handlers)
        self._config = config
        self._store = store
        self._jobs: dict[str, Job] = {}
        self._queue: collections.deque[Job] = collections.deque()
        self._running: dict[Job, asyncio.Future[Any]] = {}
        self._last_number = 0
        self._accepting = False
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self.machine_name = config.machine_name or socket.gethostname()

    # -- life cycle -----------------------------------------------------------

    async def start(self) -> None:
        """Open the store and start accepting jobs."""
        self._last_number = await self._store.open()
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=self._config.max_running, thread_name_prefix="jobmonitor-job"
        )
        self._accepting = True

    async def stop(self, grace_s: float) -> None:
        """Stop starting jobs, give running ones ``grace_s``, cancel the rest."""
        self._accepting = False
        if not self._store.durable:
            for job in list(self._queue):
                self.cancel(job)
        running = list(self._running.values())
        if running:
            await asyncio.wait(running, timeout=grace_s)
        for job in list(self._running):
            self.cancel(job)
        if self._running:
            await asyncio.wait(list(self._running.values()), timeout=CANCEL_WAIT_S)
        for job in list(self._running):
            # A blocking handler that never calls the Job API cannot be stopped;
            # its monitors still get their ending, and its thread is abandoned.
            log.warning("job %s did not stop when cancelled; abandoning it", job.transaction_id)
            self._running.pop(job)
            self._finish(job, Outcome.CANCELLED)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        await self._store.close()

    # -- queries ----------------------------------------------------------------

    def find(self, transaction_id: str) -> Job:
        """Return the job with this transaction ID.

        Raises:
            RequestError: UNKNOWN_TRANSACTION.
        """
        job = self._jobs.get(transaction_id.strip().upper())
        if job is None:
            raise RequestError(Reply.UNKNOWN_TRANSACTION, transaction_id)
        return job

    @property
    def queued_count(self) -> int:
        return len(self._queue)

    @property
    def running_count(self) -> int:
        return len(self._running)

    def handler_names(self) -> list[str]:
        return sorted(self._handlers)

    # -- commands ---------------------------------------------------------------

    async def submit(
        self, project: str, params: Mapping[str, str], doc_variables: Mapping[str, str]
    ) -> Job:
        """Create, store and queue (or start) a job.

        Raises:
            RequestError: UNKNOWN_PROJECT, or SERVER_BUSY while shutting down or
            when transaction numbers are exhausted.
        """
        if project not in self._handlers:
            raise RequestError(Reply.UNKNOWN_PROJECT, project)
        if not self._accepting:
            raise RequestError(Reply.SERVER_BUSY, "the server is shutting down")
        job = Job(
            transaction_id=self._next_transaction_id(),
            project=project,
            params=params,
            doc_variables=doc_variables,
            loop=asyncio.get_running_loop(),
        )
        job._record_status(Status.INFO, f"Machine name: {self.machine_name}")
        await self._store.add_job(job)
        self._jobs[job.transaction_id] = job
        job._set_state(JobState.QUEUED)
        self._queue.append(job)
        self._start_ready()
        return job

    def cancel(self, job: Job) -> None:
        """Cancel a queued or running job.

        A queued job ends at once; an async job at its next await; a job in a
        thread at its next call to the ``Job`` API.

        Raises:
            RequestError: INVALID_STATE when the job has already ended.
        """
        if job.state.is_final:
            raise RequestError(
                Reply.INVALID_STATE, f"{job.transaction_id} has already ended ({job.state.value})"
            )
        if job._cancel_requested:
            return
        job._cancel_requested = True
        task = self._running.get(job)
        if task is None:
            self._queue.remove(job)
            self._finish(job, Outcome.CANCELLED)
        elif self._handlers[job.project].is_async:
            task.cancel()

    # -- running ------------------------------------------------------------------

    def _next_transaction_id(self) -> str:
        if self._last_number >= MAX_TRANSACTION_NUMBER:
            raise RequestError(Reply.SERVER_BUSY, "transaction numbers are exhausted")
        self._last_number += 1
        return f"T{self._last_number:07d}"

    def _start_ready(self) -> None:
        while self._accepting and self._queue and len(self._running) < self._config.max_running:
            job = self._queue.popleft()
            job.started = time.time()
            job._set_state(JobState.PROCESSING)
            self._store.job_changed(job)
            self._running[job] = asyncio.ensure_future(self._run(job))

    async def _run(self, job: Job) -> None:
        handler = self._handlers[job.project]
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
        self._finish(job, outcome)
        self._start_ready()

    async def _call(self, handler: Handler, job: Job) -> Any:
        if handler.is_async:
            return await handler.func(job)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, handler.func, job)

    def _finish(self, job: Job, outcome: Outcome) -> None:
        if job.state.is_final:
            return
        job.outcome = outcome
        job.completed = time.time()
        job._set_state(outcome.state)
        job._record_status(outcome.status)
        job._record_status(
            Status.ENDED, Status.ENDED.text.format(transaction_id=job.transaction_id)
        )
        job.stream.close()
        self._store.job_changed(job)
        log.info("job %s (%s) ended: %s", job.transaction_id, job.project, outcome.value)


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
