"""Connections that go wrong over real sockets: values the server cannot use, a store
that fails while a monitor is followed, and clients that stop reading a reply."""

from __future__ import annotations

import asyncio
import logging
import socket
import sqlite3

import pytest

from ..support.helpers import TIMEOUT_S, exchange, split_lines, submit, xml_packet
from .test_durable import tid_of

#: How long a connection may take to end once nothing more can come of it.
ENDS_WITHIN_S = 3.0
INVALID_LINE = ("R0005007: Invalid variable value: _sys_FromLine must be a line number from 1, "
                "got ")


@pytest.fixture
def db_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'j.db'}"


async def connections_end(server, within_s: float = ENDS_WITHIN_S) -> None:
    """Wait until the server holds no connection; fail after ``within_s``."""
    try:
        await asyncio.wait_for(server.wait_connections_closed(), within_s)
    except TimeoutError:
        raise AssertionError(f"{server.connection_count} connections still open") from None


async def left_memory(server, tid: str) -> None:
    """Wait until a finished job is stored and gone from memory."""
    for _ in range(250):
        if server.engine.jobs.live(tid) is None:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{tid} is still in memory")


async def small_window(port: int, packet: bytes, window: int = 4096) -> socket.socket:
    """A connected non-blocking socket with a small receive window that sent ``packet``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, window)  # before connect
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", port))
    await loop.sock_sendall(sock, packet)
    return sock


async def read_to_eof(sock: socket.socket, pause_s: float = 0.0) -> bytes:
    """Everything the server sends until it closes (pausing ``pause_s`` between reads)."""
    loop = asyncio.get_running_loop()
    chunks = []
    while chunk := await asyncio.wait_for(loop.sock_recv(sock, 65536), TIMEOUT_S):
        chunks.append(chunk)
        if pause_s:
            await asyncio.sleep(pause_s)
    return b"".join(chunks)


# -- line numbers the server cannot use ---------------------------------------------------

# "²" is a digit to str.isdigit() but not to int(); 5000 digits are more than int()
# converts; 20 digits are more than SQLite's 64-bit integers hold.
@pytest.mark.parametrize("from_line", ["\u00b2", "7" * 5000, "9" * 20])
@pytest.mark.parametrize("command", ["GetTaskLog", "MonitorJob"])
async def test_an_unusable_line_number_is_an_invalid_value(make_server, db_url, command,
                                                           from_line):
    server = await make_server(store=db_url)
    tid = tid_of((await exchange(server.port, submit("echo")))[0])
    packet = xml_packet(command, {"_sys_TransactionID": tid, "_sys_FromLine": from_line})
    lines = await asyncio.wait_for(exchange(server.port, packet), ENDS_WITHIN_S)
    assert len(lines) == 1 and lines[0].startswith(INVALID_LINE), lines
    assert len(lines[0]) < 150  # the value is quoted clipped
    await connections_end(server)


async def test_line_numbers_of_up_to_ten_digits_are_accepted(make_server, db_url):
    server = await make_server(store=db_url)
    tid = tid_of((await exchange(server.port, submit("echo")))[0])
    packet = xml_packet("GetTaskLog", {"_sys_TransactionID": tid, "_sys_FromLine": "9" * 10})
    assert await exchange(server.port, packet) == ["R0000000: Lines: 0 of 4"]


# -- a store that fails while a monitor is followed ---------------------------------------

def fail_reads(server, monkeypatch, after_calls: int = 0) -> None:
    """Make the store's line reads fail (after ``after_calls`` that work)."""
    store = server.engine._store
    read_lines = store.read_lines
    calls = 0

    async def failing(*args):
        nonlocal calls
        calls += 1
        if calls > after_calls:
            raise sqlite3.OperationalError("disk I/O error")
        return await read_lines(*args)

    monkeypatch.setattr(store, "read_lines", failing)


def following_failures(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records
            if r.name == "jobmonitor.connection" and r.levelno == logging.ERROR]


@pytest.mark.parametrize("pages", [0, 1])
async def test_a_failed_store_read_while_following_ends_the_connection(
        make_server, db_url, monkeypatch, caplog, pages):
    server = await make_server(store=db_url)
    count = 3000  # more than one page of catch-up lines (CATCH_UP_PAGE_LINES)
    tid = tid_of((await exchange(server.port, submit("lines", monitor=False,
                                                     Count=str(count))))[0])
    await left_memory(server, tid)
    fail_reads(server, monkeypatch, after_calls=pages)
    packet = xml_packet("MonitorJob", {"_sys_TransactionID": tid, "_sys_FromLine": "1"})
    lines = await asyncio.wait_for(exchange(server.port, packet), ENDS_WITHIN_S)
    # The reply, the pages read before the failure, then the connection closes
    # without the ended line: the client re-attaches from the next line, as after
    # any lost connection.
    assert lines[0] == f"R0000000: {tid}"
    assert lines[1:] == ([] if not pages else
                         ["J0000100: Machine name: testhost",
                          *(f"J0000100: line {n}" for n in range(1, 2000))])
    await connections_end(server)
    assert server.engine.jobs.monitor_count(tid) == 0
    failures = following_failures(caplog)
    assert len(failures) == 1 and failures[0].exc_info is not None


async def test_a_failed_store_read_after_falling_behind_ends_the_connection(
        make_server, db_url, monkeypatch, caplog):
    # A monitor that reads nothing while a job runs on falls out of the lines kept
    # in memory (fell_behind): it must then read them from the store, which fails.
    server = await make_server(store=db_url, max_lines_in_memory=1000, monitor_stall_s=5.0)
    fail_reads(server, monkeypatch)
    count = 60_000  # (more than the kernel takes in for a client that reads nothing)
    sock = await small_window(server.port, submit("burst", Count=str(count), Width="100",
                                                  YieldEvery="100", Delay="0.2"))
    with sock:
        for _ in range(250):
            if following_failures(caplog):
                break
            await asyncio.sleep(0.02)
        lines = split_lines(await read_to_eof(sock))
    assert lines[0].startswith("R0000000: T")
    assert lines[1] == "J0000100: Machine name: testhost"
    pad = " " + "." * 100
    assert lines[2:] == [f"J0000100: line {n}{pad}" for n in range(1, len(lines) - 1)]
    assert len(lines) < count
    await connections_end(server)
    failures = following_failures(caplog)
    assert len(failures) == 1 and failures[0].exc_info is not None


# -- clients that stop reading a reply ----------------------------------------------------

BIG_PARAM = "x" * 900_000


async def big_jobs(port: int, count: int) -> None:
    for _ in range(count):
        await exchange(port, submit("lines", monitor=False, Count="1", Blob=BIG_PARAM))


LIST_ALL = xml_packet("ListJobs", {"_sys_Filter": "all", "_sys_Format": "json"})


# Pending output past max_pending_output_bytes pauses the transport; under it (a
# limit larger than the reply) nothing does, and the reply just sits unsent.
@pytest.mark.parametrize("pending", [None, 64 * 1024 * 1024])
async def test_a_client_that_never_reads_a_reply_is_dropped(make_server, pending):
    server = await make_server(monitor_stall_s=0.5, max_pending_output_bytes=pending)
    await big_jobs(server.port, 6)
    sock = await small_window(server.port, LIST_ALL)
    with sock:
        await asyncio.sleep(0.2)
        assert server.connection_count == 1  # the reply is waiting for it
        await connections_end(server)


async def test_a_slow_but_reading_client_gets_all_of_a_big_reply(make_server):
    stall_s = 0.25
    server = await make_server(monitor_stall_s=stall_s)
    await big_jobs(server.port, 6)
    expected = await exchange(server.port, LIST_ALL)
    assert len(expected[0]) > 5_000_000  # more than the kernel's buffers hold
    loop = asyncio.get_running_loop()
    started = loop.time()
    sock = await small_window(server.port, LIST_ALL, window=16384)
    with sock:
        got = split_lines(await read_to_eof(sock, pause_s=0.01))
    assert got == expected
    # The server closed at once, then kept its connection (bytes the client had
    # not taken) for several stall periods: the client never paused that long.
    await connections_end(server)
    assert loop.time() - started > 2 * stall_s
