"""One client connection: read a command packet, answer it, maybe stream a job.

A connection goes READING -> BUSY -> (WATCHING) -> LINGERING -> closed:

* READING feeds bytes to the sans-I/O ``PacketParser`` under a deadline,
  through a ``PacketReader`` that gives a big packet's parsing its turns on
  the loop (``parse_turns``): it calls ``_dispatch`` or ``_refuse``.  (A
  connection's first bytes are first tried whole on the fast path, with no
  reader: the usual connection sends its one packet in one chunk);
* BUSY runs the command (a task: a submit waits for the store);
* WATCHING follows a job's stream: lines still in memory come from the
  ``JobStream``; older ones (a re-attach far back, a job that left memory, a
  reader that fell behind a trimmed stream) are read from the store in pages,
  each written once the transport can take more.  What the client sends
  meanwhile is ignored (unless the connection is kept: see below);
* LINGERING: our side is shut, and we wait for the client's (see ``output``).

A packet with ``_sys_KeepOpen`` true keeps the connection: once its answer is
complete (its reply, or a monitored stream's ended line) the connection goes
back to READING with a new reader and parser, and a new deadline, instead of
ending.  Bytes that come after a kept packet (pipelined packets, and what its
reader received past it: ``PacketReader.rest``) are held in ``_pending`` until
then, and fed to the next reader a packet's worth at a time
(``packet_end_hint``), so the packets are answered in order and every
limit holds per packet; past ``max_packet_bytes`` held, reading pauses.  The
line ends a client puts between packets are skipped.  The answers to a burst
of pipelined packets go out in one send (the batch spans the burst).

``Connection`` does the reading, the command and the following; its base
class ``Output`` (``output``) is the one write path: every byte goes out
through ``write`` / ``reply``, with the batching, the corks, the flow control,
the end, and the checks on a client that stops reading.  What a connection
uses of its server comes in one ``ConnectionContext``, so a connection can be
built without a ``Server``.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

from ..config import Config
from ..engine.engine import Engine
from ..engine.stream import JobStream
from ..errors import PacketError, RequestError
from ..wire.codes import Reply, Status
from ..wire.lines import clip
from ..wire.packet import Packet, PacketParser, packet_end_hint
from ..wire.packet_fast import SMALL_BYTES
from ..wire.variables import KEEP_OPEN, behind_notice, parse_bool
from .commands import Commands
from .deadlines import Deadlines
from .eager import start_eagerly
from .output import ConnectionState, Output
from .parse_turns import SMALL_FIRST_CHUNK, PacketReader, ParseTurns
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
#: XML whitespace: what a client may send between two packets on a kept connection.
_BETWEEN_PACKETS = re.compile(rb"[ \t\r\n]*")


def _skip_space(data: bytes, start: int) -> int:
    """The offset of the first byte from ``start`` on that is not XML whitespace."""
    return _BETWEEN_PACKETS.match(data, start).end()  # type: ignore[union-attr]  # (always matches)

_READING, _BUSY = ConnectionState.READING, ConnectionState.BUSY
_WATCHING, _LINGERING = ConnectionState.WATCHING, ConnectionState.LINGERING
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


class Connection(Output):
    """The protocol object of one client connection."""

    __slots__ = ("_context", "_reader", "_deadline_key", "_reading_since", "_task", "_stream",
                 "_followed", "_next_line", "_checking", "stream_cursor", "_keep_open",
                 "_kept", "_pending", "_offset", "_feeding", "_reading_paused", "_stopping",
                 "_follow_from")

    def __init__(self, context: ConnectionContext) -> None:
        super().__init__(context.loop, context.config, context.accepts_corked)
        self._context = context
        #: The reader of the packet being read.  None while READING only before the
        #: connection's first bytes: they are tried whole on the fast path first
        #: (``_read_first``), and a reader is made only if that cannot read them.
        self._reader: PacketReader | None = None
        self._deadline_key: int | None = None  # the reading deadline's, in context.deadlines
        #: When this packet's reading began (the connection, or the last kept answer).
        self._reading_since = self._loop.time()
        self._task: asyncio.Task[None] | asyncio.Task[bool] | None = None
        self._checking = False  # the task waits for the client's credentials to be checked
        #: The transaction ID of the job this connection follows (WATCHING), if any.
        self._followed: str | None = None
        #: The live stream writing to this connection, while it watches one.
        self._stream: JobStream | None = None
        self._next_line = 1  # while reading from the store: the next line to send
        #: Where this connection is in the stream it watches (kept by the stream).
        self.stream_cursor = 0
        self._keep_open = False  # the packet being answered asked to keep the connection
        self._kept = False  # a packet before this one kept the connection
        #: Bytes received and not yet parsed (on a kept connection: the next
        #: packets), from ``_offset`` on.
        self._pending = b""
        self._offset = 0
        self._feeding = False  # _read_pending is handing _pending to parsers
        self._reading_paused = False  # _pending is full: the transport's reading is paused
        self._stopping = False  # the server is stopping: keep no connection open
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
        self._set_first_deadline()  # (the reader is made by the first bytes: see _read_first)

    def _new_parser(self) -> PacketParser:
        return PacketParser(max_packet_bytes=self._config.max_packet_bytes,
                            max_packet_variables=self._config.max_packet_variables)

    def _new_reader(self, parser: PacketParser | None = None) -> PacketReader:
        """A reader of the next packet, with a parser of its own (``parser``, if given)."""
        assert self._transport is not None  # (set by connection_made)
        return PacketReader(parser or self._new_parser(), self._context.parse_turns,
                            self._transport, self._dispatch, self._refuse)

    def data_received(self, data: bytes) -> None:
        if self._state is _READING:
            if self._reader is None:  # the connection's first bytes
                parser = self._read_first(data)
                if parser is None:
                    return
                self._reader = self._new_reader(parser)
            self._pending, self._offset = data, 0  # (nothing is pending while READING)
            self._read_pending()
        elif self._keep_open:
            self._hold(data)
        else:
            # After the packet, input is not expected and is discarded; but a
            # client that sends more is lingered for before we close.
            self._alone = False

    def eof_received(self) -> bool:
        self._peer_eof = True
        if self._state is _READING:
            self._input_ended()
        elif self._state is _LINGERING:
            self.close()
        if self._state is _CLOSED:
            return False
        # A half-closed client still reads our replies and stream; but TLS cannot
        # half-close (asyncio closes it anyway, and warns if we say otherwise).
        return self._transport is not None and self._transport.can_write_eof()

    def connection_lost(self, exc: Exception | None) -> None:
        # (Each helper is called only when it has something to undo: most
        # connections end with no deadline, reader or stream left.)
        if self._deadline_key is not None:
            self._cancel_deadline()
        if self._reader is not None:
            self._drop_reader()
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
        if self._deadline_key is not None:
            self._cancel_deadline()
        if self._stream is not None:
            self._leave_stream()
        self._pending, self._offset, self._keep_open = b"", 0, False
        super().close()

    def stop_keeping(self) -> None:
        """The server is stopping: close a kept connection that waits for its next
        packet, and keep no other open past its answer under way."""
        self._stopping = True
        if (self._kept and self._state is _READING and self._reader is not None
                and self._reader.bytes_received == 0):
            self.close()

    # -- reading packets ----------------------------------------------------------------

    def _read_first(self, data: bytes) -> PacketParser | None:
        """Answer the connection's first bytes if they are the whole of a packet the
        fast path reads, as the reader would, without making one (the usual
        connection); else return the parser that tried, for the reader to go on with.

        Only bytes the reader would try at once qualify (at most SMALL_FIRST_CHUNK)
        and only when they end where ``_read_pending`` would cut them: then the
        packet, its rest and ``alone`` are what the reader would have read.
        """
        parser = self._new_parser()
        size = len(data)
        if size > SMALL_FIRST_CHUNK or (size > SMALL_BYTES and packet_end_hint(data) != size):
            return parser
        packet = parser.read_fast(data)
        if packet is None:
            return parser  # (it will not try the fast path again)
        self._pending, self._offset = parser.rest, 0
        alone = parser.alone
        parser.close()
        self._dispatch(packet, alone)
        return None

    def _read_pending(self) -> None:
        """Hand the parser what is pending, a packet's worth at a time, and dispatch
        each packet read, until a command waits, the input runs out or we end."""
        self._feeding = True
        try:
            while self._state is _READING:
                pending, start = self._pending, self._offset
                if self._kept and self._reader is not None and not self._reader.bytes_received:
                    start = _skip_space(pending, start)
                size = len(pending)
                if start >= size:
                    self._pending, self._offset = b"", 0
                    break
                # (the hint of a small rest is its end: no call for the usual packet)
                end = size if size - start <= SMALL_BYTES else packet_end_hint(pending, start)
                self._offset = end
                reader = self._reader
                assert reader is not None  # (while READING)
                # It calls _dispatch or _refuse, now or on a later turn.
                reader.feed(pending if start == 0 and end == size else pending[start:end])
        finally:
            self._feeding = False
        if self._state is not _READING:
            if self._batch and self._state is _BUSY:
                self._send_batch()  # the answers before the packet that waits
            return
        if self._peer_eof:
            self._input_ended()
        elif self._kept:
            self._release()  # the answers so far go out; we wait for the client

    def _input_ended(self) -> None:
        """The client has shut its side, and everything it sent has been fed."""
        reader = self._reader
        if reader is None or reader.bytes_received == 0:  # (None: nothing came)
            self.close()
            return
        reader.feed_eof()  # (it answers once what it holds is parsed)

    def _hold(self, data: bytes) -> None:
        """Keep bytes that came while a kept packet is answered: the next packets."""
        left = len(self._pending) - self._offset
        self._pending = self._pending[self._offset:] + data if left else data
        self._offset = 0
        if (len(self._pending) > self._config.max_packet_bytes and not self._reading_paused
                and self._transport is not None):
            self._reading_paused = True
            self._transport.pause_reading()

    def _answered(self) -> None:
        """The packet's answer is complete: read the next packet on a kept
        connection, or end."""
        if self._keep_open and not self._stopping:
            self._next_packet()
        else:
            self._keep_open = False
            self.finish()

    def _stream_done(self, sent_the_end: bool) -> None:
        """A monitor has had every line.  Without its ended line (it asked from
        past the end) the client can tell the end of the stream only by the
        connection's close: so then even a kept connection ends."""
        if not sent_the_end:
            self._keep_open = False
        self._answered()

    def _next_packet(self) -> None:
        if self._state is not _BUSY and self._state is not _WATCHING:
            return  # closed meanwhile
        if self._followed is not None:
            self._context.engine.jobs.monitor_detached(self._followed)
            self._followed = None
        self._keep_open = False
        self._kept = True
        self._next_line = 1
        self._state = _READING
        self._reader = self._new_reader()
        self._reading_since = self._loop.time()
        self._set_first_deadline()
        if self._reading_paused and self._transport is not None:
            self._reading_paused = False
            self._transport.resume_reading()
        if not self._feeding:  # (else _read_pending's loop goes on with the next packet)
            self._read_pending()

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

    # -- the reading deadline -------------------------------------------------------

    def _set_first_deadline(self) -> None:
        first_deadline = min(self._config.idle_timeout_s, self._config.packet_timeout_s)
        self._set_deadline(self._reading_since + first_deadline)

    def _set_deadline(self, when: float) -> None:
        # A coarse deadline shared with other connections: one loop timer per tick
        # instead of one per connection (see deadlines.py).
        self._deadline_key = self._context.deadlines.add(when, self._deadline)

    def _cancel_deadline(self) -> None:
        if self._deadline_key is not None:
            self._context.deadlines.discard(self._deadline_key, self._deadline)
            self._deadline_key = None

    def _deadline(self) -> None:
        """One deadline serves both limits: silence (idle) and an unfinished packet."""
        self._deadline_key = None
        if self._state is not _READING:
            return
        config = self._config
        received = self._reader.bytes_received if self._reader is not None else 0
        if received == 0 and config.idle_timeout_s <= config.packet_timeout_s:
            detail = f"nothing received within {config.idle_timeout_s:g} s"
            self._refuse(RequestError(Reply.IDLE_TIMEOUT, detail))
            return
        left = self._reading_since + config.packet_timeout_s - self._loop.time()
        if left > 0:
            self._set_deadline(self._reading_since + config.packet_timeout_s)
            return
        detail = f"no complete packet within {config.packet_timeout_s:g} s"
        self._refuse(PacketError(Reply.PACKET_TIMEOUT, detail))

    # -- the command ------------------------------------------------------------------

    def _drop_reader(self) -> None:
        # Its lxml parser and half-built tree go now, not at the next collection.
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()

    def _refuse(self, exc: RequestError) -> None:
        log.info("refused packet from %s: %s", self.peer, exc.reply_text)
        self._cancel_deadline()
        self._drop_reader()
        self._state = _BUSY
        self._pending, self._offset = b"", 0  # (where the next packet starts is unknown)
        self.reply(exc.code, exc.reply_text)
        self.finish()

    def _dispatch(self, packet: Packet, alone: bool) -> None:
        self._cancel_deadline()
        # The bytes after the packet, in order: the reader's (the end of what it
        # parsed, and what it had not parsed yet), then what it was not given yet.
        if self._reader is not None:
            rest = self._reader.rest
            after = self._pending[self._offset:]
            self._pending, self._offset = rest + after if rest else after, 0
        # Alone: nothing but whitespace after the packet in what is pending either.
        pending = self._pending
        self._alone = alone and (not pending or _skip_space(pending, 0) == len(pending))
        if self._reader is not None:
            self._drop_reader()  # a held connection keeps none
        self._state = _BUSY
        if KEEP_OPEN in packet.variables:
            try:
                self._keep_open = parse_bool(packet, KEEP_OPEN)
            except RequestError as exc:  # then we cannot tell: the connection ends
                self.reply(exc.code, exc.reply_text)
                self.finish()
                return
        if not self._keep_open:
            self._pending, self._offset = b"", 0  # (what follows is ignored, as ever)
        # Most commands never wait (a submit to the memory store, a status query):
        # they run to their end here, with no task and no extra loop turn.
        task = start_eagerly(self._loop, self._answer(packet), eager=not self._config.clustered)
        if task is not None:  # kept while it runs: the loop holds tasks weakly
            self._task = task
            task.add_done_callback(self._forget_task)

    def _forget_task(self, task: asyncio.Task[None]) -> None:
        if self._task is task:
            self._task = None

    async def _answer(self, packet: Packet) -> None:
        commands = self._context.commands
        try:
            self._checking = True  # (a lost connection cancels the check: see connection_lost)
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
