"""The reading side of a connection: packets in, one at a time, under deadlines.

``Input`` is the base class of ``Connection`` (``connection``), and itself a
subclass of ``Output`` (``output``): one object per connection.  It feeds
received bytes to the sans-I/O ``PacketParser`` through a ``PacketReader``,
which gives a big packet's parsing its turns on the loop (``parse_turns``;
a packet's first bytes are tried whole on the fast path before any reader is
made, ``_read_pending``: the usual packet comes whole in one chunk, and a
client's pipelined packets several to a chunk); it enforces the reading
deadlines (``idle_timeout_s`` for the first byte, ``packet_timeout_s`` for the
whole packet, on a coarse clock shared by all connections: ``deadlines``),
refuses a packet that cannot be read with its one ``R`` line, and hands each
packet read to ``_run`` (the command: ``Connection``'s).

A packet with ``_sys_KeepOpen`` true keeps the connection: once its answer is
complete (its reply, or a monitored stream's ended line: ``_answered``) the
connection goes back to READING for the next packet (with a new reader and
parser only if the fast path cannot read it, and a new deadline once the
bytes at hand hold no whole packet), instead of ending.  Bytes that come
after a kept packet (pipelined packets, and what its reader received past it:
``PacketReader.rest``) are held in ``_pending`` until then, and read a
packet's worth at a time (``packet_end_hint``), so the packets are answered
in order and every limit holds per packet; past ``max_packet_bytes`` held,
reading pauses.
The line ends a client puts between packets are skipped.  The answers to a
burst of pipelined packets go out in one send (the batch spans the burst).
"""

from __future__ import annotations

import asyncio
import logging
import re

from ..config import Config
from ..errors import PacketError, RequestError
from ..wire.codes import Reply
from ..wire.packet import Packet, PacketParser, packet_end_hint, read_whole
from ..wire.packet_fast import SMALL_BYTES
from ..wire.variables import KEEP_OPEN, parse_bool
from .deadlines import Deadlines
from .output import ConnectionState, Output
from .parse_turns import SMALL_FIRST_CHUNK, PacketReader, ParseTurns

__all__ = ["Input"]

log = logging.getLogger("jobmonitor.connection")

#: XML whitespace: what a client may send between two packets on a kept connection.
_BETWEEN_PACKETS = re.compile(rb"[ \t\r\n]*")

_READING, _BUSY = ConnectionState.READING, ConnectionState.BUSY
_WATCHING, _LINGERING = ConnectionState.WATCHING, ConnectionState.LINGERING
_CLOSED = ConnectionState.CLOSED


def _skip_space(data: bytes, start: int) -> int:
    """The offset of the first byte from ``start`` on that is not XML whitespace."""
    return _BETWEEN_PACKETS.match(data, start).end()  # type: ignore[union-attr]  # (always matches)


class Input(Output):
    """Reading packets and their deadlines, for one connection."""

    __slots__ = ("_deadlines", "_parse_turns", "_reader", "_deadline_key", "_reading_since",
                 "_keep_open", "_kept", "_pending", "_offset", "_feeding", "_reading_paused",
                 "_stopping")

    def __init__(self, loop: asyncio.AbstractEventLoop, config: Config, tcp_corked: bool,
                 deadlines: Deadlines, parse_turns: ParseTurns) -> None:
        super().__init__(loop, config, tcp_corked)
        self._deadlines = deadlines  # every connection's reading deadlines, one timer a tick
        self._parse_turns = parse_turns  # the loop's budget for parsing big packets
        #: The reader of the packet being read.  None while READING until the
        #: packet's first bytes: they are tried whole on the fast path first
        #: (``_read_pending``), and a reader is made only if that cannot read them.
        self._reader: PacketReader | None = None
        self._deadline_key: int | None = None  # the reading deadline's, in _deadlines
        #: When this packet's reading began (the connection, or the last kept answer).
        self._reading_since = self._loop.time()
        self._keep_open = False  # the packet being answered asked to keep the connection
        self._kept = False  # a packet before this one kept the connection
        #: Bytes received and not yet parsed (on a kept connection: the next
        #: packets), from ``_offset`` on.
        self._pending = b""
        self._offset = 0
        self._feeding = False  # _read_pending is handing _pending to readers
        self._reading_paused = False  # _pending is full: the transport's reading is paused
        self._stopping = False  # the server is stopping: keep no connection open

    def _run(self, packet: Packet) -> None:
        """Carry out a packet read (``Connection``'s); call ``_answered`` when done."""
        raise NotImplementedError

    def _start_reading(self) -> None:
        """Wait for the first packet (the transport is set)."""
        self._set_first_deadline()  # (a reader is made by the first bytes, if need be)

    def _new_parser(self) -> PacketParser:
        return PacketParser(max_packet_bytes=self._config.max_packet_bytes,
                            max_packet_variables=self._config.max_packet_variables)

    def _new_reader(self, *, fast_path_tried: bool) -> PacketReader:
        """A reader of the packet whose first bytes ``_read_pending`` did not read:
        the fast path failed on them (``fast_path_tried``), or they were too many
        to try it there (the reader's parser tries it on the first bytes it is
        fed, up to its own bound)."""
        assert self._transport is not None  # (set by connection_made)
        parser = self._new_parser()
        if fast_path_tried:
            parser.skip_fast_path()
        return PacketReader(parser, self._parse_turns, self._transport, self._dispatch,
                            self._refuse)

    # -- asyncio.Protocol --------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._state is _READING:
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
        # connections end with no deadline or reader left.)
        if self._deadline_key is not None:
            self._cancel_deadline()
        if self._reader is not None:
            self._drop_reader()
        super().connection_lost(exc)

    def close(self) -> None:
        if self._deadline_key is not None:
            self._cancel_deadline()
        self._pending, self._offset, self._keep_open = b"", 0, False
        super().close()

    def stop_keeping(self) -> None:
        """The server is stopping: close a kept connection that waits for its next
        packet, and keep no other open past its answer under way."""
        self._stopping = True
        if (self._kept and self._state is _READING
                and (self._reader is None or self._reader.bytes_received == 0)):
            self.close()

    # -- reading packets ----------------------------------------------------------------

    def _read_pending(self) -> None:
        """Read what is pending, a packet's worth at a time, and dispatch each packet
        read, until a command waits, the input runs out or we end.

        A packet's first bytes are tried whole on the fast path, with no reader
        (the usual packet comes whole in one chunk, and pipelined ones several to
        a chunk); a reader, with its parser, is made only when that cannot read
        them, and is given the rest of the packet as it comes.  The fast path
        reads only what the reader's own would (at most SMALL_FIRST_CHUNK, cut
        where the packet most likely ends), so the packet, its rest and ``alone``
        are the same either way, and so is every refusal (the reader's).
        """
        config = self._config
        self._feeding = True
        try:
            while self._state is _READING:
                pending, start = self._pending, self._offset
                reader = self._reader
                if self._kept and (reader is None or not reader.bytes_received):
                    start = _skip_space(pending, start)
                size = len(pending)
                if start >= size:
                    self._pending, self._offset = b"", 0
                    break
                # (the hint of a small rest is its end: no call for the usual packet)
                end = size if size - start <= SMALL_BYTES else packet_end_hint(pending, start)
                self._offset = end
                chunk = pending if start == 0 and end == size else pending[start:end]
                if reader is None:
                    found = None
                    small = len(chunk) <= SMALL_FIRST_CHUNK
                    if small:
                        found = read_whole(chunk, config.max_packet_bytes,
                                           config.max_packet_variables)
                    if found is not None:
                        packet, rest, alone = found
                        # (the rest is the chunk's end: the packet's next bytes
                        # stay where they are, uncopied, for the next packet)
                        self._offset = end - len(rest)
                        self._dispatch(packet, alone)
                        continue
                    reader = self._reader = self._new_reader(fast_path_tried=small)
                # It calls _dispatch or _refuse, now or on a later turn.
                reader.feed(chunk)
        finally:
            self._feeding = False
        if self._state is not _READING:
            if self._batch and self._state is _BUSY:
                self._send_batch()  # the answers before the packet that waits
            return
        if self._deadline_key is None:  # (a kept connection's: see _next_packet)
            self._set_first_deadline()
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

    def _drop_reader(self) -> None:
        # Its lxml parser and half-built tree go now, not at the next collection.
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()

    def _dispatch(self, packet: Packet, alone: bool) -> None:
        self._cancel_deadline()
        # The bytes after the packet, in order: the reader's (the end of what it
        # parsed, and what it had not parsed yet), then what it was not given yet.
        if self._reader is not None:
            rest = self._reader.rest
            after = self._pending[self._offset:]
            self._pending, self._offset = rest + after if rest else after, 0
        # Alone: nothing but whitespace after the packet in what is pending either.
        pending, offset = self._pending, self._offset
        self._alone = alone and (offset >= len(pending)
                                 or _skip_space(pending, offset) == len(pending))
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
        self._run(packet)

    def _refuse(self, exc: RequestError) -> None:
        log.info("refused packet from %s: %s", self.peer, exc.reply_text)
        self._cancel_deadline()
        self._drop_reader()
        self._state = _BUSY
        self._pending, self._offset = b"", 0  # (where the next packet starts is unknown)
        self.reply(exc.code, exc.reply_text)
        self.finish()

    # -- the next packet on a kept connection ----------------------------------------

    def _answered(self) -> None:
        """The packet's answer is complete: read the next packet on a kept
        connection, or end."""
        if self._keep_open and not self._stopping:
            self._next_packet()
        else:
            self._keep_open = False
            self.finish()

    def _next_packet(self) -> None:
        if self._state is not _BUSY and self._state is not _WATCHING:
            return  # closed meanwhile
        self._keep_open = False
        self._kept = True
        # A client may send its next packet just as we give up waiting for it: it
        # must read our last line, not a reset, so from now on we linger.
        self._alone = False
        self._state = _READING
        # No reader yet (see _read_pending), and no deadline until the input runs
        # out with the packet still to come: pipelined packets that are all here
        # are read at once, without one.
        self._reading_since = self._loop.time()
        if self._reading_paused and self._transport is not None:
            self._reading_paused = False
            self._transport.resume_reading()
        if not self._feeding:  # (else _read_pending's loop goes on with the next packet)
            self._read_pending()

    # -- the reading deadline -------------------------------------------------------

    def _set_first_deadline(self) -> None:
        first_deadline = min(self._config.idle_timeout_s, self._config.packet_timeout_s)
        self._set_deadline(self._reading_since + first_deadline)

    def _set_deadline(self, when: float) -> None:
        # A coarse deadline shared with other connections: one loop timer per tick
        # instead of one per connection (see deadlines.py).
        self._deadline_key = self._deadlines.add(when, self._deadline)

    def _cancel_deadline(self) -> None:
        if self._deadline_key is not None:
            self._deadlines.discard(self._deadline_key, self._deadline)
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
