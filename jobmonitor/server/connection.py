"""One client connection: read a command packet, answer it, maybe stream a job.

A connection goes READING -> BUSY -> (WATCHING) -> LINGERING -> closed
(and from an answer back to READING, when the packet kept the connection):

* READING feeds bytes to the sans-I/O ``PacketParser`` under a deadline,
  through a ``PacketReader`` that gives a big packet's parsing its turns on
  the loop (``parse_turns``): it calls ``_dispatch`` or ``_refuse``.  (A
  packet's first bytes are first tried whole on the fast path, with no
  reader: the usual packet comes whole in one chunk);
* BUSY runs the command (a task: a submit waits for the store);
* WATCHING follows a job's stream: lines still in memory come from the
  ``JobStream``; older ones (a re-attach far back, a job that left memory, a
  reader that fell behind a trimmed stream) are read from the store in pages,
  each written once the transport can take more.  What the client sends
  meanwhile is ignored (or, on a kept connection, held for its turn);
* LINGERING: our side is shut, and we wait for the client's (see ``output``).

``Connection`` runs the command and follows the job; its base class ``Input``
(``input``) reads the packets, with their deadlines and kept connections, and
its base ``Output`` (``output``) is the one write path: every byte goes out
through ``write`` / ``reply``, with the batching, the corks, the flow control,
the end, and the checks on a client that stops reading.  What a connection
uses of its server comes in one ``ConnectionContext``, so a connection can be
built without a ``Server``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from ..config import Config
from ..engine.engine import Engine
from ..engine.stream import JobStream
from ..errors import RequestError
from ..wire.codes import Reply, Status
from ..wire.lines import clip
from ..wire.packet import Packet
from ..wire.variables import behind_notice
from .commands import Commands
from .deadlines import Deadlines
from .eager import start_eagerly
from .input import Input
from .output import ConnectionState
from .parse_turns import ParseTurns
from .refusals import RefusalLog

__all__ = ["Connection", "ConnectionContext"]

log = logging.getLogger("jobmonitor.connection")

#: Lines read from the store at a time when a watcher catches up.
CATCH_UP_PAGE_LINES = 2000
#: How the last line of a job's stream starts.
ENDED_HEAD = b"J%07d: " % Status.ENDED
#: Longest a monitor of a job held by another node waits for its next lines
#: before it looks again (a lost wake-up costs at most this).
FOLLOW_WAIT_S = 1.0
_BUSY, _WATCHING = ConnectionState.BUSY, ConnectionState.WATCHING
_CLOSED = ConnectionState.CLOSED


@dataclass(frozen=True, slots=True)
class ConnectionContext:
    """What the connections of one server share (``Server.start`` builds it)."""

    loop: asyncio.AbstractEventLoop
    config: Config
    engine: Engine
    commands: Commands
    #: The reading deadlines of every connection (one loop timer per tick).
    deadlines: Deadlines
    #: Accepted sockets start corked (see ``sockets.cork_listeners``).
    accepts_corked: bool
    #: The log of refused logins and permissions.
    refusals: RefusalLog
    #: The loop's budget for parsing big packets, shared by every connection.
    parse_turns: ParseTurns
    #: Called once a connection is made: count it, and say whether there is room
    #: for it (False past ``max_connections``: it is refused, and counted until lost).
    opened: Callable[[Connection], bool]
    #: Called once a connection is lost.
    closed: Callable[[Connection], None]
    #: Commands start eagerly (a cluster's node: in a task from the start, as its
    #: store's driver needs; decided once, not per packet).
    eager: bool = True


class Connection(Input):
    """The protocol object of one client connection."""

    __slots__ = ("_context", "_task", "_stream", "_followed", "_next_line", "_checking",
                 "stream_cursor", "_follow_from")

    def __init__(self, context: ConnectionContext) -> None:
        super().__init__(context.loop, context.config, context.accepts_corked, context.deadlines,
                         context.parse_turns)
        self._context = context
        self._task: asyncio.Task[None] | asyncio.Task[bool] | None = None
        self._checking = False  # the task waits for the client's credentials to be checked
        #: The transaction ID of the job this connection follows (WATCHING), if any.
        self._followed: str | None = None
        #: The live stream writing to this connection, while it watches one.
        self._stream: JobStream | None = None
        self._next_line = 1  # while reading from the store: the next line to send
        #: Where this connection is in the stream it watches (kept by the stream).
        self.stream_cursor = 0
        self._follow_from = 1  # the first line the monitor asked for

    def _peer_host(self) -> str:
        """The client's address (without the port)."""
        peer = self._transport.get_extra_info("peername") if self._transport else None
        return str(peer[0]) if isinstance(peer, tuple) else str(peer)

    # -- asyncio.Protocol --------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tcp: asyncio.Transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        self._transport = tcp
        # No TCP_NODELAY here: asyncio and uvloop both set it on every TCP transport.
        tcp.set_write_buffer_limits(high=self._config.max_pending_output_bytes)
        if not self._context.opened(self):
            self._refuse(RequestError(Reply.SERVER_BUSY, "too many connections"))
            return
        self._start_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._checking and self._task is not None:
            # Nobody is left to answer, and the connection's place is given back
            # now: its password check (which may wait its turn behind others from
            # the same address) must not stay behind, holding the packet.
            self._task.cancel()
        if self._stream is not None:
            self._leave_stream()
        if self._followed is not None:
            self._context.engine.jobs.monitor_detached(self._followed)
            self._followed = None
        super().connection_lost(exc)
        self._context.closed(self)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._stream is not None:
            self._stream.catch_up(self)

    def close(self) -> None:
        if self._stream is not None:  # (the usual connection ends watching none)
            self._leave_stream()
        super().close()

    # -- the end of an answer -------------------------------------------------------------

    def _next_packet(self) -> None:
        if self._followed is not None and (self._state is _WATCHING or self._state is _BUSY):
            self._context.engine.jobs.monitor_detached(self._followed)
            self._followed = None
            self._next_line = 1
        super()._next_packet()

    def _stream_done(self, sent_the_end: bool) -> None:
        """A monitor has had every line.  Without its ended line (it asked from
        past the end) the client can tell the end of the stream only by the
        connection's close: so then even a kept connection ends."""
        if not sent_the_end:
            self._keep_open = False
        self._answered()

    # -- the stream's Watcher interface (with Output's writable and write) --------

    def stream_ended(self) -> None:
        self._stream = None
        if self._keep_open and not self._stopping and self.stream_cursor >= self._follow_from:
            # On the next turn: not from inside the stream's flush, which may be
            # inside the job's own code.
            self._loop.call_soon(self._next_packet)
        else:  # (a kept connection too, when no ended line was sent: see _stream_done)
            self._keep_open = False
            self.finish()

    def fell_behind(self, next_line: int) -> None:
        self._stream = None
        assert self._followed is not None  # (only the followed job's stream watches us)
        self._task = self._loop.create_task(self._follow_safely(self._followed, next_line))

    def _leave_stream(self) -> int | None:
        """Stop watching the live stream; return the next line it would have sent."""
        stream, self._stream = self._stream, None
        return stream.unwatch(self) if stream is not None else None

    def _stalled(self) -> None:
        """The client took no bytes for ``monitor_stall_s`` while lines waited."""
        next_line = self._leave_stream() or self._next_line
        self.write(behind_notice(next_line))
        log.info("monitor %s of %s stalled; told it to re-attach from line %d", self.peer,
                 self._followed, next_line)
        # What is queued (the notice last) is still sent if the client reads again;
        # close() drops it if the client takes none of it for monitor_stall_s more.
        self.close()

    # -- the command ------------------------------------------------------------------

    def _run(self, packet: Packet) -> None:
        # Most commands never wait (a submit to the memory store, a status query):
        # they run to their end here, with no task and no extra loop turn.
        task = start_eagerly(self._loop, self._answer(packet), eager=self._context.eager)
        if task is not None:  # kept while it runs: the loop holds tasks weakly
            self._task = task
            task.add_done_callback(self._forget_task)

    def _forget_task(self, task: asyncio.Task[None]) -> None:
        if self._task is task:
            self._task = None

    async def _answer(self, packet: Packet) -> None:
        commands = self._context.commands
        try:
            caller = commands.open_caller(packet)  # (no coroutine unless users are set)
            if caller is None:
                self._checking = True  # (a lost connection cancels it: see connection_lost)
                try:
                    caller = await commands.caller(packet, self._peer_host)
                finally:
                    self._checking = False
            response = await commands.execute(packet, caller)
        except RequestError as exc:
            self._context.refusals.refused(exc.code, self._peer_host, packet)
            self.reply(exc.code, exc.reply_text)
            self._answered()
            return
        except Exception:
            log.exception("command %s from %s failed", clip(packet.command), self.peer)
            self.reply(Reply.INTERNAL_ERROR)
            self._answered()
            return
        self._start_batch()
        self.reply(Reply.OK, response.text)
        if response.follow is None or self._state is _CLOSED:
            self._answered()
            return
        self._state = _WATCHING
        self._followed = response.follow
        self._follow_from = response.from_line
        self._context.engine.jobs.monitor_attached(response.follow)
        if not await self._follow_safely(response.follow, response.from_line):
            return
        # Hold the reply until the job's first lines can join it: a job that ends
        # at once then goes out with the reply in one send (finish() sends the
        # batch at once).  That is the end of this loop turn; with a durable
        # store, whose monitors get only stored lines, the next commit (a few ms).
        self._context.engine.when_stored(self._flush)

    async def _follow_safely(self, transaction_id: str, line: int) -> bool:
        """``_follow``; on a failure (the store cannot be read, a bug) log it, close,
        and return False.

        After ``R0000000`` no R line may come, and no J code says the server
        failed (J lines are the job's, and count as its lines): so the stream ends
        the way a lost connection does, after whole lines and without the ended
        line, and the client re-attaches from the next line.  Closing, not just
        stopping, also gives back the connection and the job's monitor place.
        """
        try:
            await self._follow(transaction_id, line)
        except Exception:
            log.exception("following %s for %s failed; closing", transaction_id, self.peer)
            self.close()
            return False
        return True

    async def _follow(self, transaction_id: str, line: int) -> None:
        """Send the job's lines from ``line`` on: from the store while they are
        not in memory, then by watching the live stream."""
        jobs = self._context.engine.jobs
        look = True  # (a cluster's job held elsewhere: see JobDirectory.more_stored)
        while self._state is _WATCHING:
            job = jobs.live(transaction_id)
            if job is not None and job.stream.in_memory(line):
                self._stream = job.stream
                job.stream.watch(self, line)
                return
            self._flush()
            page = await jobs.read_lines(transaction_id, line, CATCH_UP_PAGE_LINES)
            if not page:
                if job is None:
                    # (a cluster's job held elsewhere: its next lines, once stored)
                    if await jobs.more_stored(transaction_id, line, FOLLOW_WAIT_S,
                                              look_first=look):
                        look = False
                        continue
                    self._stream_done(line > self._follow_from)  # replayed to its end
                    return
                line = job.stream.base + 1  # nothing stored before the memory window
                continue
            look = page[-1].startswith(ENDED_HEAD)  # (the end: the next look says so)
            self.write(b"".join(page))
            line += len(page)
            self._next_line = line
            await self._wait_writable()
