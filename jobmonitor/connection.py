"""One client connection: read one command packet, answer it, maybe stream a job.

A connection goes READING -> BUSY -> (WATCHING) -> LINGERING -> closed:

* READING feeds bytes to the sans-I/O ``PacketParser`` under a deadline,
  through a ``PacketReader`` that gives a big packet's parsing its turns on
  the loop (``parse_turns``): it calls ``_dispatch`` or ``_refuse``;
* BUSY runs the command (a task: a submit waits for the store);
* WATCHING follows a job's stream: lines still in memory come from the
  ``JobStream``; older ones (a re-attach far back, a job that left memory, a
  reader that fell behind a trimmed stream) are read from the store in pages,
  each written once the transport can take more.  The client is not expected
  to send anything more, and what it sends is ignored;
* LINGERING: our last bytes are queued and our side is shut for writing; we
  keep reading (and discarding) until the client closes or ``linger_s``
  passes, so a client still sending gets our reply instead of a reset.  Only
  a client that may still be sending is lingered for: one whose packet came
  in one piece with nothing after it but whitespace (``PacketParser.alone``),
  and that sent nothing later, is closed at once.  That saves a shutdown, a
  read and a loop turn per connection, and frees the connection without
  waiting for the client (nginx's ``lingering_close on`` makes the same call).

Every byte goes out through ``write`` / ``reply``; transport flow control is
the backpressure: while the transport is paused the stream skips this
connection and catches it up on ``resume_writing``.  A client that stops
reading is dropped once it has taken nothing for ``monitor_stall_s``: a
monitor by ``_stalled`` (told where to re-attach), any connection closing with
bytes unsent by ``_check_drain``.

On Linux, a plain TCP connection starts with its socket corked (``TCP_CORK``,
inherited from the listening socket, see ``sockets``): the kernel holds what
we write until the FIN, so a short answer and the FIN leave in one segment.
A connection that goes on after its first turn (a monitor of a job still
running) uncorks once, when its reply goes out (the end of that turn, or with
a durable store the next commit), and corks again just before its last bytes.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from typing import TYPE_CHECKING

from .codes import Reply, Status
from .eager import start_eagerly
from .errors import PacketError, RequestError
from .lines import clip, format_line
from .packet import Packet, PacketParser
from .parse_turns import PacketReader
from .sockets import set_cork, unsent_bytes
from .stream import JobStream

if TYPE_CHECKING:
    from .server import Server

__all__ = ["Connection"]

log = logging.getLogger("jobmonitor.connection")

#: Lines read from the store at a time when a watcher catches up.
CATCH_UP_PAGE_LINES = 2000


class _State(enum.Enum):
    READING = "reading"
    BUSY = "busy"
    WATCHING = "watching"
    LINGERING = "lingering"
    CLOSED = "closed"


class Connection(asyncio.Protocol):
    """The protocol object of one client connection."""

    # Slots: thousands of these may sit waiting on jobs at once.
    __slots__ = ("_server", "_config", "_loop", "_state", "_transport", "_reader", "_timer",
                 "_deadline_key",
                 "_opened", "_corked", "_corked_bytes", "_stall_timer", "_lost", "_task",
                 "_stream", "_following", "_next_line", "_paused", "_drained", "_peer_eof",
                 "_alone", "_socket_corked", "_checking", "stream_cursor")

    def __init__(self, server: "Server") -> None:
        self._server = server
        self._config = server.config
        self._loop = server._loop or asyncio.get_running_loop()
        self._state = _State.READING
        self._transport: asyncio.Transport | None = None
        self._reader: PacketReader | None = None  # made by connection_made
        self._timer: asyncio.TimerHandle | None = None  # the linger's, then the drain's
        self._deadline_key: int | None = None  # the reading deadline's, in server.deadlines
        self._opened = self._loop.time()
        self._corked: list[bytes] | None = None
        self._corked_bytes = 0
        self._stall_timer: asyncio.TimerHandle | None = None
        self._lost = False
        self._task: asyncio.Task[None] | asyncio.Task[bool] | None = None
        self._stream: JobStream | None = None
        self._following = ""
        self._next_line = 1  # while reading from the store: the next line to send
        self._paused = False
        self._drained: asyncio.Future[None] | None = None
        self._peer_eof = False
        self._alone = False  # the client sent its packet and nothing more (see finish)
        self._checking = False  # the task waits for the client's credentials to be checked
        self._socket_corked = server.accepts_corked  # the kernel holds our bytes until the FIN
        #: Where this connection is in the stream it watches (kept by the stream).
        self.stream_cursor = 0

    def _peer_host(self) -> str:
        """The client's address (without the port)."""
        peer = self._transport.get_extra_info("peername") if self._transport else None
        return str(peer[0]) if isinstance(peer, tuple) else str(peer)

    @property
    def peer(self) -> str:
        """The client's address and port, for the log."""
        peer = self._transport.get_extra_info("peername") if self._transport else None
        return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)

    # -- asyncio.Protocol --------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tcp: asyncio.Transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        self._transport = tcp
        # No TCP_NODELAY here: asyncio and uvloop both set it on every TCP transport.
        tcp.set_write_buffer_limits(high=self._config.max_pending_output_bytes)
        over_limit = self._server.connection_count >= self._config.max_connections
        self._server._connection_opened(self)
        if over_limit:
            self._refuse(RequestError(Reply.SERVER_BUSY, "too many connections"))
            return
        turns = self._server.parse_turns
        assert turns is not None  # (the server made them before it listened)
        parser = PacketParser(max_packet_bytes=self._config.max_packet_bytes,
                              max_packet_variables=self._config.max_packet_variables)
        self._reader = PacketReader(parser, turns, tcp, self._dispatch, self._refuse)
        first_deadline = min(self._config.idle_timeout_s, self._config.packet_timeout_s)
        self._set_deadline(self._opened + first_deadline)

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        if self._state is not _State.READING or reader is None:
            # After the packet, input is not expected and is discarded; but a
            # client that sends more is lingered for before we close.
            self._alone = False
            return
        reader.feed(data)  # it calls _dispatch or _refuse, now or on a later turn

    def eof_received(self) -> bool:
        self._peer_eof = True
        if self._state is _State.READING:
            reader = self._reader
            assert reader is not None  # (until _dispatch, which ends READING)
            if reader.bytes_received == 0:
                self.close()
                return False
            reader.feed_eof()
        elif self._state is _State.LINGERING:
            self.close()
            return False
        return True  # a half-closed client still reads our replies and stream

    def connection_lost(self, exc: Exception | None) -> None:
        self._state = _State.CLOSED
        self._lost = True
        self._cancel_timer()
        self._drop_reader()
        if self._checking and self._task is not None:
            # Nobody is left to answer, and the connection's place is given back
            # now: its password check (which may wait its turn behind others from
            # the same address) must not stay behind, holding the packet.
            self._task.cancel()
        if self._stream is not None:
            self._stream.unwatch(self)
            self._stream = None
        if self._following:
            self._server.engine.jobs.monitor_detached(self._following)
            self._following = ""
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        self._server._connection_closed(self)
        # The transport holds us too: without this cycle, both go as soon as the
        # loop lets go, not at the garbage collector's next pass.
        self._transport = None

    def pause_writing(self) -> None:
        self._paused = True
        if self._state is _State.WATCHING:
            self._stall_timer = self._loop.call_later(self._config.monitor_stall_s, self._stalled)

    def resume_writing(self) -> None:
        self._paused = False
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        if self._stream is not None:
            self._stream.catch_up(self)

    # -- the write path (also the stream's Watcher interface) --------------------

    @property
    def writable(self) -> bool:
        return not self._paused and self._state is _State.WATCHING

    def write(self, data: bytes) -> None:
        """Send bytes as they are (stream lines come here already formatted)."""
        if self._corked is not None:
            self._corked.append(data)
            self._corked_bytes += len(data)
            if self._corked_bytes > self._config.max_pending_output_bytes:
                self._uncork()
        elif self._transport is not None and self._state is not _State.CLOSED:
            self._transport.write(data)

    def _cork(self) -> None:
        """Gather writes until ``_uncork``: a reply and the first lines go out in one send."""
        self._corked, self._corked_bytes = [], 0

    def _uncork(self) -> None:
        corked, self._corked = self._corked, None
        if corked:
            self.write(b"".join(corked))

    def reply(self, code: Reply, text: str | None = None) -> None:
        """Send one R reply (several lines when ``text`` has several)."""
        self.write(format_line("R", code, code.text if text is None else text))

    def stream_ended(self) -> None:
        self._stream = None
        self.finish()

    def fell_behind(self, next_line: int) -> None:
        self._stream = None
        self._task = self._loop.create_task(self._follow_safely(next_line))

    def _stalled(self) -> None:
        """The client took no bytes for ``monitor_stall_s`` while lines waited."""
        self._stall_timer = None
        if not self._paused or self._state is not _State.WATCHING:
            return
        next_line = self._next_line
        if self._stream is not None:
            next_line = self._stream.unwatch(self) or next_line
            self._stream = None
        text = f"{Status.MONITOR_BEHIND.text}: re-attach with MonitorJob from line {next_line}"
        self.write(format_line("J", Status.MONITOR_BEHIND, text))
        log.info("monitor %s of %s stalled; told it to re-attach from line %d", self.peer,
                 self._following, next_line)
        # What is queued (the notice last) is still sent if the client reads again;
        # close() drops it if the client takes none of it for monitor_stall_s more.
        self.close()

    def abort(self) -> None:
        """Close now, dropping whatever the client has not taken."""
        self.close()
        if self._transport is not None and not self._lost:
            self._transport.abort()

    # -- ending -------------------------------------------------------------------

    def finish(self) -> None:
        """We have said everything: close, or shut our side and linger for the client's."""
        if self._state in (_State.LINGERING, _State.CLOSED) or self._transport is None:
            return
        plain = self._transport.can_write_eof()  # False for TLS
        if plain and not self._socket_corked:
            self._hold_last_segment()
        self._uncork()
        self._cancel_timer()
        if self._peer_eof or not plain or self._alone:
            # Nothing to linger for: the client has closed its side, or TLS
            # cannot half-close, or the client sent its packet and nothing more.
            self.close()
            return
        self._state = _State.LINGERING
        try:
            self._transport.write_eof()
        except OSError:  # the peer is already gone (reset): nothing to linger for
            self.close()
            return
        self._timer = self._loop.call_later(self._config.linger_s, self.close)

    def _hold_last_segment(self) -> None:
        """Cork the socket again (a monitor uncorked it after its first turn, or the
        listener's cork was not inherited): the kernel holds our last bytes until
        the FIN that follows them (``write_eof`` or ``close``) and sends both in
        one segment.  The client is woken once instead of twice, and both kernels
        handle one segment less.  (uvloop sends the FIN a loop turn after
        ``write_eof``, so without the cork the bytes would always go alone.)
        Plain TCP only: TLS still has records to send."""
        self._socket_corked = set_cork(self._transport, True)

    def _flush(self) -> None:
        """Send what is held, in our buffer and in the kernel's: we are about to
        wait with the connection open (it watches a job, or reads the store)."""
        self._uncork()
        if self._socket_corked and self._state in (_State.BUSY, _State.WATCHING):
            self._socket_corked = set_cork(self._transport, False)

    def close(self) -> None:
        """Close now (queued bytes are still sent, to a client that takes them)."""
        if self._state is _State.CLOSED or self._transport is None:
            return  # (and the drain's timer, if any, runs on)
        self._cancel_timer()
        self._uncork()
        self._state = _State.CLOSED
        if self._stream is not None:
            self._stream.unwatch(self)
            self._stream = None
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        self._transport.close()
        self._check_drain()

    def _check_drain(self, unsent: int = 0) -> None:
        """Drop what a closed connection's client left unsent (``unsent`` bytes
        ``monitor_stall_s`` ago) if it took none of it since.

        ``transport.close()`` waits for its buffer to drain, without a deadline: a
        client that stops reading would keep the connection, and up to a whole
        reply, for ever.  Every connection ends through ``close``, in whatever
        state it was, so checking here covers a reply of any size (one under the
        write limit never pauses us) as well as a monitor's last lines.  The check
        is for progress, not for the end: a slow client that keeps reading still
        gets all of a big reply.  The stall limit is the monitors' (a watching
        connection has its own check, ``pause_writing``): one setting says how
        long a client may take nothing.
        """
        self._timer = None
        if self._transport is None or self._lost or not self._transport.get_write_buffer_size():
            return  # (once our buffer is empty the kernel has the rest, and we are done)
        left = unsent_bytes(self._transport)
        if unsent and left >= unsent:
            log.info("%s took nothing of its last %d bytes for %g s; dropped them", self.peer,
                     left, self._config.monitor_stall_s)
            self._transport.abort()
        else:
            self._timer = self._loop.call_later(self._config.monitor_stall_s,
                                                self._check_drain, left)

    def _set_deadline(self, when: float) -> None:
        # A coarse deadline shared with other connections: one loop timer per tick
        # instead of one per connection (see deadlines.py).
        deadlines = self._server.deadlines
        assert deadlines is not None  # (the server made them before it listened)
        self._deadline_key = deadlines.add(when, self._deadline)

    def _cancel_timer(self) -> None:
        if self._deadline_key is not None:
            deadlines = self._server.deadlines
            assert deadlines is not None  # (a deadline was set in them)
            deadlines.discard(self._deadline_key, self._deadline)
            self._deadline_key = None
        for timer in (self._timer, self._stall_timer):
            if timer is not None:
                timer.cancel()
        self._timer = self._stall_timer = None

    # -- the command ------------------------------------------------------------------

    def _drop_reader(self) -> None:
        # Its lxml parser and half-built tree go now, not at the next collection.
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()

    def _refuse(self, exc: RequestError) -> None:
        log.info("refused packet from %s: %s", self.peer, exc.reply_text)
        self._drop_reader()
        self._state = _State.BUSY
        self.reply(exc.code, exc.reply_text)
        self.finish()

    def _deadline(self) -> None:
        """One deadline serves both limits: silence (idle) and an unfinished packet."""
        self._deadline_key = None
        if self._state is not _State.READING:
            return
        config = self._config
        assert self._reader is not None  # (until _dispatch, which ends READING)
        if self._reader.bytes_received == 0 and config.idle_timeout_s <= config.packet_timeout_s:
            detail = f"nothing received within {config.idle_timeout_s:g} s"
            self._refuse(RequestError(Reply.IDLE_TIMEOUT, detail))
            return
        left = self._opened + config.packet_timeout_s - self._loop.time()
        if left > 0:
            self._set_deadline(self._opened + config.packet_timeout_s)
            return
        detail = f"no complete packet within {config.packet_timeout_s:g} s"
        self._refuse(PacketError(Reply.PACKET_TIMEOUT, detail))

    def _dispatch(self, packet: Packet, alone: bool) -> None:
        self._cancel_timer()
        self._alone = alone
        self._drop_reader()  # a held connection keeps none
        self._state = _State.BUSY
        # Most commands never wait (a submit to the memory store, a status query):
        # they run to their end here, with no task and no extra loop turn.
        task = start_eagerly(self._loop, self._answer(packet))
        if task is not None:  # kept while it runs: the loop holds tasks weakly
            self._task = task
            task.add_done_callback(self._forget_task)

    def _forget_task(self, task: asyncio.Task[None]) -> None:
        if self._task is task:
            self._task = None

    async def _answer(self, packet: Packet) -> None:
        commands = self._server.commands
        try:
            self._checking = True  # (a lost connection cancels the check: see connection_lost)
            try:
                caller = await commands.caller(packet, self._peer_host)
            finally:
                self._checking = False
            response = await commands.execute(packet, caller)
        except RequestError as exc:
            self.reply(exc.code, exc.reply_text)
            self.finish()
            return
        except Exception:
            log.exception("command %s from %s failed", clip(packet.command), self.peer)
            self.reply(Reply.INTERNAL_ERROR)
            self.finish()
            return
        self._cork()
        self.reply(Reply.OK, response.text)
        if response.follow is None or self._state is _State.CLOSED:
            self.finish()
            return
        self._state = _State.WATCHING
        self._following = response.follow
        self._server.engine.jobs.monitor_attached(self._following)
        if not await self._follow_safely(response.from_line):
            return
        # Hold the reply until the job's first lines can join it: a job that ends
        # at once then goes out with the reply in one send (finish() uncorks at
        # once).  That is the end of this loop turn; with a durable store, whose
        # monitors get only stored lines, the next commit (a few ms).
        self._server.engine.when_stored(self._flush)

    async def _follow_safely(self, line: int) -> bool:
        """``_follow``; on a failure (the store cannot be read, a bug) log it, close,
        and return False.

        After ``R0000000`` no R line may come, and no J code says the server
        failed (J lines are the job's, and count as its lines): so the stream ends
        the way a lost connection does, after whole lines and without the ended
        line, and the client re-attaches from the next line.  Closing, not just
        stopping, also gives back the connection and the job's monitor place.
        """
        try:
            await self._follow(line)
        except Exception:
            log.exception("following %s for %s failed; closing", self._following, self.peer)
            self.close()
            return False
        return True

    async def _follow(self, line: int) -> None:
        """Send the followed job's lines from ``line`` on: from the store while they
        are not in memory, then by watching the live stream."""
        engine = self._server.engine
        while self._state is _State.WATCHING:
            job = engine.jobs.live(self._following)
            if job is not None and job.stream.in_memory(line):
                self._stream = job.stream
                job.stream.watch(self, line)
                return
            self._flush()
            page = await engine.jobs.read_lines(self._following, line, CATCH_UP_PAGE_LINES)
            if not page:
                if job is None:
                    self.finish()  # a finished job, replayed to its end
                    return
                line = job.stream.base + 1  # nothing stored before the memory window
                continue
            self.write(b"".join(page))
            line += len(page)
            self._next_line = line
            await self._can_write()

    async def _can_write(self) -> None:
        if self._paused and self._state is not _State.CLOSED:
            self._drained = self._loop.create_future()
            await self._drained
            self._drained = None
