"""What ``Engine``'s parts kept in modules of their own use of the engine.

``Engine`` is made of parts (``Controls``, ``Placing``, ``Keeping``, and a cluster's
``Claims`` and ``ElsewhereCommands``), each a class of the methods of one concern.  They use
the engine's state and some of its methods; ``EngineParts`` declares those once,
for the type checker only: at run time it is ``object``, so a part adds no class
and no stub to the engine, and nothing to the cost of a call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = ["EngineParts"]

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Awaitable, Callable
    from typing import Protocol

    from ..config import Config
    from ..store.base import Recordable, Store
    from ..store.shared import Action, SharedStore
    from ..wire.records import JobRecord
    from .directory import JobDirectory
    from .job import Job
    from .lifecycle import CancelReason
    from .runner import JobRunner
    from .schedule import Clock, DueJobs, Recurring

    class EngineParts(Protocol):
        """The engine as its parts see it (defined by ``Engine``)."""

        jobs: JobDirectory
        clock: Clock
        _config: Config
        _store: Store
        _loop: asyncio.AbstractEventLoop | None
        machine_name: str
        started_at: float
        address: str
        _runner: JobRunner
        _due: DueJobs
        _schedules: Recurring
        _accepting: bool
        #: The store several nodes share, when the engine is one of a cluster's.
        _shared: SharedStore | None
        _adding: dict[str, list[asyncio.Future[None]] | None]

        @property
        def clustered(self) -> bool: ...

        def _adopt(self, record: JobRecord) -> Job: ...

        async def _add(self, job: Job,
                       add: Callable[[Recordable], Awaitable[None]] | None = None) -> None: ...

        async def _accept(self, record: JobRecord, *more_lines: bytes) -> Job: ...

        def _admit(self) -> None: ...

        def _next_transaction_id(self) -> str: ...

        async def _reserve_number(self) -> None: ...

        def _recover(self, record: JobRecord, dead_node: str | None = None) -> None: ...

        def _claim_soon(self) -> None: ...

        def cancel(self, job: Job, reason: CancelReason = ...) -> None: ...

        def suspend(self, job: Job) -> str: ...

        def resume(self, job: Job) -> str: ...

        async def act_elsewhere(self, transaction_id: str, action: Action) -> str | None: ...

        async def settle(self, job: Job) -> None: ...

        def _take_over(self, record: JobRecord) -> None: ...

        def _name_machine(self, job: Job) -> None: ...
else:
    EngineParts = object
