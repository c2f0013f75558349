"""A job's stream without sockets: lines sealed into blocks, and what reads them.

Lines are appended one bytes object each; a flush seals them into blocks once
enough have gathered.  Whatever the blocks, every reader (watchers, ``read``,
``pieces``, ``trim``) sees the same lines in the same order, and the lines
held cost little more than their bytes.
"""

from __future__ import annotations

import asyncio
import tracemalloc

import pytest

from jobmonitor.engine.stream import BLOCK_LINES, SEAL_LINES, WRITE_LINES, JobStream


def line(n: int) -> bytes:
    return b"J0000100: line %d of the stream, padded to some width\r\n" % n


class Watcher:
    """Takes everything it is given, in order."""

    def __init__(self, writable: bool = True) -> None:
        self.writable = writable
        self.received: list[bytes] = []
        self.writes = 0
        self.ended = False
        self.behind: int | None = None
        self.stream_cursor = 0

    def write(self, data: bytes) -> None:
        self.received.append(data)
        self.writes += 1

    def stream_ended(self) -> None:
        self.ended = True

    def fell_behind(self, next_line: int) -> None:
        self.behind = next_line

    def lines(self) -> list[bytes]:
        return b"".join(self.received).splitlines(keepends=True)


async def stream_of(count: int, per_turn: int) -> JobStream:
    """A stream that was said ``count`` lines, ``per_turn`` per loop turn."""
    stream = JobStream(asyncio.get_running_loop())
    for first in range(1, count + 1, per_turn):
        for n in range(first, min(first + per_turn, count + 1)):
            stream.append(line(n))
        await asyncio.sleep(0)  # the flush
    return stream


@pytest.mark.parametrize("per_turn", [1, SEAL_LINES - 1, SEAL_LINES, 700, 3 * BLOCK_LINES + 5])
async def test_every_reader_sees_every_line_in_order_whatever_the_blocks(per_turn):
    count = 7000
    expected = [line(n) for n in range(1, count + 1)]
    watcher = Watcher()
    stream = JobStream(asyncio.get_running_loop())
    stream.watch(watcher)
    for first in range(1, count + 1, per_turn):
        for n in range(first, min(first + per_turn, count + 1)):
            stream.append(line(n))
        await asyncio.sleep(0)
    assert len(stream) == count
    assert stream.read(0, count) == expected
    assert stream.read(1234, 4321) == expected[1234:4321]
    pieces = stream.pieces(10, count, BLOCK_LINES)
    assert all(0 < n <= BLOCK_LINES for n, _ in pieces)
    assert b"".join(data for _, data in pieces) == b"".join(expected[10:])
    assert sum(n for n, _ in pieces) == count - 10
    late = Watcher()
    stream.watch(late, from_line=2500)  # from the middle of a block
    stream.close()
    assert watcher.lines() == expected and watcher.ended
    assert late.lines() == expected[2499:] and late.ended


async def test_a_watcher_gets_at_most_write_lines_a_write_and_whole_blocks_uncopied():
    stream = await stream_of(3 * BLOCK_LINES, 3 * BLOCK_LINES)  # one turn: three blocks
    pieces = stream.pieces(0, 3 * BLOCK_LINES, BLOCK_LINES)
    assert len(pieces) == 3
    assert stream.pieces(0, BLOCK_LINES, BLOCK_LINES)[0][1] is pieces[0][1]  # the block itself
    watcher = Watcher()
    stream.watch(watcher)
    assert watcher.received == [data for _, data in pieces]
    assert all(len(data.splitlines()) <= WRITE_LINES for data in watcher.received)


async def test_trimming_goes_a_block_at_a_time():
    stream = await stream_of(5000, 1000)  # blocks of 1000 lines
    stream.trim(2500)  # lines 1..2499 may go: the blocks of 1..1000 and 1001..2000 do
    assert stream.base == 2000 and not stream.in_memory(2000) and stream.in_memory(2001)
    assert stream.read(2000, 2003) == [line(2001), line(2002), line(2003)]
    stream.trim(5001)  # everything
    assert stream.base == 5000 and len(stream) == 5000 and stream.read(5000, 5000) == []
    stream.append(line(5001))
    await asyncio.sleep(0)
    assert stream.read(5000, 5001) == [line(5001)]
    stream.trim(5002)
    assert stream.base == 5001


async def test_a_watcher_behind_a_trimmed_block_is_told_to_read_the_store():
    stream = await stream_of(3000, 1000)
    watcher = Watcher(writable=False)
    stream.watch(watcher)
    stream.trim(1500)
    watcher.writable = True
    stream.catch_up(watcher)
    await asyncio.sleep(0)
    assert watcher.behind == 1 and watcher.received == []


async def test_lines_waiting_in_memory_cost_little_more_than_their_bytes():
    count = 100_000
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        stream = await stream_of(count, 100)  # as a job that yields every 100 lines
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    wire = sum(len(line(n)) for n in range(1, count + 1))
    assert len(stream) == count
    assert held <= 1.15 * wire, held / wire  # a bytes object per line would be 1.7 times
