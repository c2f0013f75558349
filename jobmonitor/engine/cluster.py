"""What the engine does as one node of a cluster (a ``SharedStore``, issue 18).

``Clustered`` is a part of ``Engine`` kept in its own module.  With a shared
store the engine runs only the jobs this node *holds*: a submit it has a slot
for (``add_held``), the queued jobs it ``claim``\\ s when a slot frees or work
appears elsewhere, and the jobs it takes over from a dead node.  Any other job
lives in the store: commands on it read the store, and cancel, suspend and
resume either ask the node holding it (``request``) or hold it here (``take``)
and act as on a local job.  After such a command (``settle``) the node answers
once the change is stored, and lets go of a job it leaves waiting that it has
no slot for, so that any node may run it.  What the store tells the node
comes through the ``ClusterHooks`` methods here: ``work_available``,
``requested``, ``lost`` (fenced: stop those runs, write nothing) and
``taken_over`` (recover them as a restart recovers jobs).

With any other store none of this runs: ``_shared`` is None.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from ..errors import RequestError, StoreUnavailable
from ..store.base import Recordable, TaskEvent
from ..store.shared import Action, NodeInfo, SharedStore
from ..wire.codes import Reply
from ..wire.records import JobRecord
from ..wire.states import JobState, Outcome
from ..wire.variables import TASK_LOG_SIZE
from . import lifecycle
from .directory import JobDirectory
from .job import Job
from .lifecycle import CancelReason, can_transition
from .runner import JobRunner
from .schedule import DueJobs

__all__ = ["Clustered", "TAKE_TRIES"]

log = logging.getLogger("jobmonitor.engine")

#: How often a command on a job held elsewhere asks again when the holder
#: changed between its ``request`` and its ``take``.
TAKE_TRIES = 3
#: How long a command on a waiting job held elsewhere waits for its holder to
#: store the job's new state before it asks again.
ASK_WAIT_S = 1.0
#: The state each action leads to (checked before asking anyone).
_ACTION_STATE = {"cancel": JobState.CANCELLED, "suspend": JobState.SUSPENDED,
                 "resume": JobState.PROCESSING}


class Clustered:
    """A node's side of a cluster: a part of ``Engine``."""

    # (defined by Engine)
    _shared: SharedStore | None
    _runner: JobRunner
    _due: DueJobs
    jobs: JobDirectory
    machine_name: str
    _accepting: bool
    _reserved: int
    _spare_number: int | None
    _claiming: asyncio.Task[None] | None
    _claim_again: bool
    _settling: set[asyncio.Task[None]]
    _releasing: dict[str, list[Action]]
    _adding: dict[str, list[asyncio.Future[None]] | None]
    #: Counts the store's word that work may wait (``work_available``), and the
    #: count when a claim last found none left: a freed slot claims only when
    #: they differ (else each job's end would cost a claim that finds nothing).
    _work_seen: int
    _work_claimed: int
    started_at: float
    address: str

    def _adopt(self, record: JobRecord) -> Job:
        raise NotImplementedError

    async def _add(self, job: Job,
                   add: Callable[[Recordable], Awaitable[None]] | None = None) -> None:
        raise NotImplementedError

    def _recover(self, record: JobRecord, dead_node: str | None = None) -> None:
        raise NotImplementedError

    def cancel(self, job: Job, reason: CancelReason = CancelReason.USER) -> None:
        raise NotImplementedError

    def suspend(self, job: Job) -> str:
        raise NotImplementedError

    def resume(self, job: Job) -> str:
        raise NotImplementedError

    @property
    def clustered(self) -> bool:
        """True when this engine is one node of a cluster (a shared store)."""
        return self._shared is not None

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
                    shared.release(record.transaction_id)
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
        (let go, it would be a running job nobody holds, which no node claims)."""
        shared = self._shared
        assert shared is not None
        for job in self.jobs.live_jobs():
            if (job.state.is_final or self._runner.is_running(job)
                    or _running(job.record)):
                continue
            self._runner.withdraw(job)
            self._due.remove(job)
            shared.release(job.transaction_id)
            job.on_change = None
            self.jobs.forget(job.transaction_id)

    # -- the store's hooks (ClusterHooks) ---------------------------------------------

    def work_available(self) -> None:
        self._work_seen += 1
        self._claim_soon()

    def requested(self, transaction_id: str, action: Action) -> None:
        """Another node asked for ``action`` on a job held here: as a local command
        (one the job's state no longer allows is ignored).  One asked of a job
        this node let go of before it read it (the store hands it back with the
        release) is passed on to whoever holds the job now."""
        asked_meanwhile = self._releasing.get(transaction_id)
        if asked_meanwhile is not None:  # being let go: passed on once it is (see settle)
            asked_meanwhile.append(action)
            return
        job = self.jobs.live(transaction_id)
        if job is None:
            if self._accepting:  # let go just as it was asked: to whoever holds it now
                self._in_background(self._pass_on(transaction_id, action))
            return
        if job.state.is_final:
            return
        self._act_here(job, action)
        self._in_background(self.settle(job))

    def _act_here(self, job: Job, action: Action) -> None:
        """``action`` on a job held here, asked by another node (or passed on)."""
        try:
            if action == "cancel":
                self.cancel(job)
            elif action == "suspend":
                self.suspend(job)
            else:
                self.resume(job)
        except RequestError as exc:
            log.info("%s asked of %s by another node: %s", action, job.transaction_id,
                     exc.reply_text)

    def _in_background(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._settling.add(task)  # (kept while it runs: the loop holds tasks weakly)
        task.add_done_callback(self._settling.discard)

    async def _pass_on(self, transaction_id: str, action: Action) -> None:
        """An action asked of a job while this node let go of it: asked again of
        whoever holds it now (or done here, if nobody does)."""
        try:
            if await self.act_elsewhere(transaction_id, action) is None:
                job = self.jobs.live(transaction_id)
                if job is not None and not job.state.is_final:
                    self._act_here(job, action)
                    await self.settle(job)
        except (RequestError, StoreUnavailable) as exc:
            log.warning("%s asked of %s by another node was lost: %s", action,
                        transaction_id, exc)

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

    # -- commands on jobs held elsewhere -------------------------------------------------

    async def act_elsewhere(self, transaction_id: str, action: Action) -> str | None:
        """``action`` on a job this node does not hold: ask its holder and return
        the reply's text, or hold it here and return None (then act on the live job).

        Raises:
            RequestError: UNKNOWN_TRANSACTION; INVALID_STATE when the job has ended
            or its state does not allow ``action``; SERVER_BUSY when it changes
            hands faster than it can be reached.  StoreUnavailable.
        """
        shared = self._shared
        assert shared is not None  # (only a cluster has jobs elsewhere)
        for _ in range(TAKE_TRIES):
            record = await self.jobs.record(transaction_id)
            _check_action(record, action)
            if await shared.request(transaction_id, action):
                if _running(record) or await self._holder_acted(record):
                    return _asked_text(transaction_id, action)
                continue  # let go meanwhile, the request with it: ask whoever holds it now
            taken = await shared.take(transaction_id)
            if taken is not None:
                self._hold_taken(taken)
                return None
            if self.jobs.live(transaction_id) is not None:  # (claimed here meanwhile)
                return None
        raise RequestError(Reply.SERVER_BUSY, f"{transaction_id} is changing hands; try again")

    async def _holder_acted(self, record: JobRecord) -> bool:
        """Whether the holder of a job that waits (queued, due later, suspended
        before it ran), asked for an action, has stored a new state: it acts on
        such a job at once.  False when it has not within ``ASK_WAIT_S``: it may
        have let go of the job just as it was asked (the request went with it)."""
        shared = self._shared
        assert shared is not None
        transaction_id = record.transaction_id
        loop = asyncio.get_running_loop()
        until = loop.time() + ASK_WAIT_S
        while (left := until - loop.time()) > 0:
            # (woken by the holder's commit of the job's lines or state)
            await shared.wait_lines(transaction_id, record.line_count, left)
            now = await self.jobs.record(transaction_id)
            if now.status is not record.status:
                return True
            record = now  # (lines only: wait for what comes next)
        return False

    def _hold_taken(self, record: JobRecord) -> None:
        """A job taken to act on it here: as it was (queued, due later, suspended),
        or recovered if the node that ran it is gone."""
        if record.started is not None and record.status in (JobState.PROCESSING,
                                                            JobState.SUSPENDED):
            self._take_over(record)  # (not started yet: the command acts first)
            return
        job = self._adopt(record)
        self._name_machine(job)
        if job.state is JobState.QUEUED:
            handler = self._runner.handlers.get(record.project)
            if handler is not None:  # (not started: the command acts first, see settle)
                self._runner.queue_recovered(job, handler)
        elif job.state is JobState.CREATED:
            self._due.add(job)

    async def settle(self, job: Job) -> None:
        """After a command acted on a job held here: return once the change is
        stored, so that every node reads what the reply says; and a job left
        waiting (queued, or due later) goes back to the store for any node to
        claim, unless it starts here now (it would otherwise wait for this
        node's slots while others are idle)."""
        shared = self._shared
        if shared is None:
            return
        with contextlib.suppress(StoreUnavailable):  # (stored once the store is back)
            await shared.flush()
        transaction_id = job.transaction_id
        if (self.jobs.live(transaction_id) is not job or self._runner.is_running(job)
                or transaction_id in self._adding or not self._accepting):
            return
        if job.state is JobState.QUEUED:
            self._runner.start_ready()
            if job not in self._runner.lines:  # started, or waiting out a retry's delay
                return
        elif job.state is not JobState.CREATED:
            return  # (a suspended job stays with the node that holds it)
        self._runner.withdraw(job)
        self._due.remove(job)
        shared.release(transaction_id)
        job.on_change = None
        self.jobs.forget(transaction_id)
        job.stream.hand_over()  # its monitors here follow the store from now on
        # A request another node makes before the release is stored is this
        # node's to pass on to whoever holds the job next.
        asked_meanwhile = self._releasing[transaction_id] = []
        try:
            with contextlib.suppress(StoreUnavailable):
                await shared.flush()
        finally:
            del self._releasing[transaction_id]
        for action in asked_meanwhile:
            await self._pass_on(transaction_id, action)

    # -- what the cluster shows ----------------------------------------------------------

    async def listening_at(self, address: str, node_address: str) -> None:
        """The server listens now: at ``address``, which a cluster's other nodes
        know as ``node_address`` (the port is known only now: ``--port 0``)."""
        self.address = address
        if self._shared is not None:
            await self._shared.set_address(node_address)

    async def nodes(self) -> list[NodeInfo]:
        """The cluster's live nodes; a single server is a cluster of one."""
        if self._shared is not None:
            return await self._shared.nodes()
        return [NodeInfo(self.machine_name, self.address, self.started_at, 0.0,
                         self._runner.running_count)]

    async def task_log(self) -> list[TaskEvent]:
        """Recent job events, oldest first: the cluster's, or this server's."""
        if self._shared is not None:
            return await self._shared.recent_events(TASK_LOG_SIZE)
        return self.jobs.task_log()


def _check_action(record: JobRecord, action: Action) -> None:
    """Refuse ``action`` as a local command refuses it in the job's state."""
    state = record.status
    if state.is_final:
        raise RequestError(Reply.INVALID_STATE,
                           f"{record.transaction_id} has already ended ({state.value})")
    if action == "resume":
        if state is not JobState.SUSPENDED:
            raise RequestError(Reply.INVALID_STATE,
                               f"{record.transaction_id} is {state.value}, not Suspended")
    elif not can_transition(state, _ACTION_STATE[action]):
        raise RequestError(Reply.INVALID_STATE, f"{record.transaction_id} is {state.value}")


def _running(record: JobRecord) -> bool:
    """Whether the stored job runs (its holder acts on it at its next await or
    checkpoint), rather than waits (queued again after a retry included)."""
    return record.status is JobState.PROCESSING or (
        record.status is JobState.SUSPENDED and record.started is not None)


def _asked_text(transaction_id: str, action: Action) -> str:
    """The reply to an action the holder was asked for (as for a running job)."""
    if action == "cancel":
        return transaction_id
    if action == "suspend":
        return f"{transaction_id} suspend requested"
    return f"{transaction_id} resumed"

