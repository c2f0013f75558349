"""Commands on jobs another node of the cluster holds (issue 18):
``ElsewhereCommands``.

Cancel, suspend and resume of a job this node does not hold either ask the
node holding it (``request``: it hears through the store, and its
``requested`` hook acts as a local command) or hold it here (``take``) and act
as on a local job.  After such a command (``settle``) the node answers once
the change is stored, and lets go of a job it leaves waiting that it has no
slot for, so that any node may run it.  An action asked of a job this node let
go of meanwhile is passed on to whoever holds it now.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable

from ..errors import RequestError, StoreUnavailable
from ..store.shared import Action
from ..wire.codes import Reply
from ..wire.records import JobRecord
from ..wire.states import JobState
from .claims import running
from .job import Job
from .lifecycle import can_transition
from .parts import EngineParts

__all__ = ["ElsewhereCommands", "TAKE_TRIES"]

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


class ElsewhereCommands(EngineParts):
    """Commands on jobs held elsewhere, and those asked of this node: a part of
    ``Engine``."""

    # (set by Engine.__init__) Work after a command another node asked for, and
    # the jobs being let go of with the actions asked of them meanwhile.
    _settling: set[asyncio.Task[None]]
    _releasing: dict[str, list[Action]]

    # -- asked by another node (ClusterHooks.requested) ------------------------------

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
            else:  # (a stop's release leaves them with the job: see _release_waiting)
                log.warning("%s asked of %s by another node as this node stops was lost",
                            action, transaction_id)
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

    # -- asked here of a job held elsewhere --------------------------------------------

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
                if running(record) or await self._holder_acted(record):
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


def _asked_text(transaction_id: str, action: Action) -> str:
    """The reply to an action the holder was asked for (as for a running job)."""
    if action == "cancel":
        return transaction_id
    if action == "suspend":
        return f"{transaction_id} suspend requested"
    return f"{transaction_id} resumed"
