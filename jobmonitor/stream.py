"""A job's status stream: an append-only log of encoded J lines, and its watchers.

Each line is formatted once, when the job says it, and kept as bytes.  Line 1
is the first J line a monitoring submitter receives.  A watcher (a monitoring
connection) is only a cursor into the log: appending a line costs a list append
and, at most once per event-loop turn, scheduling a flush.  The flush hands
each watcher everything past its cursor in one ``write`` and shares the joined
bytes among watchers at the same position, so a job emitting thousands of lines
per turn costs one write per watcher per turn, and a watcher that cannot take
more (its transport paused) is simply skipped until it asks to catch up.

Nothing here knows about sockets: a watcher is anything with ``write()``,
``writable`` and ``stream_ended()``.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

__all__ = ["Watcher", "JobStream"]


class Watcher(Protocol):
    """What the stream needs from a monitoring connection."""

    @property
    def writable(self) -> bool:
        """False while the peer is not keeping up (transport paused)."""

    def write(self, data: bytes) -> None:
        """Send stream bytes to the peer."""

    def stream_ended(self) -> None:
        """The watcher has been given every line of a closed stream."""


class JobStream:
    """The recorded lines of one job and the watchers following them."""

    __slots__ = ("lines", "closed", "_loop", "_cursors", "_flush_scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.lines: list[bytes] = []
        self.closed = False
        self._loop = loop
        self._cursors: dict[Watcher, int] = {}
        self._flush_scheduled = False

    def __len__(self) -> int:
        return len(self.lines)

    @property
    def watcher_count(self) -> int:
        return len(self._cursors)

    def append(self, data: bytes) -> None:
        """Record one encoded message (it may span several wire lines)."""
        if self.closed:
            return
        self.lines.append(data)
        if self._cursors and not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def close(self) -> None:
        """No more lines: watchers end once they have everything."""
        self.closed = True
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def watch(self, watcher: Watcher, from_line: int = 1) -> None:
        """Start sending lines from ``from_line`` (1-based) to ``watcher``."""
        self._cursors[watcher] = max(from_line, 1) - 1
        self.catch_up(watcher)

    def unwatch(self, watcher: Watcher) -> None:
        """Stop sending to ``watcher`` (it went away)."""
        self._cursors.pop(watcher, None)

    def catch_up(self, watcher: Watcher) -> None:
        """Send ``watcher`` what it has not seen yet (after it became writable)."""
        if watcher in self._cursors and not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        lines = self.lines
        end = len(lines)
        shared: dict[int, bytes] = {}
        finished = []
        for watcher, position in list(self._cursors.items()):
            if position < end and watcher.writable:
                chunk = shared.get(position)
                if chunk is None:
                    chunk = shared[position] = b"".join(lines[position:end])
                self._cursors[watcher] = end
                watcher.write(chunk)
                position = end
            if position >= end and self.closed:
                finished.append(watcher)
        for watcher in finished:
            del self._cursors[watcher]
            watcher.stream_ended()
