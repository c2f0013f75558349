"""A cluster's node holding its share of the jobs (issue 18): ``Claims``.

With a shared store the engine runs only the jobs this node *holds*: a submit
it has a slot for (``add_held``), the queued jobs it ``claim``\\ s when a slot
frees or work appears elsewhere, and the jobs it takes over from a dead node.
Transaction numbers come from the store.  At a stop the node lets go of every
job it holds that waits, for the others to claim.  What the store tells the
node of holding comes through the ``ClusterHooks`` methods here:
``work_available``, ``lost`` (fenced: stop those runs, write nothing) and
``taken_over`` (recover them as a restart recovers jobs).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from ..errors import RequestError, StoreUnavailable
from ..wire.codes import Reply
from ..wire.records import JobRecord
from ..wire.states import JobState, Outcome
from . import lifecycle
from .job import Job
from .lifecycle import CancelReason
from .parts import EngineParts

__all__ = ["Claims", "running"]

log = logging.getLogger("jobmonitor.engine")


class Claims(EngineParts):
    """Numbers, holding, claiming and letting go: a part of ``Engine``."""

    # (set by Engine.__init__) A transaction number taken from the store and not
    # used yet, the slots promised to submits being stored, and the claim under way.
    _spare_number: int | None
    _reserved: int
    _claiming: asyncio.Task[None] | None
    _claim_again: bool
    #: Counts the store's word that work may wait (``work_available``), and the
    #: count when a claim last found none left: a freed slot claims only when
    #: they differ (else each job's end would cost a claim that finds nothing).
    _work_seen: int
    _work_claimed: int

    # -- numbers ----------------------------------------------------------------------

    async def _reserve_number(self) -> None:
        """Have a transaction number at hand for the next new job (a cluster's
        come from the store; the one taken stays for the next job if unused).

        Raises:
            StoreUnavailable; RequestError: SERVER_BUSY when numbers are exhausted.
        """
        shared = self._shared
        if shared is None or self._spare_number is not None:
            return
        if not self._accepting:
            raise RequestError(Reply.SERVER_BUSY, "the server is shutting down")
        number = shared.take_number()
        if number is None:
            await shared.more_numbers()
            number = shared.take_number()
            if self._spare_number is not None:  # another submit filled it meanwhile
                return
        if number is None:
            raise RequestError(Reply.SERVER_BUSY, "no transaction number at hand")
        self._spare_number = number

    # -- holding ----------------------------------------------------------------------

    def _free_slots(self) -> int:
        """Slots this node has for jobs it does not hold yet."""
        runner = self._runner
        return (runner.max_running - runner.running_count - runner.lines.count
                - self._reserved)

    def _has_slot_for(self, job: Job) -> bool:
        return (job.state is JobState.QUEUED and self._accepting and self._runner.starting
                and self._free_slots() > 0 and self._runner.lines.has_room(job.record.queue))

    async def _add_shared(self, job: Job) -> bool:
        """Store a cluster's new job: held here if a slot is free for it (it runs
        here), else for any node to claim (then it is forgotten here); return
        whether it is held here."""
        held = self._has_slot_for(job)
        shared = self._shared
        assert shared is not None
        if not held:
            await self._add(job, shared.add)
            job.on_change = None
            if self.jobs.live(job.transaction_id) is job:  # (not if claimed here meanwhile)
                self.jobs.forget(job.transaction_id)
            return False
        self._reserved += 1
        try:
            await self._add(job, shared.add_held)
        finally:
            self._reserved -= 1
        return True

    def _claim_soon(self) -> None:
        """Claim queued jobs for the free slots (now, or after the claim under way)."""
        if self._shared is None or not self._accepting:
            return
        if self._claiming is not None and not self._claiming.done():
            self._claim_again = True
            return
        self._claiming = asyncio.get_running_loop().create_task(self._claim())

    def _slot_freed(self) -> None:
        """A slot is free: claim for it, unless the last claim found no job left and
        the store has not said since that work may wait."""
        if self._work_seen != self._work_claimed:
            self._claim_soon()

    async def _claim(self) -> None:
        shared = self._shared
        assert shared is not None  # (only a cluster claims)
        while self._accepting and self._runner.starting:
            self._claim_again = False
            free = self._free_slots()
            if free <= 0:
                return
            seen = self._work_seen
            queues = self._runner.lines.open_queues()
            try:
                records = await shared.claim(free, queues)
            except StoreUnavailable:
                return  # (the store logs the outage; the next poll claims again)
            except Exception:
                log.exception("claiming queued jobs failed")
                return
            if not self._accepting:  # stopping meanwhile: for the others to run
                for record in records:
                    shared.release(record.transaction_id, keep_requests=True)
                return
            for record in records:
                if self._runner.lines.has_room(record.queue):
                    self._hold_claimed(record)
                    self._runner.start_ready()
                else:  # its queue is full here (by the jobs just claimed): for the others
                    shared.release(record.transaction_id)
            if len(records) < free and queues is None:
                self._work_claimed = seen  # (none left of any queue, as of then)
            if len(records) < free and not self._claim_again:
                return

    def _hold_claimed(self, record: JobRecord) -> None:
        """A queued job this node claimed: queue it here (it runs here)."""
        job = self._adopt(record)
        handler = self._runner.handlers.get(record.project)
        self._name_machine(job)
        if handler is None:
            job.error(f"No handler for project {record.project!r} on {self.machine_name}")
            self._runner.finish(job, Outcome.FAILED)
        elif job.state is JobState.CREATED:
            lifecycle.fall_due(job)
            self._runner.append(job)
        elif job.state is JobState.QUEUED:
            self._runner.queue_recovered(job, handler)
        else:  # (claim hands only queued and due jobs)
            self._shared.release(job.transaction_id)  # type: ignore[union-attr]
            self.jobs.forget(job.transaction_id)

    def _name_machine(self, job: Job) -> None:
        """A job stored by another node is this node's now: its machine is this
        one, and its stream says so (as its first line said where it was made)."""
        if job.record.worker != self.machine_name:
            job.record.worker = self.machine_name
            lifecycle.machine(job, self.machine_name)

    def _release_waiting(self) -> None:
        """At a stop: let go of every unfinished job not running here (queued,
        waiting for a retry or its due time, suspended before it ran), for the
        others to claim.  A run the stop left to recovery (``retry_on_restart``)
        stays held: the node that reaps this one takes it over and runs it again
        (let go, it would be a running job nobody holds, which no node claims).
        An action another node asked of a job let go of, which this node has not
        read, stays with the job for the node that holds it next: this node,
        stopping, could not act on it or pass it on."""
        shared = self._shared
        assert shared is not None
        for job in self.jobs.live_jobs():
            if (job.state.is_final or self._runner.is_running(job)
                    or running(job.record)):
                continue
            self._runner.withdraw(job)
            self._due.remove(job)
            shared.release(job.transaction_id, keep_requests=True)
            job.on_change = None
            self.jobs.forget(job.transaction_id)

    # -- the store's hooks (ClusterHooks) of holding ----------------------------------

    def work_available(self) -> None:
        self._work_seen += 1
        self._claim_soon()

    def lost(self, transaction_ids: Sequence[str]) -> None:
        """These jobs were taken over while this node was cut off: stop their runs
        and forget them, writing nothing (the store writes nothing more of them)."""
        for transaction_id in transaction_ids:
            job = self.jobs.live(transaction_id)
            if job is None:
                continue
            log.warning("job %s was taken over by another node; stopping it here",
                        transaction_id)
            job.on_change = None
            job.on_event = None
            self._runner.withdraw(job)
            self._due.remove(job)
            self.jobs.forget(transaction_id)
            run = self._runner.run_of(job)
            if run is not None:
                run.leave_to_recovery = True  # (no lines of an ending: the job is not ours)
                run.cancel(CancelReason.SHUTDOWN)
            job.stream.hand_over()  # its monitors follow the store from now on

    def taken_over(self, records: Sequence[JobRecord]) -> None:
        """A dead node's unfinished jobs, now held here: recovered as after a
        restart, the interruption naming the dead node."""
        for record in records:
            if self.jobs.live(record.transaction_id) is None:  # (else held here all along)
                self._take_over(record)
        self._runner.start_ready()

    def _take_over(self, record: JobRecord) -> None:
        """Recover a job whose node stopped; one run again here names this node."""
        log.warning("job %s of node %s, which stopped, is taken over", record.transaction_id,
                    record.worker)
        self._recover(record, dead_node=record.worker or "?")
        job = self.jobs.live(record.transaction_id)
        if job is not None and not job.state.is_final:  # (run again, or kept) here
            self._name_machine(job)


def running(record: JobRecord) -> bool:
    """Whether the stored job runs (its holder acts on it at its next await or
    checkpoint), rather than waits (queued again after a retry included)."""
    return record.status is JobState.PROCESSING or (
        record.status is JobState.SUSPENDED and record.started is not None)
