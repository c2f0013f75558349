"""Being one node of the cluster: its row in ``nodes``, heartbeats, the reaper,
requests from other nodes, and the notifications it listens for.

Every ``heartbeat_s`` the node writes its heartbeat.  When the row is gone,
another node declared this one dead (it was cut off past its lease) and took
its jobs: the engine is told it lost them all, and the node joins again under
a new id.  Then it reaps: a node whose heartbeat is older than ``lease_s`` (by
the database's clock) is dead; its waiting jobs are let go for anyone to
claim and its running ones are taken over here (``hooks.taken_over``).  A
node reaps only once its own heartbeats have gone through for a whole lease
without a gap: after the database itself was down, every node's heartbeat is
old, and each must first have had the time to write its own again.

The heartbeat is also the fallback of the notifications: each one asks for
the requests addressed to this node and tells the engine work may be waiting,
so a lost notification costs at most a heartbeat.  Now and then it also looks
for *strays*: jobs the database says this node holds that it does not know of
(a claim or take whose answer was lost with its connection).

The heartbeat has a connection of its own, and the chores that follow it run
beside it on the pool: however busy the pool, the node never looks dead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, cast

import asyncpg

from ...errors import StoreUnavailable
from ...wire.records import JobRecord
from ..shared import Action, ClusterHooks
from ..sqlite.rows import FINAL, number_of, transaction_id_of
from . import holding
from .connect import Listener, Settings, unavailable

if TYPE_CHECKING:
    from .sql import Db

__all__ = ["Node"]

log = logging.getLogger("jobmonitor.store")

#: The longest a ``wait_lines`` waits for a notification before the caller
#: looks again (a notification sent while the listener reconnected is lost).
LONGEST_LINE_WAIT_S = 1.0
_ACTIONS = frozenset({"cancel", "suspend", "resume"})
#: Most jobs whose stored line count this node keeps from the notifications
#: (``Node.heard``); past it they are forgotten, and a wait reads the count.
MOST_HEARD_JOBS = 10_000
#: Every so many reapings, look for jobs held by no node even when no node died;
#: every so many heartbeats, for jobs held by this node that it does not know of.
SWEEP_EVERY = 5


class NodeStore(Protocol):
    """What a node asks of its store (``store.PostgresStore``)."""

    #: Per job written or held: (its holder as this node knows it, epoch).
    epochs: dict[int, tuple[str | None, int]]
    #: True once the node stops (it let go of a job keeping its requests).
    stopping: bool

    async def call(self, func: Callable[..., Any], *args: Any, refused: int = 1) -> Any: ...

    def worked(self) -> None: ...

    def held(self) -> list[int]: ...

    def releasing(self) -> list[int]: ...

    def forget(self, number: int) -> None: ...

    def hold(self, record: JobRecord, epoch: int) -> None: ...

    def begin_sweep(self) -> bool: ...

    def end_sweep(self) -> None: ...


class _NoHooks:
    """The hooks of a store nobody attached to (a check, a test of the store)."""

    def work_available(self) -> None:
        pass

    def requested(self, transaction_id: str, action: Action) -> None:
        pass

    def lost(self, transaction_ids: Sequence[str]) -> None:
        pass

    def taken_over(self, records: Sequence[JobRecord]) -> None:
        pass

    def queues_paused(self, names: frozenset[str]) -> None:
        pass


class Node:
    """This process's membership of the cluster."""

    def __init__(self, store: NodeStore, settings: Settings, *, node_name: str | None,
                 address: str, heartbeat_s: float, lease_s: float) -> None:
        self.store = store
        self.settings = settings
        self.name = node_name or socket.gethostname()
        self.address = address
        self.heartbeat_s = heartbeat_s
        self.lease_s = lease_s
        self.hooks: ClusterHooks = _NoHooks()
        self.node_id = self._new_id()
        self.started = time.time()
        #: Jobs waited on (``wait_lines``): number -> the futures of the waiters.
        self._line_waiters: dict[int, set[asyncio.Future[None]]] = {}
        #: Per unfinished job, its stored line count as the last notification of it
        #: said, since the listener (re)connected: a wait for a job heard of needs
        #: no read of the count (every later commit of it will be heard).
        self.heard: dict[int, int] = {}
        self._beating: asyncio.Task[None] | None = None
        self._asking: asyncio.Task[None] | None = None
        #: The queues paused in the cluster as the engine was last told, and the
        #: read of them under way.
        self._paused: frozenset[str] | None = None
        self._reading_paused: asyncio.Task[None] | None = None
        self._ask_again = False
        self._address_written = True
        self._reaps = 0
        self._beats = 0
        self._beat_db: asyncpg.Connection[asyncpg.Record] | None = None
        self._chores: asyncio.Task[None] | None = None
        #: The first heartbeat of the current run without a gap, and the last one
        #: (loop time); a node reaps only a lease into such a run.
        self._good_since: float | None = None
        self._last_good = 0.0
        self.listener = Listener(settings, {
            settings.channel("work"): self._heard_work,
            settings.channel("lines"): self._heard_lines,
            settings.channel("control"): self._heard_control,
            settings.channel("queues"): self._heard_queues,
        }, self._listening)

    def _new_id(self) -> str:
        return f"{self.name}#{secrets.token_hex(6)}"

    async def register(self, db: Db) -> None:
        await holding.register(db, self.node_id, self.name, self.address, self.started)
        if await holding.namesakes(db, self.node_id, self.name, self.lease_s):
            # (Not refused: a node restarted within its lease meets its own old row.)
            log.warning("another live node of this cluster is named %s: the jobs and "
                        "ListNodes rows of the two cannot be told apart; give each node its "
                        "own --node-name (this warning is expected once if the node was "
                        "restarted within %.1f s of stopping without leaving)",
                        self.name, self.lease_s)

    async def set_address(self, address: str) -> None:
        """Show ``address`` for this node from now on (written now, or by the
        next heartbeat's chores if the database cannot be reached now)."""
        if address == self.address:
            return
        self.address = address
        self._address_written = False
        await self._write_address()

    async def _write_address(self) -> None:
        try:
            await self.store.call(holding.set_address, self.node_id, self.address, refused=0)
        except StoreUnavailable as exc:
            log.debug("writing this node's address failed: %s", exc)
            return
        self._address_written = True

    async def leave(self, db: Db) -> None:
        """Take this node out of the cluster; the jobs it still holds are others' to
        take over (a running one) or claim (a waiting one) at their next reaping."""
        await holding.unregister(db, self.node_id)

    def start(self) -> None:
        self._beating = asyncio.get_running_loop().create_task(self._beat())
        self.listener.start()

    async def stop(self) -> None:
        await self.listener.stop()
        for task in (self._beating, self._asking, self._chores, self._reading_paused):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._beating = self._asking = self._chores = self._reading_paused = None
        self._drop_beat_connection()

    # -- heartbeats and the reaper ------------------------------------------------------

    async def _beat(self) -> None:
        """Write a heartbeat every ``heartbeat_s``, and start the chores that
        follow one (unless the last ones still run: they use the pool, which may
        be busy, and must never hold up the heartbeats)."""
        loop = asyncio.get_running_loop()
        next_beat = loop.time()
        while True:
            try:
                # (asyncio.timeout, not wait_for: on Python 3.11 wait_for loses a
                # cancel that comes as its awaitable finishes, and stop() then
                # waits for ever on heartbeats that go on.)
                async with asyncio.timeout(self.lease_s):
                    alive = await self._say_alive()
                now = loop.time()
                if self._good_since is None or now - self._last_good > self.lease_s:
                    self._good_since = now  # a gap: a lease must pass before reaping again
                self._last_good = now
                self.store.worked()
                if not alive:
                    self._good_since = None
                    async with asyncio.timeout(self.lease_s):
                        await self._declared_dead()
                elif self._chores is None or self._chores.done():
                    self._chores = loop.create_task(self._do_chores())
            except (StoreUnavailable, TimeoutError) as exc:
                self._good_since = None
                self._drop_beat_connection()
                log.debug("a heartbeat failed: %s", exc)
            except Exception:  # a bug: logged, and the heartbeats go on
                self._good_since = None
                self._drop_beat_connection()
                log.exception("a heartbeat failed")
            self.listener.check()
            # (At a steady pace: the time a heartbeat took is not added to the period.)
            next_beat = max(next_beat + self.heartbeat_s, loop.time())
            await asyncio.sleep(next_beat - loop.time())

    def _may_reap(self) -> bool:
        """This node's own heartbeats have gone through for a whole lease, the
        last one just now."""
        now = asyncio.get_running_loop().time()
        return (self._good_since is not None and now - self._good_since >= self.lease_s
                and now - self._last_good <= self.heartbeat_s * 2)

    async def _do_chores(self) -> None:
        """After a heartbeat: the requests for this node, a poll for work, the
        reaper, and now and then a look for strays."""
        try:
            await self._take_requests()
            await self._read_paused()
            self.hooks.work_available()
            if not self._address_written:
                await self._write_address()
            if self._may_reap():
                await self._reap()
            if self._beats % SWEEP_EVERY == 0:
                await self._find_strays()
            self._beats += 1
        except StoreUnavailable as exc:
            log.debug("the chores after a heartbeat failed: %s", exc)
        except Exception:  # a bug: logged, and the next heartbeat tries again
            log.exception("the chores after a heartbeat failed")

    async def _say_alive(self) -> bool:
        """Write this node's heartbeat, on a connection of its own: a pool busy
        with reads and commits must not make the node look dead."""
        db = self._beat_db
        try:
            if db is None or db.is_closed():
                db = self._beat_db = await asyncpg.connect(**self.settings.connect_kwargs())
            return await holding.heartbeat(db, self.node_id)
        except Exception as exc:
            refusal = unavailable(exc)
            if refusal is None:
                raise
            raise refusal from exc

    def _drop_beat_connection(self) -> None:
        db, self._beat_db = self._beat_db, None
        if db is not None:
            db.terminate()

    async def _declared_dead(self) -> None:
        """The other nodes declared this one dead and took its jobs: drop them
        all, and join again under a new id."""
        lost = self.store.held()
        for number in lost:
            self.store.forget(number)
        old, self.node_id = self.node_id, self._new_id()
        log.error("this node (%s) was declared dead by the others (its heartbeats stopped "
                  "for longer than %.1f s) and lost its %d jobs; it joins again as %s",
                  old, self.lease_s, len(lost), self.node_id)
        db = self._beat_db
        if db is None:
            raise StoreUnavailable("the heartbeat's connection broke")
        await self.register(db)
        if lost:
            self.hooks.lost([transaction_id_of(number) for number in lost])

    async def _reap(self) -> None:
        dead, released, taken = await self.store.call(
            holding.reap, self.settings.schema, self.node_id, self.lease_s,
            self.settings.channel("work"), self._reaps % SWEEP_EVERY == 0, refused=0)
        self._reaps += 1
        if dead:
            log.warning("declared dead (no heartbeat for %.1f s): %s", self.lease_s,
                        ", ".join(dead))
        if released or taken:
            log.warning("took over %d running jobs of nodes that are gone, and let go of %d "
                        "waiting ones", len(taken), len(released))
        self._found(released, taken)

    async def _find_strays(self) -> None:
        store = self.store

        async def sweep(db: Db) -> tuple[list[int], list[tuple[JobRecord, int]]]:
            # (With a connection at hand: adds, claims and takes wait only for the
            # statement, never for the pool.)
            if not store.begin_sweep():
                return [], []  # (one is under way: next time)
            try:
                return await holding.strays(db, self.node_id, store.held(),
                                            self.settings.channel("work"))
            finally:
                store.end_sweep()

        released, taken = await store.call(sweep, refused=0)
        if released or taken:
            log.warning("found %d jobs held by this node that it did not know of (an answer "
                        "lost with its connection): let go of %d waiting, recovering %d "
                        "running", len(released) + len(taken), len(released), len(taken))
        self._found(released, taken)

    def _found(self, released: list[int], taken: list[tuple[JobRecord, int]]) -> None:
        """After a reaping or a sweep: hold the running jobs taken, and tell the
        engine of them and of the waiting ones let go (for any node to claim)."""
        for record, epoch in taken:
            self.store.hold(record, epoch)
        if taken:
            self.hooks.taken_over([record for record, _ in taken])
        if released:
            self.hooks.work_available()

    # -- requests from other nodes --------------------------------------------------------

    async def _take_requests(self) -> None:
        store = self.store
        requests = await store.call(holding.take_requests, self.node_id, store.releasing(),
                                    refused=0)
        held = store.epochs
        releasing = store.releasing()
        let_go = []
        for number, actions in requests:
            if (number not in held or number in releasing) and store.stopping:
                # Let go of by a stopping node while they were read (the read began
                # before the release): they stay with the job, for its next
                # holder, as a stop's release leaves them.
                let_go.append((number, actions))
                continue
            # (One let go of meanwhile by a node that goes on is handed to its
            # engine, which passes it on, as a release hands them back.)
            for action in actions.split(","):  # (in the order they were asked)
                if action in _ACTIONS:
                    self.hooks.requested(transaction_id_of(number), cast(Action, action))
        if let_go:
            await store.call(holding.put_back_requests, let_go, refused=0)

    def ask_for_requests(self) -> None:
        """Read this node's requests soon (again, if a read is under way: it may
        have looked before the latest one was stored)."""
        if self._asking is None or self._asking.done():
            self._asking = asyncio.get_running_loop().create_task(self._asked())
        else:
            self._ask_again = True

    async def _asked(self) -> None:
        self._ask_again = True
        while self._ask_again:
            self._ask_again = False
            try:
                await self._take_requests()
            except StoreUnavailable as exc:  # the next heartbeat asks again
                log.debug("reading requests failed: %s", exc)
                return

    # -- notifications ----------------------------------------------------------------------

    def _listening(self) -> None:
        """The listener (re)connected: what it missed meanwhile, the next heartbeat
        would find; find it now."""
        self.heard.clear()  # (what was missed meanwhile is not in it)
        self.ask_for_requests()
        self.look_at_queues()
        self.hooks.work_available()
        self._wake_all()

    def _heard_queues(self, payload: str) -> None:
        self.look_at_queues()

    def look_at_queues(self) -> None:
        """Read the queues paused in the cluster soon (unless a read is under way)."""
        if self._reading_paused is None or self._reading_paused.done():
            self._reading_paused = asyncio.get_running_loop().create_task(self._read_paused())

    async def _read_paused(self) -> None:
        try:
            paused = await self.store.call(holding.paused_queues, refused=0)
        except StoreUnavailable as exc:  # the next heartbeat reads them again
            log.debug("reading the paused queues failed: %s", exc)
            return
        self.tell_paused(paused)

    def tell_paused(self, paused: frozenset[str]) -> None:
        """Tell the engine the queues paused in the cluster, if they changed."""
        if paused != self._paused:
            self._paused = paused
            self.hooks.queues_paused(paused)

    def _heard_work(self, payload: str) -> None:
        self.hooks.work_available()

    def _heard_control(self, payload: str) -> None:
        if payload == self.node_id:
            self.ask_for_requests()

    def _heard_lines(self, payload: str) -> None:
        waiters = self._line_waiters
        heard = self.heard
        if len(heard) > MOST_HEARD_JOBS:
            heard.clear()  # (jobs that ended unheard, or lost: the waits read the count)
        for entry in payload.split(","):
            number_text, _, rest = entry.partition(":")
            lines, _, status = rest.partition(":")
            if not (number_text.isdigit() and lines.isdigit()):
                continue
            number = int(number_text)
            if status in FINAL:
                heard.pop(number, None)  # (a wait after the end reads the count)
            else:
                heard[number] = int(lines)
            for waiter in waiters.get(number, ()):
                if not waiter.done():
                    waiter.set_result(None)

    def _wake_all(self) -> None:
        for waiters in self._line_waiters.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    async def wait_lines(self, transaction_id: str, stored_lines: int, timeout: float) -> None:
        number = number_of(transaction_id)
        if number is None or timeout <= 0:
            return
        waiter = asyncio.get_running_loop().create_future()
        waiters = self._line_waiters.setdefault(number, set())
        waiters.add(waiter)
        try:
            # A commit between the caller's read and this wait notified no one here:
            # its line count was heard, or else it is read.
            count = self.heard.get(number) if self.listener.listening else None
            if count is None:
                try:
                    count = await self.store.call(_line_count, number, refused=0)
                except StoreUnavailable:
                    count = None
            if count is not None and count > stored_lines:
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(timeout, LONGEST_LINE_WAIT_S)):
                    await waiter
        finally:
            waiters.discard(waiter)
            if not waiters:
                self._line_waiters.pop(number, None)


async def _line_count(db: Db, number: int) -> int | None:
    count: int | None = await db.fetchval("SELECT line_count FROM jobs WHERE number = $1", number)
    return count
