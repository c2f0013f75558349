"""Blocks of job lines read ahead: a follower catching up on a long job reads
several pages' worth of blocks in one round trip, and its next pages from here.

A stored line never changes: a block is only ever written again with more
lines after the ones it had (a commit whose answer was lost, retried with what
came since), so a block read once gives its lines for good.  A page is served
from here only when the blocks kept hold all of it, one after the other; else
it is read from the database (with the blocks after it, ``READ_AHEAD`` pages'
worth), and what was read is kept.  A job's blocks are kept at most ``KEEP_S``
after they were read, and all together at most ``MOST_LINES`` lines (the jobs
read longest ago go first); a job deleted here is forgotten at once.
"""

from __future__ import annotations

import bisect
import collections
import time

__all__ = ["BlockCache", "KEEP_S", "MOST_LINES", "READ_AHEAD"]

#: Pages' worth of lines a read from the database asks for.
READ_AHEAD = 4
#: Most lines kept over all jobs (a few MB of typical lines).
MOST_LINES = 50_000
#: Seconds a job's blocks are kept after the read that brought them.
KEEP_S = 5.0


class _JobBlocks:
    __slots__ = ("starts", "lines", "read_at", "count")

    def __init__(self) -> None:
        self.starts: list[int] = []  # the first line of each block, in order
        self.lines: list[list[bytes]] = []  # each block's lines
        self.read_at = 0.0
        self.count = 0


class BlockCache:
    """Blocks of job lines read lately (see the module's text)."""

    def __init__(self) -> None:
        self._jobs: collections.OrderedDict[int, _JobBlocks] = collections.OrderedDict()
        self._count = 0

    def page(self, number: int, from_line: int, limit: int) -> list[bytes] | None:
        """Lines ``from_line`` to ``from_line + limit - 1`` of job ``number``, if
        the blocks kept hold them all; else None."""
        blocks = self._jobs.get(number)
        if blocks is None or limit <= 0:
            return None
        if time.monotonic() - blocks.read_at > KEEP_S:
            self.forget(number)
            return None
        at = bisect.bisect_right(blocks.starts, from_line) - 1
        found: list[bytes] = []
        line = from_line
        while 0 <= at < len(blocks.starts):
            start, block = blocks.starts[at], blocks.lines[at]
            if not start <= line < start + len(block):
                return None  # (a gap: a block not read yet, or the end)
            found.extend(block[line - start:line - start + limit - len(found)])
            line = start + len(block)
            if len(found) >= limit:
                return found
            at += 1
        return None

    def keep(self, number: int, blocks_read: list[tuple[int, list[bytes]]]) -> None:
        """Keep these blocks of job ``number`` (first line, lines), just read."""
        if not blocks_read:
            return
        blocks = self._jobs.get(number)
        if blocks is None:
            blocks = self._jobs[number] = _JobBlocks()
        self._jobs.move_to_end(number)
        blocks.read_at = time.monotonic()
        for first_line, lines in blocks_read:
            at = bisect.bisect_left(blocks.starts, first_line)
            if at < len(blocks.starts) and blocks.starts[at] == first_line:
                grown = len(lines) - len(blocks.lines[at])
                if grown > 0:  # (written again with more lines)
                    blocks.lines[at] = lines
                    blocks.count += grown
                    self._count += grown
                continue
            blocks.starts.insert(at, first_line)
            blocks.lines.insert(at, lines)
            blocks.count += len(lines)
            self._count += len(lines)
        while self._count > MOST_LINES and len(self._jobs) > 1:
            self.forget(next(iter(self._jobs)))
        while self._count > MOST_LINES and len(blocks.starts) > 1:
            blocks.starts.pop(0)  # (one job alone: its earliest blocks go)
            gone = len(blocks.lines.pop(0))
            blocks.count -= gone
            self._count -= gone

    def forget(self, number: int) -> None:
        blocks = self._jobs.pop(number, None)
        if blocks is not None:
            self._count -= blocks.count

    def clear(self) -> None:
        self._jobs.clear()
        self._count = 0
