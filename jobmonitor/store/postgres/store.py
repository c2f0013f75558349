"""The PostgreSQL store: one database several servers (the cluster's nodes) share.

Writing is ``batching``'s group commit, fenced (``commit``): a job this node
holds is written only while the database still says this node holds it by the
same epoch.  Transaction numbers, claims, takes and requests are here; the
queries are ``sql``'s.

Being a node (``node``): a row in ``nodes``, its heartbeat, the reaper, and the
listener for notifications.  Every database failure that is the environment's
raises ``StoreUnavailable`` within the connect and statement timeouts; what was
pending stays pending and is written once the database is back.

Connections: a pool of up to ``POOL_SIZE`` for reads, claims, takes and
requests, and one each for the committer, the heartbeats and the listener, so
none of those waits for the others (a node opens at most seven).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import asyncpg

from ...errors import ConfigError, RequestError, StoreUnavailable
from ...wire.codes import Reply
from ...wire.records import JobRecord
from ...wire.variables import TASK_LOG_SIZE
from ..base import Recovery, TaskEvent
from ..outage import Outage
from ..shared import Action, NodeInfo, SharedStore
from ..sqlite.rows import job_row, number_of
from . import holding, sql
from .blocks import READ_AHEAD, BlockCache
from .commit import FencedCommits
from .connect import CONNECT_TIMEOUT_S, STATEMENT_TIMEOUT_S, Settings, unavailable
from .node import Node

if TYPE_CHECKING:
    from .sql import Db

__all__ = ["PostgresStore"]

log = logging.getLogger("jobmonitor.store")

#: Connections a node's pool keeps open at most, for reads, claims, takes and
#: requests (the committer, the listener and the heartbeats have one each).
POOL_SIZE = 4
#: Transaction numbers a node takes at a time; it takes more when half are used.
NUMBER_BLOCK = 100


class PostgresStore(FencedCommits, SharedStore):
    """Jobs in a PostgreSQL schema, shared by the nodes of a cluster."""

    job_row = staticmethod(job_row)
    job_update = staticmethod(sql.job_update)

    def __init__(self, settings: Settings, *, commit_interval_s: float = 0.05,
                 node_name: str | None = None, address: str = "", heartbeat_s: float = 1.0,
                 lease_s: float = 3.0) -> None:
        super().__init__(commit_interval_s=commit_interval_s,
                         outage=Outage(log, f"the store at {settings.where}"))
        self.settings = settings
        self._pool = None
        self.node = Node(self, settings, node_name=node_name, address=address,
                         heartbeat_s=heartbeat_s, lease_s=lease_s)
        self.node_name = self.node.name
        self.epochs = {}
        self._releases = {}
        self._releasing_now = {}
        self._kept_requests = set()
        self.stopping = False
        self._asked_of_released = {}
        self._token_taken = {}
        self._holding_now = 0
        self._writing = None
        self._not_sweeping = asyncio.Event()
        self._not_sweeping.set()
        self._numbers: collections.deque[int] = collections.deque()
        self._numbers_lock = asyncio.Lock()
        self._refill: asyncio.Task[None] | None = None
        #: Blocks of lines read ahead for followers catching up on long jobs.
        self._blocks = BlockCache()

    # -- life cycle -------------------------------------------------------------------

    async def open(self) -> Recovery:
        self._loop = asyncio.get_running_loop()
        where = self.settings.where
        try:
            self._pool = await asyncpg.create_pool(
                min_size=1, max_size=POOL_SIZE, command_timeout=STATEMENT_TIMEOUT_S,
                reset=_nothing_to_reset, **self.settings.connect_kwargs())
        except Exception as exc:  # noqa: BLE001 - any failure: one line, then stop
            raise ConfigError(f"store: cannot connect to {where}: {_reason(exc)}") from None
        try:
            async with self._pool.acquire(timeout=CONNECT_TIMEOUT_S) as db:
                recovery = await self._prepare(db)
                paused = await holding.paused_queues(db)
        except BaseException as exc:
            await self._close_pool()
            if isinstance(exc, Exception) and not isinstance(exc, ConfigError):
                raise ConfigError(f"store: cannot open {where}: {_reason(exc)}") from None
            raise
        self._start_commits(recovery)
        self.node.start()
        self.node.tell_paused(paused)
        return recovery

    async def _prepare(self, db: Db) -> Recovery:
        """Make or check the schema, join the cluster, and say what a new node
        recovers (nothing it holds: the recent events and the schedule marks)."""
        version = await sql.create_schema(db, self.settings.schema)
        if version > sql.SCHEMA_VERSION:
            raise ConfigError(
                f"store: schema {self.settings.schema} was made by a newer jobmonitor "
                f"(version {version}, this one knows {sql.SCHEMA_VERSION}): upgrade it")
        await self.node.register(db)
        return Recovery(await sql.last_number(db), [],
                        await sql.recent_events(db, TASK_LOG_SIZE), await sql.schedule_marks(db))

    async def close(self, *, keep_lock: bool = False) -> None:
        """Write what is pending, and leave the cluster: the other nodes take over
        the jobs this node still runs at their next reaping.  ``keep_lock``: a
        handler of this node still runs, so its jobs are left to be taken over
        only once this node's lease has ended (its heartbeats stop now)."""
        await self.node.stop()
        if self._refill is not None:
            self._refill.cancel()
        await self._stop_commits()
        if self._pool is not None and not keep_lock:
            try:
                await self.call(self.node.leave)
            except (StoreUnavailable, asyncpg.PostgresError) as exc:
                log.warning("leaving the cluster failed (%s): the others take this node's "
                            "jobs once its lease ends", exc)
        await self._close_pool()

    async def _close_pool(self) -> None:
        writer, self._writing = self._writing, None
        if writer is not None:
            try:
                await asyncio.wait_for(writer.close(), CONNECT_TIMEOUT_S)
            except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                writer.terminate()
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), CONNECT_TIMEOUT_S)
            except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                pool.terminate()

    def release_lock(self) -> None:
        """No lock: nodes share the store (a job is fenced by its holder and epoch);
        after ``close(keep_lock=True)`` the node's lease runs out by itself."""

    # -- calling the database ----------------------------------------------------------

    async def call(self, func: Callable[..., Any], *args: Any, refused: int = 1) -> Any:
        """``await func(connection, *args)`` on one of the pool's connections
        (``refused``: how many commands a failure refuses; 0 for the node's own
        heartbeats and polls).

        Raises:
            StoreUnavailable: the database cannot be used now (down, unreachable, slow).
        """
        pool = self._pool
        if pool is None:
            raise StoreUnavailable("the store is closed")
        try:
            async with pool.acquire(timeout=CONNECT_TIMEOUT_S) as db:
                return await func(db, *args)
        except Exception as exc:
            refusal = unavailable(exc)
            if refusal is None:
                raise  # a bug: logged in full by whoever answers the command
            self._outage.failed(exc, refused, expected=True)
            raise refusal from exc

    def worked(self) -> None:
        """A statement went through (a heartbeat): a spell of failures has ended."""
        self._outage.worked()

    # -- transaction numbers ------------------------------------------------------------

    def take_number(self) -> int | None:
        if len(self._numbers) <= NUMBER_BLOCK // 2 and self._refill is None \
                and self._loop is not None:
            self._refill = self._loop.create_task(self._refill_numbers())
        return self._numbers.popleft() if self._numbers else None

    async def _refill_numbers(self) -> None:
        try:
            await self.more_numbers()
        except (StoreUnavailable, RequestError) as exc:
            log.debug("taking transaction numbers ahead failed: %s", exc)
        finally:
            self._refill = None

    async def more_numbers(self) -> None:
        async with self._numbers_lock:
            if len(self._numbers) > NUMBER_BLOCK // 2:
                return
            try:
                numbers = await self.call(sql.take_numbers, NUMBER_BLOCK)
            except asyncpg.SequenceGeneratorLimitExceededError:
                raise RequestError(Reply.SERVER_BUSY,
                                   "the cluster has used up its transaction numbers") from None
            self._numbers.extend(numbers)

    # -- holding jobs, and asking their holders --------------------------------------------

    async def claim(self, limit: int, queues: Sequence[str] | None = None) -> list[JobRecord]:
        if limit <= 0 or (queues is not None and not queues):
            return []
        async with self._holding():
            claimed, asked = await self.call(holding.claim, self.node.node_id, limit, queues,
                                             time.time())
        for record, epoch in claimed:
            self.hold(record, epoch)
        if asked:  # (read once the engine holds the records: after this returns)
            self.node.ask_for_requests()
        return [record for record, _ in claimed]

    async def take(self, transaction_id: str) -> JobRecord | None:
        number = number_of(transaction_id)
        if number is None:
            return None
        async with self._holding():
            taken, asked = await self.call(holding.take, self.node.node_id, number,
                                           self.node.lease_s)
        if taken is None:
            return None
        record, epoch = taken
        self.hold(record, epoch)
        if asked:
            self.node.ask_for_requests()
        return record  # type: ignore[no-any-return]

    async def request(self, transaction_id: str, action: Action) -> bool:
        number = number_of(transaction_id)
        if number is None:
            return False
        holder = await self.call(holding.request, number, action, self.node.lease_s,
                                 self.settings.channel("control"))
        return holder is not None

    async def wait_lines(self, transaction_id: str, stored_lines: int, timeout: float) -> None:
        await self.node.wait_lines(transaction_id, stored_lines, timeout)

    def attach(self, hooks: Any) -> None:
        self.node.hooks = hooks

    async def set_address(self, address: str) -> None:
        await self.node.set_address(address)

    async def set_paused(self, queue: str, paused: bool) -> None:
        await self.call(holding.set_paused, queue, paused, self.settings.channel("queues"))

    async def nodes(self) -> list[NodeInfo]:
        rows = await self.call(holding.live_nodes, self.node.lease_s)
        return [NodeInfo(*row) for row in rows]

    # -- reading and deleting -------------------------------------------------------------

    async def load(self, transaction_id: str) -> JobRecord | None:
        number = number_of(transaction_id)
        if number is None:
            return None
        records = await self.call(sql.select_records, "number = $1", number)
        return records[0] if records else None

    async def find_token(self, identity: str, job_token: str) -> str | None:
        found: str | None = await self.call(sql.find_token, identity, job_token)
        return found

    async def read_lines(self, transaction_id: str, from_line: int, limit: int) -> list[bytes]:
        number = number_of(transaction_id)
        if number is None:
            return []
        lines = self._blocks.page(number, from_line, limit)
        if lines is None:
            blocks = await self.call(sql.read_blocks, number, from_line, limit * READ_AHEAD)
            self._blocks.keep(number, blocks)
            lines = sql.page_of(blocks, from_line, limit)
        return lines

    async def list_records(self, identity: str | None, after: int,
                           limit: int) -> Sequence[JobRecord]:
        records: list[JobRecord] = await self.call(sql.list_page, identity, after, limit)
        return records

    async def list_active(self, identity: str | None, after: int,
                          limit: int) -> Sequence[JobRecord]:
        async def page(db: Db) -> list[JobRecord]:
            return await sql.list_page(db, identity, after, limit, active=True)
        records: list[JobRecord] = await self.call(page)
        return records

    async def recent_events(self, limit: int) -> list[TaskEvent]:
        events: list[TaskEvent] = await self.call(sql.recent_events, limit)
        return events

    async def delete(self, transaction_id: str) -> None:
        number = number_of(transaction_id)
        if number is not None:
            self._blocks.forget(number)
            await self.call(sql.delete_numbers, [number])
            self.worked()

    async def purge(self, finished_before: float) -> int:
        numbers: list[int] = await self.call(sql.finished_before_numbers, finished_before)
        if numbers:
            self._blocks.clear()
            await self.call(sql.delete_numbers, numbers)
        return len(numbers)

    async def check(self) -> list[str]:
        from .check import check_schema  # (only the check command needs it)
        return await check_schema(self.settings)


async def _nothing_to_reset(connection: object) -> None:
    """A connection back in the pool: the store leaves no session state behind
    (no LISTEN, no session locks or settings; transactions end in their block),
    so the driver's reset statement, a round trip per use, is left out."""


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
