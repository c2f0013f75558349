"""The sending side of a connection: every byte a client gets goes out here.

``Output`` is the base class of ``Connection`` (reading, commands, following a
job): one object per connection, so the stream's writes cost no extra call
and a waiting connection no extra object.  It owns:

* the write path: ``write`` / ``reply``, and a *batch* that gathers a reply
  and a job's first lines into one send (``_start_batch`` / ``_send_batch``);
* the kernel's cork (``TCP_CORK``, Linux, plain TCP): an accepted socket
  starts corked, inherited from the listener (see ``sockets``), so a short
  answer and the FIN leave in one segment.  A connection that goes on after
  its first turn (a monitor of a job still running, a kept connection) uncorks
  once, when its reply goes out (``_flush``, ``_release``), and corks again
  just before its last bytes (``finish``);
* flow control: while the transport is paused, ``writable`` is False and the
  stream skips this connection (``Connection`` has it catch up on
  ``resume_writing``); ``_wait_writable`` is the store reader's wait;
* the end: ``finish`` (close, or shut our side and linger for the client's),
  ``close`` and ``abort``;
* the two checks on a client that stops reading, both ``monitor_stall_s``:
  a watching one is told where to re-attach (``_stalled``, the stall timer),
  and any connection closing with bytes unsent is dropped once its client
  takes none of them for that long (``_check_drain``, the drain timer).

Lingering: our last bytes are queued and our side is shut for writing; we keep
reading (and discarding) until the client closes or ``linger_s`` passes, so a
client still sending gets our reply instead of a reset.  Only a client that
may still be sending is lingered for: one whose packet came in one piece with
nothing after it but whitespace (``PacketParser.alone``), and that sent
nothing later, is closed at once.  That saves a shutdown, a read and a loop
turn per connection, and frees the connection without waiting for the client
(nginx's ``lingering_close on`` makes the same call).
"""

from __future__ import annotations

import asyncio
import enum
import logging

from ..config import Config
from ..wire.codes import Reply
from ..wire.lines import format_line
from .sockets import set_cork, unsent_bytes

__all__ = ["ConnectionState", "Output"]

log = logging.getLogger("jobmonitor.connection")


class ConnectionState(enum.Enum):
    """Where a connection is: READING -> BUSY -> (WATCHING) -> LINGERING -> CLOSED,
    or back to READING after a kept packet (``connection`` describes each)."""

    READING = "reading"
    BUSY = "busy"
    WATCHING = "watching"
    LINGERING = "lingering"
    CLOSED = "closed"


_READING, _WATCHING = ConnectionState.READING, ConnectionState.WATCHING
_LINGERING, _CLOSED = ConnectionState.LINGERING, ConnectionState.CLOSED
_BUSY = ConnectionState.BUSY


class Output(asyncio.Protocol):
    """The write path, flow control and end of one connection."""

    # Slots: thousands of these may sit waiting on jobs at once.
    __slots__ = ("_config", "_loop", "_state", "_transport", "_lost", "_peer_eof", "_alone",
                 "_batch", "_batch_bytes", "_tcp_corked", "_paused", "_drained",
                 "_linger_timer", "_drain_timer", "_stall_timer")

    def __init__(self, loop: asyncio.AbstractEventLoop, config: Config,
                 tcp_corked: bool) -> None:
        self._config = config
        self._loop = loop
        self._state = _READING
        self._transport: asyncio.Transport | None = None
        self._lost = False  # connection_lost has come
        self._peer_eof = False  # the client has shut its side
        self._alone = False  # the client sent its packet and nothing more (see finish)
        #: Writes gathered to go out in one send (None: each write goes out at once).
        self._batch: list[bytes] | None = None
        self._batch_bytes = 0
        #: The socket is corked: the kernel holds our bytes until the FIN (or an uncork).
        self._tcp_corked = tcp_corked
        self._paused = False  # the transport's buffer is over its limit
        self._drained: asyncio.Future[None] | None = None  # what _wait_writable waits on
        self._linger_timer: asyncio.TimerHandle | None = None  # LINGERING: close at linger_s
        self._drain_timer: asyncio.TimerHandle | None = None  # CLOSED: the next _check_drain
        self._stall_timer: asyncio.TimerHandle | None = None  # paused while WATCHING

    @property
    def peer(self) -> str:
        """The client's address and port, for the log."""
        peer = self._transport.get_extra_info("peername") if self._transport else None
        return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)

    # -- writing (also the stream's Watcher interface) ----------------------------

    @property
    def writable(self) -> bool:
        """The stream may write to us now."""
        return not self._paused and self._state is _WATCHING

    def write(self, data: bytes) -> None:
        """Send bytes as they are (stream lines come here already formatted)."""
        if self._batch is not None:
            self._batch.append(data)
            self._batch_bytes += len(data)
            if self._batch_bytes > self._config.max_pending_output_bytes:
                self._send_batch()
        elif self._transport is not None and self._state is not _CLOSED:
            self._transport.write(data)

    def reply(self, code: Reply, text: str | None = None) -> None:
        """Send one R reply (several lines when ``text`` has several)."""
        self.write(format_line("R", code, code.text if text is None else text))

    def _start_batch(self) -> None:
        """Gather writes until ``_send_batch``: a reply and the first lines go out in
        one send (and on a kept connection, the replies to a burst of packets)."""
        if self._batch is None:
            self._batch, self._batch_bytes = [], 0

    def _send_batch(self) -> None:
        batch, self._batch = self._batch, None
        if batch:
            self.write(b"".join(batch))

    def _flush(self) -> None:
        """Send what is held, in our batch and in the kernel's cork: we are about
        to wait with the connection open (it watches a job, or reads the store)."""
        self._send_batch()
        if self._tcp_corked and self._state in (_BUSY, _WATCHING):
            self._tcp_corked = set_cork(self._transport, False)

    def _release(self) -> None:
        """Send everything held, in our batch and in the kernel's cork, for good: a
        kept connection waits for its client's next packet."""
        self._send_batch()
        if self._tcp_corked and self._state is _READING:
            self._tcp_corked = set_cork(self._transport, False)

    # -- flow control -----------------------------------------------------------------

    def pause_writing(self) -> None:
        self._paused = True
        if self._state is _WATCHING:
            self._stall_timer = self._loop.call_later(self._config.monitor_stall_s,
                                                      self._stall_timer_fired)

    def resume_writing(self) -> None:
        self._paused = False
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
        self._wake_writer()

    async def _wait_writable(self) -> None:
        """Return once the transport takes more (at once unless paused), or the
        connection has closed."""
        if self._paused and self._state is not _CLOSED:
            self._drained = self._loop.create_future()
            await self._drained
            self._drained = None

    def _wake_writer(self) -> None:
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def _stall_timer_fired(self) -> None:
        self._stall_timer = None
        if self._paused and self._state is _WATCHING:
            self._stalled()

    def _stalled(self) -> None:
        """The client took no bytes for ``monitor_stall_s`` while it watched a job
        (``Connection`` first tells it where to re-attach)."""
        self.close()

    # -- ending -------------------------------------------------------------------

    def finish(self) -> None:
        """We have said everything: close, or shut our side and linger for the client's."""
        if self._state in (_LINGERING, _CLOSED) or self._transport is None:
            return
        plain = self._transport.can_write_eof()  # False for TLS
        if plain and not self._tcp_corked:
            self._hold_last_segment()
        self._send_batch()
        if self._linger_timer is not None or self._stall_timer is not None:
            self._cancel_timers()
        if self._peer_eof or not plain or self._alone:
            # Nothing to linger for: the client has closed its side, or TLS
            # cannot half-close, or the client sent its packet and nothing more.
            self.close()
            return
        self._state = _LINGERING
        try:
            self._transport.write_eof()
        except OSError:  # the peer is already gone (reset): nothing to linger for
            self.close()
            return
        self._linger_timer = self._loop.call_later(self._config.linger_s, self.close)

    def _hold_last_segment(self) -> None:
        """Cork the socket again (a monitor uncorked it after its first turn, or the
        listener's cork was not inherited): the kernel holds our last bytes until
        the FIN that follows them (``write_eof`` or ``close``) and sends both in
        one segment.  The client is woken once instead of twice, and both kernels
        handle one segment less.  (uvloop sends the FIN a loop turn after
        ``write_eof``, so without the cork the bytes would always go alone.)
        Plain TCP only: TLS still has records to send."""
        self._tcp_corked = set_cork(self._transport, True)

    def close(self) -> None:
        """Close now (queued bytes are still sent, to a client that takes them)."""
        if self._state is _CLOSED or self._transport is None:
            return
        # (Each helper only when it has something to do: the usual connection
        # ends with no timer, batch or writer waiting.)
        if self._linger_timer is not None or self._stall_timer is not None:
            self._cancel_timers()
        if self._batch is not None:
            self._send_batch()
        self._state = _CLOSED
        if self._drained is not None:
            self._wake_writer()
        self._transport.close()
        self._check_drain()

    def abort(self) -> None:
        """Close now, dropping whatever the client has not taken."""
        self.close()
        if self._transport is not None and not self._lost:
            self._transport.abort()

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
        self._drain_timer = None
        if self._transport is None or self._lost or not self._transport.get_write_buffer_size():
            return  # (once our buffer is empty the kernel has the rest, and we are done)
        left = unsent_bytes(self._transport)
        if unsent and left >= unsent:
            log.info("%s took nothing of its last %d bytes for %g s; dropped them", self.peer,
                     left, self._config.monitor_stall_s)
            self._transport.abort()
        else:
            self._drain_timer = self._loop.call_later(self._config.monitor_stall_s,
                                                      self._check_drain, left)

    def _cancel_timers(self) -> None:
        """The linger's and the stall's (the drain's runs on until the connection is lost)."""
        # (Three calls per connection, nearly always with no timer: no tuple, no loop.)
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None

    def connection_lost(self, exc: Exception | None) -> None:
        self._state = _CLOSED
        self._lost = True
        if self._linger_timer is not None or self._stall_timer is not None:
            self._cancel_timers()
        if self._drain_timer is not None:
            self._drain_timer.cancel()
            self._drain_timer = None
        if self._drained is not None:
            self._wake_writer()
        # The transport holds us too: without this cycle, both go as soon as the
        # loop lets go, not at the garbage collector's next pass.
        self._transport = None
