"""A store several servers use at once: the contract between a cluster's nodes.

With ``memory://`` or ``sqlite://`` one server owns every job.  A ``SharedStore``
(PostgreSQL) is opened by several servers, the *nodes* of one cluster, and each
job is *held* by at most one of them at a time: the node that runs it, or has
claimed it to run, or took it to act on it.  A job nobody holds (queued, or due
later) waits in the store for a node with a free slot to ``claim`` it.

What the engine asks of such a store, beyond ``Store``:

- transaction numbers from the store, unique across the cluster (``take_number``);
- ``add`` of a job nobody holds yet, or ``add_held`` of one this node runs at once;
- ``claim`` queued jobs, ``take`` one job to act on it here, or ``request`` that
  the node holding it cancel, suspend or resume it;
- ``wait_lines`` for a job held elsewhere to store more lines or change state;
- ``set_paused`` to pause a queue in the whole cluster;
- ``nodes`` for ``ListNodes``, ``list_active`` for a listing of unfinished jobs
  (they are not all in this node's memory), ``recent_events`` for the task log.

What the store tells the engine (``ClusterHooks``, given by ``attach``): work
appeared; a node asked this one to act on a job it holds; this node lost jobs
(another node took them over: write nothing more for them and stop them); and a
dead node's jobs this node took over (recover them as a restart recovers jobs);
and which queues are paused in the cluster.

Holding is fenced: every hold carries an epoch, bumped at every claim, take and
takeover, and the store writes a held job's changes only while its epoch is
still the one this node holds.  A node frozen past its lease therefore writes
nothing more for the jobs taken from it.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from ..errors import JobMonitorError
from ..wire.records import JobRecord
from .base import Recordable, Store, TaskEvent

__all__ = ["SharedStore", "ClusterHooks", "NodeInfo", "TokenTaken", "Action"]

#: What one node asks of the node holding a job.
Action = Literal["cancel", "suspend", "resume"]


class TokenTaken(JobMonitorError):
    """``add``: another node stored a job with the same submitter and job token
    first; ``transaction_id`` is that job's.  Nothing of the new job is kept."""

    def __init__(self, transaction_id: str) -> None:
        super().__init__(transaction_id)
        self.transaction_id = transaction_id


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """One live node of the cluster, as ``ListNodes`` shows it."""

    name: str
    address: str
    started: float  # POSIX seconds
    heartbeat_age_s: float  # seconds since its last heartbeat (the database's clock)
    running: int  # jobs it holds that are running or suspended


class ClusterHooks(Protocol):
    """What the engine gives a shared store (``SharedStore.attach``); the store
    calls these on the event loop."""

    def work_available(self) -> None:
        """Jobs may be waiting to be claimed (a submit or a release elsewhere, or
        the periodic poll): claim if a slot is free."""

    def requested(self, transaction_id: str, action: Action) -> None:
        """Another node asked for ``action`` on a job this node holds."""

    def lost(self, transaction_ids: Sequence[str]) -> None:
        """These jobs are no longer this node's (taken over while this node was
        cut off): the store has dropped their pending writes; stop running them
        and forget them, writing nothing."""

    def taken_over(self, records: Sequence[JobRecord]) -> None:
        """A dead node's unfinished jobs, now held by this node: recover them as
        a restart recovers the jobs a stopped server left (``J0005002`` naming the
        dead node, then failed or queued again)."""

    def queues_paused(self, names: frozenset[str]) -> None:
        """The queues paused in the whole cluster (``set_paused``), as the node
        opens the store and whenever they change: start no job of them."""


class SharedStore(Store):
    """A durable store several nodes open at once (see the module's text)."""

    durable = True
    #: This node's name (``--node-name``): the ``WorkerId`` and ``Machine name`` of
    #: the jobs it runs.
    node_name: str

    @abc.abstractmethod
    def attach(self, hooks: ClusterHooks) -> None:
        """Call ``hooks`` from now on (before ``open``)."""

    @abc.abstractmethod
    def take_number(self) -> int | None:
        """A new transaction number, unique across the cluster and never reused,
        or None when this node has none at hand (then ``await more_numbers()``)."""

    @abc.abstractmethod
    async def more_numbers(self) -> None:
        """Get more transaction numbers.

        Raises:
            StoreUnavailable: the database cannot be reached.
            RequestError: SERVER_BUSY when the numbers are exhausted.
        """

    @abc.abstractmethod
    async def add_held(self, job: Recordable) -> None:
        """``add`` a new job held by this node from the start (it runs it now).

        Raises:
            TokenTaken: another job has this submitter and job token.
            StoreUnavailable: as ``add``.
        """

    # ``add(job)`` stores a job nobody holds (queued or due later), for any node
    # to claim; it raises ``TokenTaken`` as ``add_held`` does.

    @abc.abstractmethod
    async def claim(self, limit: int, queues: Sequence[str] | None = None) -> list[JobRecord]:
        """Hold up to ``limit`` of the jobs nobody holds that are due to run
        (queued, or ``Created`` with a due time now past), highest priority then
        oldest first, optionally only from ``queues``; return their records (status
        as stored: the engine queues or starts them)."""

    @abc.abstractmethod
    async def take(self, transaction_id: str) -> JobRecord | None:
        """Hold this unfinished job to act on it here, if nobody holds it (or a
        dead node did); None when a live node holds it or it has ended."""

    @abc.abstractmethod
    async def request(self, transaction_id: str, action: Action) -> bool:
        """Ask the live node holding this job to ``action`` it (it hears within
        about a second); False when no live node holds it (then ``take`` it)."""

    @abc.abstractmethod
    def release(self, transaction_id: str, *, keep_requests: bool = False) -> None:
        """This node stops holding an unfinished job (at shutdown, a queued one it
        claimed): written with its next commit, for others to claim.  The actions
        other nodes asked of it that this node has not read are handed back to
        this node (``hooks.requested``), to pass on; with ``keep_requests`` (a
        node that stops) they stay with the job, for the node that holds it next
        (``claim`` and ``take`` hand them to it)."""

    @abc.abstractmethod
    async def wait_lines(self, transaction_id: str, stored_lines: int, timeout: float) -> None:
        """Return once the job has more than ``stored_lines`` stored lines or its
        stored state changed, or after ``timeout`` seconds (whichever is first)."""

    @abc.abstractmethod
    async def nodes(self) -> list[NodeInfo]:
        """The live nodes, this one included, by name."""

    @abc.abstractmethod
    async def set_paused(self, queue: str, paused: bool) -> None:
        """Pause (or resume) ``queue`` in the whole cluster: no node claims its
        jobs while it is paused, and every node hears of it (``queues_paused``).

        Raises:
            StoreUnavailable: the database cannot be reached (nothing changed).
        """

    async def set_address(self, address: str) -> None:
        """This node listens at ``address`` (known only once its port is bound,
        after ``open``): ``nodes`` shows it from now on."""

    @abc.abstractmethod
    async def list_active(self, identity: str | None, after: int,
                          limit: int) -> Sequence[JobRecord]:
        """As ``list_records``, only jobs that have not ended."""

    @abc.abstractmethod
    async def recent_events(self, limit: int) -> list[TaskEvent]:
        """The cluster's last ``limit`` job events, oldest first (``GetTaskLog``)."""
