"""The full packet parser's share of the event loop: a budget per loop turn.

The fast path reads the usual packet in microseconds, where it arrives.  Any
other packet goes through the full parser, which costs milliseconds per
megabyte of text and much more for many elements (45 000 empty variables in
990 KB took about 0.2 s).  Parsed where they arrive, a few clients sending such
packets held the loop for everyone: a normal round trip went from under a
millisecond to hundreds.

So each connection's :class:`PacketReader` feeds the full parser
``SLICE_BYTES`` at a time, and only while the loop turn's parsing budget lasts
(:class:`ParseTurns`, one per server, ``TURN_BUDGET_S``).  Past it, the reader
waits in a queue (its connection's reading paused once it holds
``MAX_UNPARSED_BYTES``); each later turn serves the queue in order, a slice per
reader, until that turn's budget is spent, and a reader with more to parse goes
to the back.  A loop turn so spends at most about the budget (and one slice)
on big packets however many clients send them, and each of those clients gets
its share in turn.  The fast path needs no turn for a small first chunk: the
usual packet is answered at once.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from ..errors import PacketError
from ..wire.packet import Packet, PacketParser
from ..wire.packet_fast import MAX_BYTES as FAST_PATH_MAX_BYTES

__all__ = ["ParseTurns", "PacketReader", "SLICE_BYTES", "TURN_BUDGET_S", "MAX_UNPARSED_BYTES"]

#: Bytes the full parser reads at a time: about 1 ms at worst (dense elements).
SLICE_BYTES = 4096
#: Seconds of full parsing a loop turn may spend, over all connections.
TURN_BUDGET_S = 0.001
#: A first chunk this small tries the fast path at once, outside the budget: a
#: failed attempt costs microseconds, and that is the usual packet.
SMALL_FIRST_CHUNK = 4096
#: Bytes a connection may hold unparsed before its reading is paused.  Reading
#: on while a packet waits costs only memory, and stopping costs the client a
#: wake-up for every chunk it may send again (a big packet took twice as long).
MAX_UNPARSED_BYTES = 256 * 1024


class ParseTurns:
    """The loop's parsing budget and the queue of readers waiting for it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, budget_s: float = TURN_BUDGET_S) -> None:
        self._loop = loop
        self._budget_s = budget_s
        self._spent_s = 0.0
        # Insertion-ordered, so a reader is served in turn and can leave at once.
        self._waiting: dict[PacketReader, None] = {}
        self._next: asyncio.Handle | None = None

    @property
    def open(self) -> bool:
        """True if a reader may parse now: budget is left and nobody is waiting."""
        return self._spent_s < self._budget_s and not self._waiting

    def charge(self, seconds: float) -> None:
        """Count parsing time against this turn; the next turn starts afresh."""
        self._spent_s += seconds
        self._schedule()

    def wait(self, reader: PacketReader) -> None:
        """Give ``reader`` a slice on a later turn, after those already waiting."""
        self._waiting[reader] = None
        self._schedule()

    def forget(self, reader: PacketReader) -> None:
        self._waiting.pop(reader, None)

    def close(self) -> None:
        if self._next is not None:
            self._next.cancel()
            self._next = None
        self._waiting.clear()

    def _schedule(self) -> None:
        # call_soon runs on the next turn, after the loop has polled for I/O:
        # between two turns' parsing, every other client is read and answered.
        if self._next is None:
            self._next = self._loop.call_soon(self._turn)

    def _turn(self) -> None:
        self._next = None
        self._spent_s = 0.0
        waiting = self._waiting
        try:
            while waiting and self._spent_s < self._budget_s:
                reader = next(iter(waiting))
                del waiting[reader]
                reader.parse()  # (charges its time; may wait again, at the back)
        finally:  # (even after a bug in one reader, the others get their turns)
            if waiting:
                self._schedule()


class PacketReader:
    """Reads one connection's packet: the fast path at once, the full parser a
    slice at a time within the loop's budget (see the module's docstring).

    It answers through ``on_packet(packet, alone)`` or ``on_error(error)``,
    exactly once, now or on a later turn, and pauses the transport's reading
    while it holds ``MAX_UNPARSED_BYTES`` it has not parsed.
    """

    __slots__ = ("_parser", "_turns", "_transport", "_on_packet", "_on_error", "_backlog",
                 "_unparsed", "_received", "_paused", "_eof", "_rest")

    def __init__(self, parser: PacketParser, turns: ParseTurns, transport: asyncio.Transport,
                 on_packet: Callable[[Packet, bool], None],
                 on_error: Callable[[PacketError], None]) -> None:
        self._parser: PacketParser | None = parser
        self._turns = turns
        self._transport = transport
        self._on_packet = on_packet
        self._on_error = on_error
        self._backlog: deque[memoryview] = deque()  # received, not parsed yet
        self._unparsed = 0  # bytes in the backlog
        self._received = 0
        self._paused = False
        self._eof = False
        self._rest = b""

    @property
    def bytes_received(self) -> int:
        """Every byte received so far, parsed or not."""
        return self._received

    @property
    def rest(self) -> bytes:
        """Once the packet is answered: the bytes received after it, in order (on a
        kept connection, the start of the next packet)."""
        return self._rest

    def feed(self, data: bytes) -> None:
        """Take the connection's next bytes."""
        parser = self._parser
        if parser is None:
            return
        first = not self._received
        self._received += len(data)
        if self._backlog:  # waiting for a turn
            self._keep(data)
            return
        if first and len(data) <= SMALL_FIRST_CHUNK:
            packet = parser.read_fast(data)
            if packet is not None:
                # _answer and close, for the usual packet: nothing is kept, no turn
                # is awaited and reading was never paused (all need a backlog).
                self._parser = None
                self._rest = parser.rest
                alone = parser.alone
                parser.close()
                self._on_packet(packet, alone)
                return
        self._keep(data)
        if self._turns.open:
            self.parse()
        else:
            self._turns.wait(self)

    def feed_eof(self) -> None:
        """The client has closed its side: answer once every byte before it is parsed."""
        parser = self._parser
        if parser is None:
            return
        if self._backlog:
            self._eof = True
            return
        try:
            packet = parser.feed_eof()
        except PacketError as exc:
            self._fail(exc)
            return
        self._answer(packet)

    def close(self) -> None:
        """Stop: the connection is lost, refused or answered; free the parser now."""
        parser, self._parser = self._parser, None
        if parser is None:  # closed already (an answered reader is closed again when dropped)
            return
        self._turns.forget(self)
        self._backlog.clear()
        self._unparsed = 0
        parser.close()
        self._resume()

    def parse(self) -> None:
        """Parse slices of the backlog while the budget lasts (one at least); wait
        for another turn if bytes are left."""
        parser = self._parser
        backlog = self._backlog
        turns = self._turns
        while parser is not None and backlog:
            began = time.perf_counter()
            try:
                packet = self._parse_slice(parser, backlog)
            except PacketError as exc:
                turns.charge(time.perf_counter() - began)
                self._fail(exc)
                return
            turns.charge(time.perf_counter() - began)
            if packet is not None:
                self._answer(packet)
                return
            if not turns.open:
                break
        if self._unparsed < MAX_UNPARSED_BYTES:
            self._resume()
        if backlog:
            self._turns.wait(self)
        elif self._eof:
            self.feed_eof()

    def _parse_slice(self, parser: PacketParser, backlog: deque[memoryview]) -> Packet | None:
        chunk = backlog[0]
        if not parser.bytes_received and len(chunk) <= FAST_PATH_MAX_BYTES:
            packet = parser.read_fast(bytes(chunk))  # (a first chunk too big to try at once)
            if packet is not None:
                return packet
        if len(chunk) <= SLICE_BYTES:
            backlog.popleft()
        else:
            backlog[0] = chunk[SLICE_BYTES:]  # (a view: nothing is copied)
            chunk = chunk[:SLICE_BYTES]
        self._unparsed -= len(chunk)
        return parser.feed(bytes(chunk))

    def _keep(self, data: bytes) -> None:
        self._backlog.append(memoryview(data))
        self._unparsed += len(data)
        if self._unparsed >= MAX_UNPARSED_BYTES and not self._paused:
            self._paused = True
            self._transport.pause_reading()

    def _resume(self) -> None:
        if self._paused:
            self._paused = False
            if not self._transport.is_closing():
                self._transport.resume_reading()

    def _answer(self, packet: Packet) -> None:
        assert self._parser is not None
        alone = self._parser.alone and not self._backlog
        self._rest = self._parser.rest + b"".join(self._backlog)
        on_packet = self._on_packet
        self.close()
        on_packet(packet, alone)

    def _fail(self, error: PacketError) -> None:
        on_error = self._on_error
        self.close()
        on_error(error)
