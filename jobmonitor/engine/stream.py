"""A job's status stream: an append-only log of encoded J lines, and its watchers.

Each wire line is formatted once, when the job says it, and kept as bytes.
Line numbers start at 1 with the first line a monitoring submitter receives.
The log keeps lines ``base + 1`` onwards in memory; older lines (recovered
after a restart, or trimmed once stored) are only in the store.

The newest lines are ``lines``, one bytes object each: saying a line is a list
append (``Job.info`` does it inline).  At a flush, once ``SEAL_LINES`` have
gathered there, they are sealed into *blocks*: the lines joined into one bytes
object, at most ``BLOCK_LINES`` of them.  A line then costs its bytes, not a
whole object (some fifty bytes more than its text), so a job whose lines wait
for the store (a chatty job, a slow disk) holds little more than their wire
bytes; and sealing costs the one join a flush made anyway for its watchers.
Watchers are sent slices of a block (the block itself when they take all of
it), and a store takes whole blocks as they are (``pieces``).  Lines leave
memory a block at a time.

A watcher (a monitoring connection) is only a cursor into the log: appending a
line costs a list append and, at most once per event-loop turn, scheduling a
flush.  The flush hands each watcher everything past its cursor in one
``write``, sharing the joined bytes among watchers at the same position, so a
job emitting thousands of lines per turn costs one write per watcher per turn.
A watcher that cannot take more (its transport paused) is skipped until it asks
to catch up; one whose cursor falls before ``base`` is told to read the store.

A watcher is given at most ``WRITE_LINES`` lines per ``write``, and more only
while it stays writable, so what waits in one connection's buffer stays
bounded however far behind the watcher is.

Nothing here knows about sockets: a watcher is anything with ``writable``,
``write()``, ``stream_ended()`` and ``fell_behind()``.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_right
from collections.abc import Callable
from itertools import accumulate
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .counters import JobCounters

__all__ = ["Watcher", "JobStream", "WRITE_LINES", "BLOCK_LINES", "SEAL_LINES"]

#: Most lines handed to a watcher in one write.
WRITE_LINES = 4096
#: Most lines in one block (the SQLite store's blocks hold as many: it stores
#: a block as it is).
BLOCK_LINES = 2000
#: Lines that gather in ``lines`` before a flush seals them into blocks.
SEAL_LINES = 64
_JOIN = b"".join


class _Blocks:
    """A stream's sealed lines: the joined bytes of each block, how many lines it
    holds, and the stream position (0-based) of its first line.

    Where each line ends in a block is not kept: readers mostly take whole
    blocks, and the rest find the ends when they need them (``_ends``), cheaply,
    since every line ends with CRLF and holds no other line feed.
    """

    __slots__ = ("data", "counts", "starts", "count")

    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.counts: list[int] = []
        self.starts: list[int] = []
        self.count = 0  # lines in all blocks

    def seal(self, lines: list[bytes], start: int) -> None:
        """Add ``lines``, whose first is at position ``start``, as blocks."""
        for first in range(0, len(lines), BLOCK_LINES):
            part = lines[first:first + BLOCK_LINES]
            self.data.append(_JOIN(part))
            self.counts.append(len(part))
            self.starts.append(start + first)
        self.count += len(lines)

    def chunk(self, position: int, stop: int) -> tuple[bytes, int]:
        """Lines from ``position`` to at most ``stop`` that lie in one block, joined,
        and where they stop: the block itself when that is all of it."""
        index = bisect_right(self.starts, position) - 1
        data, first = self.data[index], self.starts[index]
        stop = min(stop, first + self.counts[index])
        if position == first and stop == first + self.counts[index]:
            return data, stop
        ends = _ends(data)
        return data[ends[position - first]:ends[stop - first]], stop

    def lines(self, position: int, stop: int) -> tuple[list[bytes], int]:
        """Lines from ``position`` to at most ``stop`` that lie in one block, one
        bytes each, and where they stop."""
        index = bisect_right(self.starts, position) - 1
        data, first = self.data[index], self.starts[index]
        stop = min(stop, first + self.counts[index])
        ends = _ends(data)
        return [data[a:b] for a, b in zip(ends[position - first:stop - first],
                                           ends[position - first + 1:stop - first + 1],
                                           strict=True)], stop

    def drop_before(self, position: int) -> int:
        """Forget the blocks that end at or before ``position``; return how many lines."""
        keep = bisect_right(self.starts, position) - 1  # the block that holds position
        if keep < 0:
            return 0
        if self.starts[keep] + self.counts[keep] <= position:
            keep += 1  # (that block ends before it too)
        if keep == 0:
            return 0
        dropped = self.starts[keep] - self.starts[0] if keep < len(self.starts) else self.count
        del self.data[:keep], self.counts[:keep], self.starts[:keep]
        self.count -= dropped
        return dropped


def _ends(data: bytes) -> list[int]:
    """Where each line of a block starts, and the block's end: 0, ..., len(data)."""
    return [0, *accumulate(len(part) + 1 for part in data.split(b"\n")[:-1])]


class Watcher(Protocol):
    """What the stream needs from a monitoring connection."""

    @property
    def writable(self) -> bool:
        """False while the peer is not keeping up (transport paused)."""

    def write(self, data: bytes) -> None:
        """Send stream bytes to the peer."""

    def stream_ended(self) -> None:
        """The watcher has been given every line of a closed stream."""

    def fell_behind(self, next_line: int) -> None:
        """Lines from ``next_line`` on are no longer in memory: read them from the store."""

    #: The 0-based position of the next line to send; the stream keeps it.
    stream_cursor: int


class JobStream:
    """The recorded lines of one job and the watchers following them."""

    __slots__ = ("lines", "base", "closed", "on_flush", "scheduled", "durable", "_loop",
                 "_watchers", "_stored_waiter", "flushed", "_blocks", "counters")

    def __init__(self, loop: asyncio.AbstractEventLoop, base: int = 0) -> None:
        #: The newest lines, not yet sealed into blocks (append a line here, then
        #: ``schedule`` unless ``scheduled``).
        self.lines: list[bytes] = []
        #: The lines sealed before those (made at the first seal: most jobs say few lines).
        self._blocks: _Blocks | None = None
        #: How many lines precede the first in memory (kept only in the store).
        self.base = base
        self.closed = False
        #: Called once per flush that had new lines (the store's cue).
        self.on_flush: Callable[[], None] | None = None
        #: How many lines had been recorded at the last flush: what ``on_flush``
        #: has announced, and all a store takes.  A flush that only serves
        #: watchers (newly stored lines, a watcher catching up) is no news.
        self.flushed = base
        #: With a durable store: how many lines are stored.  Watchers are sent
        #: only those, so a line a client has seen survives any crash, and
        #: line numbers mean the same thing before and after a restart.
        self.durable: int | None = None
        self._loop = loop
        # A list, each watcher holding its own cursor: most jobs have one watcher
        # or none, and a one-entry dict costs four times a one-entry list.
        self._watchers: list[Watcher] = []
        #: The flush scheduled for the end of this loop turn, if any (truthy).
        self.scheduled: asyncio.Handle | None = None
        # A job waiting at a checkpoint for the store to catch up: its future, and
        # how few unstored lines wake it.
        self._stored_waiter: tuple[asyncio.Future[None], int] | None = None
        #: Where the lines handed to watchers are counted (the engine's), if anywhere.
        self.counters: JobCounters | None = None

    def __len__(self) -> int:
        """The number of lines recorded so far (in memory or not)."""
        blocks = self._blocks
        return self.base + len(self.lines) + (blocks.count if blocks is not None else 0)

    @property
    def _tail_start(self) -> int:
        """The position of ``lines[0]``."""
        blocks = self._blocks
        return self.base + (blocks.count if blocks is not None else 0)

    @property
    def watcher_count(self) -> int:
        return len(self._watchers)

    def append(self, data: bytes) -> None:
        """Record one encoded wire line."""
        if not self.closed:
            self.lines.append(data)
            if not self.scheduled:
                self.schedule()

    def seed(self, data: bytes) -> None:
        """Record a job's first line before anyone can watch it: no flush is needed
        (a watcher that attaches is served what is recorded; a store's ``add``
        takes it)."""
        self.lines.append(data)
        self.flushed += 1

    def extend(self, lines: list[bytes]) -> None:
        """Record several encoded wire lines."""
        if not self.closed:
            self.lines.extend(lines)
            if not self.scheduled:
                self.schedule()

    def close(self) -> None:
        """No more lines: watchers end once they have everything.

        The flush happens now, not at the end of the turn, so that a job that
        ends at once shares its watchers' first send with the reply.
        """
        self.closed = True
        if self.scheduled is not None:
            self.scheduled.cancel()  # this flush is the last one needed
        self._flush()

    def watch(self, watcher: Watcher, from_line: int = 1) -> None:
        """Send lines from ``from_line`` (1-based) on to ``watcher``, starting now with
        what is already recorded (so a reply and the first lines can share a send)."""
        position = max(from_line, 1) - 1
        watcher.stream_cursor = position
        if watcher not in self._watchers:
            self._watchers.append(watcher)
        if position < self.base:
            if not self.scheduled:
                self.schedule()  # the flush tells it to read the store
            return
        self._serve(watcher, position, self._deliverable(), {})

    def stored(self, count: int) -> None:
        """The store now holds ``count`` lines: they go out now, as far as each
        watcher can take them (the caller may then trim what they no longer need)."""
        self.durable = count
        if self._watchers:
            if self.scheduled is not None:
                self.scheduled.cancel()
            self._flush()
        pending = self._stored_waiter
        if pending is not None and self.unstored() <= pending[1]:
            self._stored_waiter = None
            if not pending[0].done():
                pending[0].set_result(None)

    def unstored(self) -> int:
        """How many lines wait to be stored (0 when nothing is stored at all)."""
        return 0 if self.durable is None else len(self) - self.durable

    def wait_stored(self, most_unstored: int) -> asyncio.Future[None] | None:
        """None while at most ``most_unstored`` lines wait to be stored; else a
        future, done once no more than half as many do."""
        if self.unstored() <= most_unstored:
            return None
        pending = self._stored_waiter
        if pending is None or pending[0].done():
            pending = self._stored_waiter = (self._loop.create_future(), most_unstored // 2)
        return pending[0]

    def _deliverable(self) -> int:
        end = len(self)
        return end if self.durable is None else min(end, self.durable)

    def unwatch(self, watcher: Watcher) -> int | None:
        """Stop sending to ``watcher``; return the next line it would have had."""
        if watcher not in self._watchers:
            return None
        self._watchers.remove(watcher)
        return watcher.stream_cursor + 1

    def catch_up(self, watcher: Watcher) -> None:
        """Send ``watcher`` what it has not seen yet (after it became writable)."""
        if watcher in self._watchers and not self.scheduled:
            self.schedule()

    def hand_over(self) -> None:
        """The job is no longer this server's (a cluster's node lost it): every
        watcher reads the rest from the store (``fell_behind``)."""
        for watcher in list(self._watchers):
            self._watchers.remove(watcher)
            watcher.fell_behind(watcher.stream_cursor + 1)

    def in_memory(self, line: int) -> bool:
        """True when line number ``line`` (or a later one) can be served from memory."""
        return line > self.base

    def first_needed_line(self) -> int | None:
        """The lowest line a watcher has yet to be sent, or None without watchers."""
        if not self._watchers:
            return None
        return min(watcher.stream_cursor for watcher in self._watchers) + 1

    def trim(self, keep_from_line: int) -> None:
        """Forget lines before ``keep_from_line`` (they must be in the store), a whole
        block at a time: the rest of a block stays until all of it can go."""
        position = keep_from_line - 1
        blocks = self._blocks
        if blocks is not None and blocks.count:
            self.base += blocks.drop_before(position)
            if blocks.count:
                return
        drop = min(position - self.base, len(self.lines))
        if drop > 0:
            del self.lines[:drop]
            self.base += drop

    def read(self, start: int, stop: int) -> list[bytes]:
        """The lines at positions ``start`` (at least ``base``) to ``stop``, one bytes each."""
        stop = min(stop, len(self))
        found: list[bytes] = []
        tail = self._tail_start
        while start < min(stop, tail):
            assert self._blocks is not None  # (lines before the tail are in blocks)
            lines, start = self._blocks.lines(start, stop)
            found += lines
        if start < stop:
            found += self.lines[start - tail:stop - tail]
        return found

    def pieces(self, start: int, stop: int, most: int) -> list[tuple[int, bytes]]:
        """The lines at positions ``start`` to ``stop`` (in memory) joined, in pieces of
        at most ``most`` lines: (how many lines, their bytes).  A piece that is a
        whole block is the block itself (nothing is copied)."""
        found: list[tuple[int, bytes]] = []
        tail = self._tail_start
        while start < min(stop, tail):
            assert self._blocks is not None  # (lines before the tail are in blocks)
            data, end = self._blocks.chunk(start, min(stop, start + most))
            found.append((end - start, data))
            start = end
        while start < stop:
            end = min(stop, start + most)
            found.append((end - start, _JOIN(self.lines[start - tail:end - tail])))
            start = end
        return found

    def _seal(self) -> None:
        """Seal ``lines`` into blocks."""
        blocks = self._blocks
        if blocks is None:
            blocks = self._blocks = _Blocks()
        lines, self.lines = self.lines, []
        blocks.seal(lines, self.base + blocks.count)

    def schedule(self) -> None:
        """Flush at the end of this event-loop turn (the caller checked ``scheduled``)."""
        self.scheduled = self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self.scheduled = None
        if len(self.lines) >= SEAL_LINES:
            self._seal()
        count = len(self)
        if count != self.flushed:
            self.flushed = count
            if self.on_flush is not None:
                self.on_flush()
        end = self._deliverable()
        shared: dict[int, tuple[bytes, int]] = {}
        for watcher in list(self._watchers):
            position = watcher.stream_cursor
            if position < self.base:
                self._watchers.remove(watcher)
                watcher.fell_behind(position + 1)
            else:
                self._serve(watcher, position, end, shared)

    def _serve(self, watcher: Watcher, position: int, end: int,
               shared: dict[int, tuple[bytes, int]]) -> None:
        """Send ``watcher`` what it can take of lines up to ``end``; end it if done."""
        while position < end and watcher.writable:
            position = self._send(watcher, position, end, shared)
        watcher.stream_cursor = position
        if self.closed and position >= len(self):
            self._watchers.remove(watcher)
            watcher.stream_ended()

    def _send(self, watcher: Watcher, position: int, end: int,
              shared: dict[int, tuple[bytes, int]]) -> int:
        """Write one chunk from ``position``; return the new position."""
        found = shared.get(position)
        if found is None:
            stop = min(end, position + WRITE_LINES)
            tail = self._tail_start
            if position < tail:
                assert self._blocks is not None  # (lines before the tail are in blocks)
                found = self._blocks.chunk(position, stop)
            else:
                found = _JOIN(self.lines[position - tail:stop - tail]), stop
            shared[position] = found
        watcher.write(found[0])
        if self.counters is not None:
            self.counters.lines_sent += found[1] - position
        return found[1]
