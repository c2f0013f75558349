"""Abuse over real sockets: stalled readers, slowloris, floods, clients that vanish.

Every load here is bounded in count and in time, and runs on loopback (crashes
and signals are in test_crash.py, hostile packets in test_fuzz.py).  The
stalled-reader test runs at full size (three million lines) with
``JOBMONITOR_SOAK=1``; by default it streams 300 000.  The bounds it checks
are the ones docs/security.md documents.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import re
import socket
import statistics
import struct
from pathlib import Path

import pytest

from ..conftest import finished, release
from ..process.test_cli import ServerProcess
from ..support import jobs
from ..support.helpers import Session, exchange, split_lines, submit, xml_packet
from ..support.robust import need_fds, no_connections, open_fds, other_tasks, task_count

SOAK = os.environ.get("JOBMONITOR_SOAK") == "1"

# -- a stalled reader ---------------------------------------------------------------------

STALL_LINES = 3_000_000 if SOAK else 300_000
#: Wide lines, so the kernel's socket buffers (megabytes) hold only some of the stream.
STALL_WIDTH = 100
#: The bytes of one of those lines on the wire ("J0000100: line N ....\r\n").
STALL_LINE_BYTES = len(b"J0000100: line 1000000 \r\n") + STALL_WIDTH
#: Seconds a monitor may take nothing while lines wait (monitor_stall_s).
STALL_S = 1.0
#: Documented bounds: how much slower a job may get with a stalled monitor attached
#: (at full size; the small run on a busy test machine gets more room); how much the
#: server may grow while the store keeps up with the job, whatever its size; and, for
#: a job faster than the store, the memory its lines not yet stored may take, for
#: each byte they are on the wire (at worst, all of them wait: how many do depends
#: on how fast the store writes, next to the job).
MAX_SLOWDOWN = 1.5 if SOAK else 3.0
#: How many times the slowdown is measured before a slow one counts (see the test).
MEASURES = 3
MAX_STEADY_GROWTH_MB = 30
MAX_BACKLOG_PER_WIRE_BYTE = 1.5
#: The growth issue 21 asks for at full size, however fast the job: asserted there
#: (a job that does not checkpoint waits for the store at its yields once its
#: backlog passes pacing.MAX_BACKLOG_LINES: see docs/security.md, Stalled reader).
GOAL_GROWTH_MB = 150
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
    reader is dropped (a reader too slow for too long); the lines, and how many times it
    re-attached."""
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


def wait_for_log(server: ServerProcess, text: str) -> str:
    """Read the server's log until a line holds ``text``; return that line."""
    assert server.proc.stderr is not None
    for line in server.proc.stderr:
        server.log.append(line)
        if text in line:
            return line
    raise AssertionError(f"the server exited without logging {text!r}")


def check_dropped(server: ServerProcess, sock: socket.socket, tid: str, count: int) -> int:
    """Once the server has dropped a stalled monitor, read what it was sent (it has
    ``STALL_S`` more to do so); re-attach where it says; return that line."""
    wait_for_log(server, f"monitor 127.0.0.1:{sock.getsockname()[1]} of {tid} stalled")
    port = server.port
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
        "--jobs", "tests/support/jobs.py", "--store", f"sqlite:///{tmp_path / 'stall.db'}",
        "--machine-name", "testhost", "--monitor-stall-s", str(STALL_S),
        "--max-lines-in-memory", "1000", "--commit-interval-s", "0.01", "--linger-s", "30")
    pid = server.proc.pid
    # a dropped monitor's last lines must be read within STALL_S of the drop: in a
    # thread that waits for it while this one follows the job
    pool = concurrent.futures.ThreadPoolExecutor(1)
    try:
        started_mb, _ = memory_mb(pid)
        # first, while the server is small: a paced job the store keeps up with; the
        # stalled monitor falls out of memory, reads from the store, is dropped there
        reset_peak(pid)
        paced_count = STALL_LINES // 2
        stalled, paced = stalled_monitor(server.port, burst(paced_count, YieldEvery="200",
                                                            Pause="0.001"))
        dropping = pool.submit(check_dropped, server, stalled, paced, paced_count)
        check_burst(follow(server.port, paced)[0], paced, paced_count)
        paced_mb = memory_mb(pid)[1]
        paced_dropped_at = dropping.result(timeout=60)

        # a job at full speed with one normal monitor, then the same job submitted by a
        # monitor that never reads, watched by a normal one.  Noise only ever adds time:
        # if a pause of the machine (another process, a collection) made the stalled run
        # look slow, the pair is measured again, up to MEASURES times in all; a monitor
        # that really slows the job fails every time.  Memory is checked on the first
        # pair: the allocator keeps some of what each job freed, so later peaks are higher
        peaks: list[int] = []
        for measure in range(1, MEASURES + 1):  # noqa: B007 - the last one is printed
            reset_peak(pid)
            alone_s = check_burst(*submit_and_follow(server.port, burst(STALL_LINES)),
                                  STALL_LINES)
            peaks.append(memory_mb(pid)[1])

            reset_peak(pid)
            stalled, tid = stalled_monitor(server.port, burst(STALL_LINES))
            dropping = pool.submit(check_dropped, server, stalled, tid, STALL_LINES)
            normal, reattached = follow(server.port, tid)
            stalled_s = check_burst(normal, tid, STALL_LINES)
            peaks.append(memory_mb(pid)[1])
            dropped_at = dropping.result(timeout=60)
            if stalled_s <= MAX_SLOWDOWN * alone_s:
                break

        alone_mb, stalled_mb = peaks[:2]
        grown_mb = max(alone_mb, stalled_mb) - started_mb
        print(f"\nstalled reader, {STALL_LINES} lines: job {alone_s:.3f} s alone, "
              f"{stalled_s:.3f} s with it (x{stalled_s / alone_s:.2f}, measure {measure}), "
              f"dropped at line {dropped_at} (paced: {paced_dropped_at}); server peak "
              f"memory: {started_mb} MiB at start, {paced_mb} paced, {alone_mb} alone, "
              f"{stalled_mb} stalled; the normal monitor re-attached {reattached} times; "
              f"grew {grown_mb} MiB (at most {GOAL_GROWTH_MB} at full size)")
        assert stalled_s <= MAX_SLOWDOWN * alone_s
        if SOAK:
            assert grown_mb <= GOAL_GROWTH_MB
        assert paced_mb <= started_mb + MAX_STEADY_GROWTH_MB
        backlog_mb = STALL_LINES * STALL_LINE_BYTES * MAX_BACKLOG_PER_WIRE_BYTE / 2**20
        assert max(alone_mb, stalled_mb) <= started_mb + MAX_STEADY_GROWTH_MB + backlog_mb
        assert server.stop() == 0
    finally:
        server.kill()
        pool.shutdown(cancel_futures=True)


# -- slowloris ------------------------------------------------------------------------------

TRICKLERS = 300
TRICKLE_INTERVAL_S = 0.02
SLOW_PACKET_TIMEOUT_S = 1.5
SLOW_IDLE_TIMEOUT_S = 1.0


async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                  packet: bytes) -> tuple[float, bytes]:
    """Send ``packet`` one byte at a time (nothing at all if it is empty) until the
    server answers and closes; return when that was (loop time) and the answer."""
    answer = asyncio.ensure_future(reader.read())
    for byte in packet:
        done, _ = await asyncio.wait([answer], timeout=TRICKLE_INTERVAL_S)
        if done:
            break
        writer.write(bytes([byte]))
    data = await asyncio.wait_for(answer, 10)
    at = asyncio.get_running_loop().time()
    writer.close()
    await writer.wait_closed()
    return at, data


async def test_slowloris_does_not_starve_a_normal_client(make_server):
    need_fds(4 * TRICKLERS + 256)
    server = await make_server(packet_timeout_s=SLOW_PACKET_TIMEOUT_S, linger_s=0.5,
                               idle_timeout_s=SLOW_IDLE_TIMEOUT_S)
    fds, tasks = open_fds(), len(other_tasks())
    # every third connection sends nothing; the others a packet too long to finish in time
    slow_packet = submit("echo", Filler="x" * 1000)
    loop = asyncio.get_running_loop()
    storm_started = loop.time()
    connections = await asyncio.gather(*(asyncio.open_connection("127.0.0.1", server.port)
                                         for _ in range(TRICKLERS)))
    opened_s = loop.time() - storm_started
    storm = [asyncio.ensure_future(trickle(reader, writer, b"" if n % 3 == 0 else slow_packet))
             for n, (reader, writer) in enumerate(connections)]

    # meanwhile a normal client watches a job that runs through the storm, and
    # submits, monitors and asks about others, and is served at once each time
    ticker = asyncio.ensure_future(exchange(server.port, submit("ticker", Count="100",
                                                                Interval="0.01")))
    served = []
    while not any(task.done() for task in storm) and len(served) < 1000:
        started = loop.time()
        lines = await exchange(server.port, submit("lines", Count="200", N=str(len(served))))
        assert lines[-2] == "J0000020: Job completed successfully." and len(lines) == 204
        status = await exchange(server.port, xml_packet(
            "GetJobStatus", {"_sys_TransactionID": lines[0][10:]}))
        assert "R0000000- Status: Completed" in status
        served.append(loop.time() - started)
    ticks = await ticker
    assert ticks[-2] == "J0000020: Job completed successfully." and len(ticks) == 104
    # served, not starved: most round trips take milliseconds, and none waits for the
    # storm to be dropped (a single one can be slow when the machine pauses this process)
    assert len(served) >= 10 and statistics.median(served) < 0.1
    assert max(served) < SLOW_IDLE_TIMEOUT_S

    results = await asyncio.gather(*storm)
    idle = [at - storm_started for n, (at, _) in enumerate(results) if n % 3 == 0]
    slow = [at - storm_started for n, (at, _) in enumerate(results) if n % 3]
    for n, (_at, data) in enumerate(results):
        expected = (f"R0005014: Connection idle too long: nothing received within "
                    f"{SLOW_IDLE_TIMEOUT_S:g} s" if n % 3 == 0 else
                    f"R0005004: Command packet not complete in time: no complete packet "
                    f"within {SLOW_PACKET_TIMEOUT_S:g} s")
        assert split_lines(data) == [expected]
    # each is answered, and its sending side shut, at its deadline (counted from when
    # it was opened: between the start and the end of opening them all; +1 s: a busy loop)
    late = opened_s + 1.0
    assert min(idle) >= SLOW_IDLE_TIMEOUT_S and max(idle) <= SLOW_IDLE_TIMEOUT_S + late
    assert min(slow) >= SLOW_PACKET_TIMEOUT_S and max(slow) <= SLOW_PACKET_TIMEOUT_S + late
    await no_connections(server)
    print(f"\nslowloris, {TRICKLERS} connections opened in {opened_s:.2f} s: normal client "
          f"served {len(served)} times in {min(served) * 1000:.0f}-{max(served) * 1000:.0f} "
          f"ms (median {statistics.median(served) * 1000:.0f}); idle ones closed after "
          f"{min(idle):.2f}-{max(idle):.2f} s, trickling ones after "
          f"{min(slow):.2f}-{max(slow):.2f} s")
    assert (open_fds(), len(other_tasks())) == (fds, tasks)


# -- flood ------------------------------------------------------------------------------------

FLOOD_LIMIT = 50
FLOOD = 400


async def test_a_flood_beyond_max_connections_is_refused_and_the_server_recovers(
        make_server, caplog):
    need_fds(2 * (FLOOD + FLOOD_LIMIT) + 256)
    server = await make_server(max_connections=FLOOD_LIMIT, linger_s=0.5,
                               max_monitors_per_job=FLOOD_LIMIT)
    fds, tasks = open_fds(), len(other_tasks())
    tid = (await exchange(server.port, submit("wait", monitor=False, Key="flood")))[0][10:]
    await no_connections(server)
    # the limit is taken by real clients: monitors of a job that waits
    held = [await Session.open(server.port, xml_packet("MonitorJob", {"_sys_TransactionID": tid}))
            for _ in range(FLOOD_LIMIT)]
    for session in held:
        assert await session.line() == f"R0000000: {tid}"
    assert server.connection_count == FLOOD_LIMIT

    async def knock() -> list[str]:
        return await exchange(server.port, submit("echo"))

    started = asyncio.get_running_loop().time()
    refused = await asyncio.gather(*(knock() for _ in range(FLOOD)))
    flood_s = asyncio.get_running_loop().time() - started
    assert all(lines == ["R0005011: Server busy: too many connections"] for lines in refused)

    # the held clients never noticed, and the server recovers once they are done
    await release("flood")
    for session in held:
        rest = await session.rest()
        assert rest[-2:] == ["J0000020: Job completed successfully.",
                             f"J0000001: Transaction {tid} ended"]
        await session.close()
    await no_connections(server)
    assert (await exchange(server.port, submit("echo")))[-2] == \
        "J0000020: Job completed successfully."
    await no_connections(server)
    print(f"\nflood: {FLOOD} connections beyond a limit of {FLOOD_LIMIT} refused in "
          f"{flood_s:.2f} s")
    assert (open_fds(), len(other_tasks())) == (fds, tasks)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


# -- clients that vanish ----------------------------------------------------------------------

VANISHING_ROUNDS = 20


def reset(writer: asyncio.StreamWriter) -> None:
    """Vanish with a reset (SO_LINGER 0) instead of a polite close."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def vanish(port: int, packet: bytes, *, cut: int | None = None, read_lines: int = 0,
                 rude: bool = False) -> None:
    """Send ``packet`` (its first ``cut`` bytes), read some lines, and go away."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(packet[:cut])
    for _ in range(read_lines):
        assert (await asyncio.wait_for(reader.readline(), 10)).endswith(b"\r\n")
    if rude:
        reset(writer)
    else:
        writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


async def test_clients_vanishing_mid_packet_and_mid_stream_leak_nothing(make_server, tmp_path,
                                                                          caplog):
    server = await make_server(store=f"sqlite:///{tmp_path / 'vanish.db'}", linger_s=0.5,
                               max_lines_in_memory=200)
    fds, tasks = open_fds(), await task_count(server)
    # a busy job whose early lines are by now only in the store
    watcher = await Session.open(server.port, submit("ticker", Count="100000", Interval="0.0005"))
    busy = (await watcher.line())[10:]
    while await watcher.line() != "J0000100: tick 1000":
        pass
    monitor = xml_packet("MonitorJob", {"_sys_TransactionID": busy})
    half = len(monitor) // 2
    for round_number in range(VANISHING_ROUNDS):
        rude = bool(round_number % 2)
        streaming = submit("lines", Count="20000", YieldEvery="100", N=str(round_number))
        await asyncio.gather(
            vanish(server.port, monitor, cut=half, rude=rude),            # mid-packet
            vanish(server.port, monitor, read_lines=3, rude=rude),        # mid-catch-up
            vanish(server.port, monitor, read_lines=1, rude=rude),        # at once
            vanish(server.port, streaming, read_lines=2, rude=rude),      # mid-stream
            vanish(server.port, submit("echo", monitor=False), rude=rude),  # before the reply
        )
    await watcher.close()  # the first monitor goes too, mid-stream

    await no_connections(server)
    assert server.engine.jobs.monitor_count(busy) == 0
    assert await exchange(server.port, xml_packet("CancelJob", {"_sys_TransactionID": busy})) \
        == [f"R0000000: {busy}"]
    active = await exchange(server.port, xml_packet("ListJobs", {}))
    for tid in [line[10:].split("\t")[0] for line in active[1:]]:  # the streaming jobs
        if server.engine.jobs.live(tid) is not None:
            await finished(server, tid)
    assert (await exchange(server.port, submit("echo")))[-2] == \
        "J0000020: Job completed successfully."
    await no_connections(server)
    assert (open_fds(), await task_count(server)) == (fds, tasks)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_clients_resetting_while_their_password_is_checked_leave_no_work(make_server):
    """A connection reset while its password waits to be checked gives back its
    place at once; its check must go with it, or resets would let a client keep
    any number of checks (and packets) waiting beyond max_connections."""
    from jobmonitor.users import User, hash_password

    server = await make_server(users=(User("ann", hash_password("ann-pw")),),
                               max_connections=10)
    tasks = await task_count(server)
    packet = xml_packet("SubmitJob", {"ProjectName": "echo", "_sys_User": "ann",
                                      "_sys_Password": "wrong", "Filler": "x" * 100_000})
    for _ in range(40):
        _, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(packet)
        await writer.drain()
        await asyncio.sleep(0.01)  # the server has it
        reset(writer)
    await no_connections(server)
    await asyncio.sleep(0.2)
    assert len(other_tasks()) == tasks
    # the address is slowed down by what was checked, but served
    ok = await exchange(server.port, xml_packet("SubmitJob", {
        "ProjectName": "echo", "_sys_User": "ann", "_sys_Password": "ann-pw"}))
    assert ok[0].startswith("R0000000: T")


async def test_a_client_that_stopped_reading_does_not_outlive_the_server():
    fds = open_fds()
    stalled = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.setblocking(False)
    loop = asyncio.get_running_loop()
    async with jobs.app.serve(host="127.0.0.1", port=0, linger_s=0.2,
                              shutdown_grace_s=0.1) as server:
        await loop.sock_connect(stalled, ("127.0.0.1", server.port))
        # more than the socket buffers hold; it stalls, and stays (monitor_stall_s is 30 s)
        await loop.sock_sendall(stalled, submit("burst", Count="50000", Width="100"))
        reply = b""
        while not reply.endswith(b"\r\n"):  # the reply line, and not a byte more
            reply += await loop.sock_recv(stalled, 20 - len(reply))
        await finished(server, reply[10:-2].decode())
        assert server.connection_count == 1
    assert server.connection_count == 0
    stalled.close()
    assert open_fds() == fds


# -- many monitored jobs waiting at once ----------------------------------------------------

#: Monitored jobs held waiting at once (the benchmark's ``held`` scenario goes
#: further: see docs/performance.md).
HELD_JOBS = 2_000
#: Documented bound: the server's memory per monitored job that waits (docs/performance.md).
MAX_HELD_KIB = 5.0


def rss_kib(pid: int) -> int:
    """A process's resident memory now, in KiB (MiB would round away a tenth of
    the bound)."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status)[1])  # type: ignore[index]


def hold_monitored(port: int, count: int, key: str) -> list[socket.socket]:
    """``count`` monitored 'wait' jobs, each on its own connection, read up to their
    first line (so each is running and watched)."""
    held = []
    packet = submit("wait", Key=key)
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            held.append(sock)
            sock.sendall(packet)
            got = b""
            while not got.endswith(b"J0000100: waiting\r\n"):
                data = sock.recv(4096)
                assert data, got
                got += data
    except BaseException:
        for sock in held:
            sock.close()
        raise
    return held


@pytest.mark.timeout(60)
def test_a_monitored_job_that_waits_costs_the_server_under_5_kib():
    server = ServerProcess("--jobs", "tests/support/jobs.py", "--machine-name", "testhost",
                           "--max-running", str(HELD_JOBS + 200),
                           "--max-connections", str(HELD_JOBS + 1000))
    need_fds(HELD_JOBS + 500, ceiling=HELD_JOBS + 500)
    held: list[socket.socket] = []
    try:
        held += hold_monitored(server.port, 200, "warm-up")  # one-time allocations
        before_kib = rss_kib(server.proc.pid)
        held += hold_monitored(server.port, HELD_JOBS, "held")
        per_job = (rss_kib(server.proc.pid) - before_kib) / HELD_JOBS
        print(f"\n{HELD_JOBS} monitored jobs waiting: {per_job:.2f} KiB each")
        assert per_job <= MAX_HELD_KIB
    finally:
        for sock in held:
            sock.close()
        server.kill()
