"""Abuse over real sockets: slow and stalled clients, floods, vanishing clients, crashes.

Every load here is bounded in count and in time, and runs on loopback.  The
stalled-reader test runs at full size (a million lines) with
``JOBMONITOR_SOAK=1``; by default it streams 200 000.  The bounds it checks
are the ones docs/security.md documents.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import time
from pathlib import Path

import pytest

from jobmonitor.stream import JobStream

from .helpers import submit, xml_packet
from .test_cli import ServerProcess

SOAK = os.environ.get("JOBMONITOR_SOAK") == "1"

# -- the lag rule for a reader of the store, without sockets ----------------------------------


class _Reader:
    """A watcher reading older lines from the store."""

    def __init__(self, writable: bool) -> None:
        self.writable = writable
        self.dropped: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def too_far_behind(self, next_line: int) -> None:
        self.dropped.set_result(next_line)


async def test_a_stalled_reader_of_the_store_is_dropped_at_the_lag_limit():
    stream = JobStream(asyncio.get_running_loop(), base=100)
    stream.max_lag = 10
    stalled, reading, gone = _Reader(writable=False), _Reader(writable=True), _Reader(False)
    for reader in (stalled, reading, gone):
        stream.reading(reader, 50)
    stream.unwatch(gone)
    stream.extend([b"J0000100: x\r\n"] * 5)
    assert await asyncio.wait_for(stalled.dropped, 10) == 50
    # the same flush spared the reader that keeps reading, and the one that left
    assert not reading.dropped.done() and not gone.dropped.done()


# -- a stalled reader ---------------------------------------------------------------------

STALL_LINES = 1_000_000 if SOAK else 200_000
#: Wide lines, so the kernel's socket buffers (megabytes) hold only some of the stream.
STALL_WIDTH = 100
STALL_LAG_LINES = 50_000
#: Documented bounds: how much slower a job may get with a stalled monitor attached;
#: how much the server may grow while the store keeps up with the job, whatever its
#: size; and, for a job faster than the store, the memory per line not yet stored.
MAX_SLOWDOWN = 3.0
MAX_STEADY_GROWTH_MB = 30
MAX_BACKLOG_BYTES_PER_LINE = 400
EMITTED = re.compile(rb"J0000100: emitted \d+ lines in ([0-9.]+) s")


def read_to_eof(port: int, packet: bytes, timeout_s: float = 60.0) -> list[bytes]:
    """Send one packet on a blocking socket; the lines until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(packet)
        return _drain(sock)


def _drain(sock: socket.socket) -> list[bytes]:
    chunks = []
    while chunk := sock.recv(1 << 20):
        chunks.append(chunk)
    data = b"".join(chunks)
    assert data.endswith(b"\r\n"), data[-200:]
    return data.split(b"\r\n")[:-1]


def burst_stream(tid: str, count: int) -> list[bytes]:
    """Every line a burst job's stream has, but the one that says how long it took."""
    pad = b" " + b"." * STALL_WIDTH
    return [b"J0000100: Machine name: testhost",
            *(b"J0000100: line %d%s" % (n, pad) for n in range(1, count + 1)),
            b"J0000100: emitted", b"J0000020: Job completed successfully.",
            f"J0000001: Transaction {tid} ended".encode()]


def check_burst(lines: list[bytes], tid: str, count: int, from_line: int = 1) -> float:
    """Check a burst stream (from ``from_line``) is complete; return the job's run time."""
    expected = burst_stream(tid, count)[from_line - 1:]
    emitted = [n for n, line in enumerate(lines) if line.startswith(b"J0000100: emitted")]
    assert len(emitted) == 1, "no timing line"
    timing = lines[emitted[0]]
    lines = [*lines[:emitted[0]], b"J0000100: emitted", *lines[emitted[0] + 1:]]
    assert len(lines) == len(expected) and lines == expected
    match = EMITTED.fullmatch(timing)
    assert match is not None, timing
    return float(match.group(1))


def burst(count: int, **variables: str) -> bytes:
    """A monitored burst job that starts after a short delay, so that a second monitor
    attaches before it and reads live, like the first."""
    return submit("burst", Count=str(count), Width=str(STALL_WIDTH), Delay="0.3", **variables)


def stalled_monitor(port: int, packet: bytes) -> tuple[socket.socket, str]:
    """Submit with monitoring on a socket that then reads nothing: return it and the job."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
    sock.settimeout(30)
    sock.connect(("127.0.0.1", port))
    sock.sendall(packet)
    reply = b""
    while not reply.endswith(b"\r\n"):  # the reply line alone: 20 bytes
        reply += sock.recv(20 - len(reply))
    assert reply.startswith(b"R0000000: T"), reply
    return sock, reply[10:-2].decode()


def follow(port: int, tid: str, from_line: int = 1) -> tuple[list[bytes], int]:
    """Monitor a job to its end, re-attaching where the server says whenever this
    reader is dropped for lagging; the lines, and how many times it re-attached."""
    lines: list[bytes] = []
    for attempt in range(100):
        got = read_to_eof(port, xml_packet("MonitorJob", {
            "_sys_TransactionID": tid, "_sys_FromLine": str(from_line + len(lines))}))
        assert got[0] == f"R0000000: {tid}".encode()
        if not got[-1].startswith(b"J0005003: "):
            return lines + got[1:], attempt
        lines += got[1:-1]
    raise AssertionError("re-attached 100 times")


def submit_and_follow(port: int, packet: bytes) -> tuple[list[bytes], str]:
    """A monitored submit read to the job's end (re-attaching if dropped); the lines
    and the job."""
    got = read_to_eof(port, packet)
    assert got[0].startswith(b"R0000000: T"), got[0]
    tid = got[0][10:].decode()
    if not got[-1].startswith(b"J0005003: "):
        return got[1:], tid
    return got[1:-1] + follow(port, tid, len(got) - 1)[0], tid


def check_dropped(sock: socket.socket, port: int, tid: str, count: int) -> int:
    """Read what a dropped stalled monitor was sent; re-attach where it says; return
    the line it was told to re-attach from."""
    with sock:
        lines = _drain(sock)
    notice = re.fullmatch(rb"J0005003: Monitor fell too far behind: re-attach with MonitorJob "
                          rb"from line (\d+)", lines[-1])
    assert notice is not None, lines[-3:]
    next_line = int(notice.group(1))
    assert 1 < next_line < count
    assert lines[:-1] == burst_stream(tid, count)[:next_line - 1]
    check_burst(follow(port, tid, next_line)[0], tid, count, next_line)
    return next_line


def memory_mb(pid: int) -> tuple[int, int]:
    """A process's resident memory now and at its peak, in MiB."""
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text()
                  .splitlines() if ":" in line)
    return (int(status["VmRSS"].split()[0]) // 1024, int(status["VmHWM"].split()[0]) // 1024)


def reset_peak(pid: int) -> None:
    """Start measuring a process's peak resident memory afresh (Linux)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


@pytest.mark.timeout(600 if SOAK else 120)
def test_a_stalled_reader_neither_slows_the_job_nor_grows_the_server(tmp_path):
    server = ServerProcess(
        "--jobs", "tests/jobs.py", "--store", f"sqlite:///{tmp_path / 'stall.db'}",
        "--machine-name", "testhost", "--max-monitor-lag-lines", str(STALL_LAG_LINES),
        "--max-lines-in-memory", "1000", "--commit-interval-s", "0.01", "--linger-s", "30")
    pid = server.proc.pid
    try:
        started_mb, _ = memory_mb(pid)
        # first, while the server is small: a paced job the store keeps up with; the
        # stalled monitor falls out of memory, reads from the store, is dropped there
        reset_peak(pid)
        paced_count = STALL_LINES // 2
        stalled, paced = stalled_monitor(server.port, burst(paced_count, YieldEvery="200",
                                                            Pause="0.001"))
        check_burst(follow(server.port, paced)[0], paced, paced_count)
        paced_mb = memory_mb(pid)[1]
        paced_dropped_at = check_dropped(stalled, server.port, paced, paced_count)

        # a job at full speed with one normal monitor
        reset_peak(pid)
        alone_s = check_burst(*submit_and_follow(server.port, burst(STALL_LINES)), STALL_LINES)
        alone_mb = memory_mb(pid)[1]

        # the same job submitted by a monitor that never reads, watched by a normal one
        reset_peak(pid)
        stalled, tid = stalled_monitor(server.port, burst(STALL_LINES))
        normal, reattached = follow(server.port, tid)
        stalled_s = check_burst(normal, tid, STALL_LINES)
        stalled_mb = memory_mb(pid)[1]
        dropped_at = check_dropped(stalled, server.port, tid, STALL_LINES)

        print(f"\nstalled reader, {STALL_LINES} lines: job {alone_s:.3f} s alone, "
              f"{stalled_s:.3f} s with it (x{stalled_s / alone_s:.2f}), dropped at line "
              f"{dropped_at} (paced: {paced_dropped_at}); server peak memory: {started_mb} MiB "
              f"at start, {paced_mb} paced, {alone_mb} alone, {stalled_mb} stalled; the "
              f"normal monitor re-attached {reattached} times")
        assert stalled_s <= MAX_SLOWDOWN * alone_s
        assert paced_mb <= started_mb + MAX_STEADY_GROWTH_MB
        backlog_mb = STALL_LINES * MAX_BACKLOG_BYTES_PER_LINE // 2**20
        assert max(alone_mb, stalled_mb) <= started_mb + backlog_mb
        assert server.stop() == 0
    finally:
        server.kill()
