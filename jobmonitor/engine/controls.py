"""What cancel, suspend, resume and delete do to a job held here: each checked
against ``lifecycle``'s table of moves, then carried out by the runner (a
running job), the due jobs (a scheduled one) or the store (a deletion).  A
part of ``Engine`` (see ``parts``)."""

from __future__ import annotations

from ..errors import RequestError
from ..wire.codes import Reply
from ..wire.states import JobState
from . import lifecycle
from .job import Job
from .lifecycle import CancelReason, can_transition
from .parts import EngineParts

__all__ = ["Controls"]


class Controls(EngineParts):
    """The commands that change a job's state (a part of ``Engine``)."""

    def cancel(self, job: Job, reason: CancelReason = CancelReason.USER) -> None:
        """Cancel a queued, suspended or running job (for ``reason``).

        A queued job ends at once; an async job at its next await; a job in a
        thread at its next call to the ``Job`` API.  A job being stopped for its
        time limit says so and ends cancelled (not failed, not run again).

        Raises:
            RequestError: INVALID_STATE when the job has already ended.
        """
        self._check(job, JobState.CANCELLED)
        self._due.remove(job)
        self._runner.cancel(job, reason)

    def suspend(self, job: Job) -> str:
        """Suspend a queued job at once, or a running one at its next checkpoint
        (at once inside ``Job.pausable``).

        Returns the reply text, which says which of the two happened.

        Raises:
            RequestError: INVALID_STATE when the job is not queued or running.
        """
        self._check(job, JobState.SUSPENDED)
        run = self._runner.run_of(job)
        if run is None:  # queued, scheduled, or still being stored
            self._due.remove(job)
            self._runner.withdraw(job)
            lifecycle.suspend(job)
        elif not run.suspend():
            return f"{job.transaction_id} suspend requested"
        return f"{job.transaction_id} suspended"

    def resume(self, job: Job) -> str:
        """Resume a suspended job.

        Raises:
            RequestError: INVALID_STATE when the job is not suspended.
        """
        if job.state is not JobState.SUSPENDED:
            raise RequestError(Reply.INVALID_STATE,
                               f"{job.transaction_id} is {job.state.value}, not Suspended")
        run = self._runner.run_of(job)
        if run is not None:
            run.resume()
        elif job.record.run_at is not None and job.record.run_at > self.clock.time():
            lifecycle.resume(job, running=False, waiting=True)  # (not due yet: waits again)
            if job.transaction_id not in self._adding:
                self._due.add(job)
        else:
            lifecycle.resume(job, running=False)
            if job.transaction_id not in self._adding:  # else its submit queues it
                self._runner.enqueue(job)
        return f"{job.transaction_id} resumed"

    async def delete(self, transaction_id: str) -> None:
        """Delete a finished job's record and lines.

        Raises:
            RequestError: UNKNOWN_TRANSACTION; INVALID_STATE while it is active;
            StoreUnavailable when the store cannot write (nothing is deleted).
        """
        record = await self.jobs.record(transaction_id)
        if not record.status.is_final:
            raise RequestError(Reply.INVALID_STATE,
                               f"{transaction_id} is {record.status.value}; cancel it first")
        self.jobs.forget(transaction_id)
        await self._store.flush()
        await self._store.delete(transaction_id)

    def _check(self, job: Job, new: JobState) -> None:
        if not can_transition(job.state, new):
            raise RequestError(Reply.INVALID_STATE,
                               f"{job.transaction_id} is {job.state.value}")
