"""A job's status stream: an append-only log of encoded J lines, and its watchers.

Each wire line is formatted once, when the job says it, and kept as bytes.
Line numbers start at 1 with the first line a monitoring submitter receives.
The log keeps lines ``base + 1`` onwards in memory; older lines (recovered
after a restart, or trimmed once stored) are only in the store.

A watcher (a monitoring connection) is only a cursor into the log: appending a
line costs a list append and, at most once per event-loop turn, scheduling a
flush.  The flush hands each watcher everything past its cursor in one
``write``, sharing the joined bytes among watchers at the same position, so a
job emitting thousands of lines per turn costs one write per watcher per turn.
A watcher that cannot take more (its transport paused) is skipped until it asks
to catch up; one whose cursor falls before ``base`` is told to read the store.
While it reads the store it says how far it has got (``reading``), so that the
lag limit below holds for it as well.

A watcher is given at most ``WRITE_LINES`` lines per ``write``, and more only
while it stays writable, so what waits in one connection's buffer stays
bounded; one that lags more than ``max_lag`` lines while not writable, following
the stream or reading the store, is told so (``too_far_behind``) and dropped.

Nothing here knows about sockets: a watcher is anything with ``writable``,
``write()``, ``stream_ended()``, ``fell_behind()`` and ``too_far_behind()``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

__all__ = ["Watcher", "JobStream", "WRITE_LINES"]

#: Most lines handed to a watcher in one write.
WRITE_LINES = 4096


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

    def too_far_behind(self, next_line: int) -> None:
        """The watcher lags more than ``max_lag`` lines; it is no longer followed."""


class JobStream:
    """The recorded lines of one job and the watchers following them."""

    __slots__ = ("lines", "base", "closed", "on_flush", "max_lag", "_loop", "_cursors",
                 "_readers", "_scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop, base: int = 0) -> None:
        self.lines: list[bytes] = []
        #: How many lines precede ``lines[0]`` (kept only in the store).
        self.base = base
        self.closed = False
        #: Called once per flush that had new lines (the store's cue).
        self.on_flush: Callable[[], None] | None = None
        #: Lines a watcher that is not writable may lag before it is dropped.
        self.max_lag = 1_000_000
        self._loop = loop
        self._cursors: dict[Watcher, int] = {}
        #: Watchers reading older lines from the store: the lines they have been given.
        self._readers: dict[Watcher, int] = {}
        self._scheduled = False

    def __len__(self) -> int:
        """The number of lines recorded so far (in memory or not)."""
        return self.base + len(self.lines)

    @property
    def watcher_count(self) -> int:
        return len(self._cursors)

    def append(self, data: bytes) -> None:
        """Record one encoded wire line."""
        if not self.closed:
            self.lines.append(data)
            if not self._scheduled:
                self._schedule()

    def extend(self, lines: list[bytes]) -> None:
        """Record several encoded wire lines."""
        if not self.closed:
            self.lines.extend(lines)
            if not self._scheduled:
                self._schedule()

    def close(self) -> None:
        """No more lines: watchers end once they have everything."""
        self.closed = True
        if not self._scheduled:
            self._schedule()

    def watch(self, watcher: Watcher, from_line: int = 1) -> None:
        """Send lines from ``from_line`` (1-based) on to ``watcher``."""
        self._readers.pop(watcher, None)
        self._cursors[watcher] = max(from_line, 1) - 1
        if not self._scheduled:
            self._schedule()

    def unwatch(self, watcher: Watcher) -> None:
        """Stop sending to ``watcher`` (it went away)."""
        self._cursors.pop(watcher, None)
        self._readers.pop(watcher, None)

    def reading(self, watcher: Watcher, next_line: int) -> None:
        """``watcher`` reads older lines from the store and will send ``next_line`` next;
        it is dropped like a watcher if it lags too far while not writable."""
        self._readers[watcher] = next_line - 1

    def catch_up(self, watcher: Watcher) -> None:
        """Send ``watcher`` what it has not seen yet (after it became writable)."""
        if watcher in self._cursors and not self._scheduled:
            self._schedule()

    def in_memory(self, line: int) -> bool:
        """True when line number ``line`` (or a later one) can be served from memory."""
        return line > self.base

    def trim(self, keep_from_line: int) -> None:
        """Forget lines before ``keep_from_line`` (they must be in the store)."""
        drop = min(keep_from_line - 1 - self.base, len(self.lines))
        if drop > 0:
            del self.lines[:drop]
            self.base += drop

    def _schedule(self) -> None:
        self._scheduled = True
        self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        if self.on_flush is not None:
            self.on_flush()
        end = self.base + len(self.lines)
        shared: dict[int, bytes] = {}
        for watcher, position in list(self._cursors.items()):
            if position < self.base:
                del self._cursors[watcher]
                watcher.fell_behind(position + 1)
                continue
            while position < end and watcher.writable:
                position = self._send(watcher, position, end, shared)
            self._cursors[watcher] = position
            if position >= end:
                if self.closed:
                    del self._cursors[watcher]
                    watcher.stream_ended()
            elif end - position > self.max_lag:
                del self._cursors[watcher]
                watcher.too_far_behind(position + 1)
        if self._readers:
            self._drop_stalled_readers(end)

    def _drop_stalled_readers(self, end: int) -> None:
        for watcher, position in list(self._readers.items()):
            if end - position > self.max_lag and not watcher.writable:
                del self._readers[watcher]
                watcher.too_far_behind(position + 1)

    def _send(self, watcher: Watcher, position: int, end: int, shared: dict[int, bytes]) -> int:
        """Write one chunk from ``position``; return the new position."""
        stop = min(end, position + WRITE_LINES)
        chunk = shared.get(position)
        if chunk is None:
            start = position - self.base
            chunk = shared[position] = b"".join(self.lines[start:start + stop - position])
        watcher.write(chunk)
        return stop
