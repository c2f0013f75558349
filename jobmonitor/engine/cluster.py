"""What the engine does as one node of a cluster (a ``SharedStore``, issue 18).

``Clustered`` is the part of ``Engine`` for a cluster, itself made of two
parts: ``Claims`` (``claims``: transaction numbers from the store, the jobs
this node holds, claims of waiting jobs, letting go of them, and the store's
word of work, lost jobs and jobs taken over) and ``ElsewhereCommands``
(``elsewhere``: cancel, suspend and resume of jobs another node holds, and
those other nodes ask of this one).  Here: what the cluster shows (its nodes,
its task log, the address of this node) and the queues paused in all of it.
A monitor of a job held elsewhere follows the job's stored lines (``directory``).

With any other store none of this runs: ``_shared`` is None.
"""

from __future__ import annotations

from ..store.base import TaskEvent
from ..store.shared import NodeInfo
from ..wire.variables import TASK_LOG_SIZE
from .claims import Claims
from .elsewhere import TAKE_TRIES, ElsewhereCommands

__all__ = ["Clustered", "TAKE_TRIES"]


class Clustered(Claims, ElsewhereCommands):
    """A node's side of a cluster: a part of ``Engine``."""

    @property
    def clustered(self) -> bool:
        """True when this engine is one node of a cluster (a shared store)."""
        return self._shared is not None

    #: The queues paused in the whole cluster, as the store last said.
    _cluster_paused: frozenset[str] = frozenset()

    def queues_paused(self, names: frozenset[str]) -> None:
        """The queues paused in the whole cluster now (``PauseQueue`` on any
        node): paused here too; one resumed elsewhere starts its jobs here again."""
        lines = self._runner.lines
        for name in names - self._cluster_paused:
            lines.pause(name)
        resumed = self._cluster_paused - names
        for name in resumed:
            lines.resume(name)
        self._cluster_paused = names
        if resumed and self._accepting:
            self._runner.start_ready()
            self._claim_soon()

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
