"""Client-side load for servers that speak the jobmonitor wire protocol.

Both jobmonitor and the bare asyncio baseline are driven by these coroutines,
so they are measured by exactly the same client.  A connection sends one XML
command packet and reads coded lines: the ``R`` reply first, then (when
monitoring) ``J`` lines until ``J0000001: Transaction ... ended`` or EOF.
Lines are counted with ``bytes.count`` so the client costs little per line.

The scenarios that must hold jobs open or start them all at once (``held``,
``fanout``) take a ``Releaser`` from the target: the job variables that tie a
job to a release group, how to release the group, and how to tell that the
server really has ``count`` jobs waiting.

Kept connections (``_sys_KeepOpen``, jobmonitor only): ``run_jobs_kept`` has
each client send its next monitored submit on the same connection once the
last job's ended line came; ``run_submits_pipelined`` has each client keep
``PIPELINE_DEPTH`` fire-and-forget submits in flight on its connection,
sending more as acknowledgements come, as beanstalkd's pipelined producers do.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import socket
import time
import uuid
from typing import Protocol
from xml.sax.saxutils import escape

from harness import Endpoint, job_metrics, rss_kb, submit_metrics

__all__ = ["Releaser", "command_packet", "submit_packet", "exchange", "run_stream",
           "run_jobs", "run_submits", "run_fanout", "run_held", "run_jobs_kept",
           "run_submits_pipelined", "PIPELINE_DEPTH"]

ENDED = b"J0000001: "
TAIL_BYTES = 80  # longer than any ended line
OK_REPLY = b"R0000000"
CONNECT_CONCURRENCY = 200  # connections opened at once; more overflows accept queues
#: Fire-and-forget submits a pipelining client keeps in flight on its connection.
PIPELINE_DEPTH = 16
KEEP_OPEN = {"_sys_KeepOpen": "true"}


class Releaser(Protocol):
    def params(self, group: str) -> dict[str, str]:
        """Job variables that make a bench.hold / bench.fanout job wait for ``group``."""

    async def release(self, endpoint: Endpoint, group: str) -> None:
        """Let every job waiting for ``group`` go on."""

    async def wait_running(self, endpoint: Endpoint, count: int, timeout_s: float) -> None:
        """Return once the server has ``count`` bench.hold jobs waiting."""


def command_packet(command: str, **variables: str) -> bytes:
    body = "".join(f'<var name="{escape(name)}">{escape(str(value))}</var>'
                   for name, value in variables.items())
    return (f'<?xml version="1.0"?><job_command name="{escape(command)}">'
            f"<job_variables>{body}</job_variables></job_command>").encode()


def submit_packet(project: str, *, monitor: bool = True, **params: str) -> bytes:
    variables = {"ProjectName": project, "_sys_ClientJobMonitor": "true" if monitor else "false"}
    return command_packet("SubmitJob", **variables, **params)


class _Exchange(asyncio.Protocol):
    """One connection: sends a packet, resolves ``reply`` with the first line,
    counts the lines after it and resolves ``done`` at the ended line or EOF."""

    def __init__(self, packet: bytes) -> None:
        loop = asyncio.get_running_loop()
        self.packet = packet
        self.reply: asyncio.Future[bytes] = loop.create_future()
        self.done: asyncio.Future[None] = loop.create_future()
        self.newlines = 0
        self.ended = False
        self.transport: asyncio.Transport | None = None
        self._head = b""
        self._tail = b""

    @property
    def lines_after_reply(self) -> int:
        return max(0, self.newlines - 1)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.packet)

    def data_received(self, data: bytes) -> None:
        self.newlines += data.count(b"\n")
        if not self.reply.done():
            self._head += data
            end = self._head.find(b"\r\n")
            if end >= 0:
                self.reply.set_result(self._head[:end])
                self._head = b""
        # The ended line is the last one the server sends, so only the end of
        # what has arrived needs looking at (not every byte of a long stream).
        window = (self._tail + data[-TAIL_BYTES:])[-TAIL_BYTES:]
        if window.endswith(b" ended\r\n") and ENDED in window:
            self.ended = True
            self._finish()
        else:
            self._tail = window

    def eof_received(self) -> bool:
        self._finish()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.reply.done():
            self.reply.set_exception(ConnectionError(f"closed before the reply: {exc}"))
        self._finish()

    def _finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)
        if self.transport is not None:
            self.transport.close()


async def _open(endpoint: Endpoint, packet: bytes, spread: bool = False) -> _Exchange:
    """A connection that sends ``packet``; with ``spread``, from one of several
    loopback addresses (see ``_spread_socket``)."""
    loop = asyncio.get_running_loop()
    if spread and endpoint.host == "127.0.0.1":
        sock = _spread_socket()
        try:
            await loop.sock_connect(sock, (endpoint.host, endpoint.port))
        except BaseException:
            sock.close()
            raise
        _, protocol = await loop.create_connection(lambda: _Exchange(packet), sock=sock)
        return protocol
    _, protocol = await loop.create_connection(lambda: _Exchange(packet),
                                               endpoint.host, endpoint.port)
    return protocol


#: Loopback addresses held connections come from, in turn: one address has
#: about 28 000 ports to connect from, and ``held`` may ask for 100 000.
SPREAD_SOURCES = 8
#: Linux's IP_BIND_ADDRESS_NO_PORT (the port is chosen at connect, per destination).
_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
_sources = itertools.count()


def _spread_socket() -> socket.socket:
    """A non-blocking TCP socket bound to the next of ``SPREAD_SOURCES`` loopback
    addresses (127.0.0.1, 127.0.0.2, ...)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        with contextlib.suppress(OSError):  # (not Linux: the port is chosen at bind)
            sock.setsockopt(socket.IPPROTO_IP, _BIND_ADDRESS_NO_PORT, 1)
        sock.bind((f"127.0.0.{1 + next(_sources) % SPREAD_SOURCES}", 0))
    except BaseException:
        sock.close()
        raise
    return sock


def _check_reply(line: bytes, what: str) -> str:
    if not line.startswith(OK_REPLY):
        raise RuntimeError(f"{what}: server replied {line.decode(errors='replace')!r}")
    return line.split(b": ", 1)[1].decode()


async def exchange(endpoint: Endpoint, packet: bytes, what: str = "request") -> _Exchange:
    """Send ``packet`` and read everything up to the ended line (or EOF)."""
    protocol = await _open(endpoint, packet)
    _check_reply(await protocol.reply, what)
    await protocol.done
    return protocol


async def run_stream(endpoint: Endpoint, lines: int) -> dict[str, float]:
    """One monitored job emitting ``lines`` lines; lines/s from connect to the ended line."""
    started = time.perf_counter()
    protocol = await exchange(endpoint, submit_packet("bench.stream", lines=str(lines)),
                              "bench.stream")
    elapsed = time.perf_counter() - started
    if protocol.lines_after_reply < lines or not protocol.ended:
        raise RuntimeError(f"stream: got {protocol.lines_after_reply} lines, "
                           f"ended={protocol.ended}, expected at least {lines}")
    return {"lines_per_s": lines / elapsed, "elapsed_s": elapsed}


async def run_jobs(endpoint: Endpoint, jobs: int, clients: int) -> dict[str, float]:
    """``jobs`` tiny monitored jobs, one connection each, ``clients`` at a time."""
    packet = submit_packet("bench.tiny")
    numbers = iter(range(jobs))
    latencies: list[float] = []

    async def client() -> None:
        for _ in numbers:
            started = time.perf_counter()
            protocol = await exchange(endpoint, packet, "bench.tiny")
            latencies.append(time.perf_counter() - started)
            if not protocol.ended:
                raise RuntimeError("bench.tiny: connection closed before the ended line")

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return job_metrics(jobs, latencies, time.perf_counter() - started)


async def run_submits(endpoint: Endpoint, submits: int, clients: int) -> dict[str, float]:
    """``submits`` fire-and-forget tiny jobs, one connection each, ``clients`` at a time.

    Each client connects, sends an unmonitored ``SubmitJob``, reads the
    ``R0000000: T...`` reply and closes, as jobmonitor's client does for
    ``monitor=False``; latency runs from connect to the reply.  The jobs run
    on in the server: the caller waits for them to finish.
    """
    packet = submit_packet("bench.tiny", monitor=False)
    numbers = iter(range(submits))
    latencies: list[float] = []

    async def client() -> None:
        for _ in numbers:
            started = time.perf_counter()
            protocol = await _open(endpoint, packet)
            try:
                _check_reply(await protocol.reply, "bench.tiny (not monitored)")
            finally:
                assert protocol.transport is not None
                protocol.transport.close()
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return submit_metrics(submits, latencies, time.perf_counter() - started)


async def run_fanout(endpoint: Endpoint, lines: int, watchers: int,
                     releaser: Releaser) -> dict[str, float]:
    """One job, its submitter and ``watchers - 1`` MonitorJob watchers; total lines/s.

    The job waits for a release, sent once every watcher has its ``R`` reply
    (so it is attached); time runs from the release to the last ended line.
    """
    group = f"fanout-{uuid.uuid4().hex[:12]}"
    submitter = await _open(endpoint, submit_packet("bench.fanout", lines=str(lines),
                                                    **releaser.params(group)))
    connections = [submitter]
    try:
        transaction_id = _check_reply(await submitter.reply, "bench.fanout")
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def watch() -> _Exchange:
            async with gate:
                protocol = await _open(endpoint, command_packet(
                    "MonitorJob", _sys_TransactionID=transaction_id))
                connections.append(protocol)
                _check_reply(await protocol.reply, "MonitorJob")
                return protocol

        await asyncio.gather(*(watch() for _ in range(watchers - 1)))
        started = time.perf_counter()
        await releaser.release(endpoint, group)
        await asyncio.gather(*(c.done for c in connections))
        elapsed = time.perf_counter() - started
    finally:
        for protocol in connections:
            if protocol.transport is not None:
                protocol.transport.close()
    short = [c.lines_after_reply for c in connections if c.lines_after_reply < lines]
    if short:
        raise RuntimeError(f"fanout: {len(short)} watchers got too few lines (e.g. {short[0]})")
    return {"lines_per_s": lines * watchers / elapsed, "elapsed_s": elapsed}


async def _hold(endpoint: Endpoint, count: int, releaser: Releaser,
                group: str) -> list[_Exchange]:
    packet = submit_packet("bench.hold", **releaser.params(group))
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    opened: list[_Exchange] = []

    async def one() -> None:
        async with gate:
            protocol = await _open(endpoint, packet, spread=True)
            opened.append(protocol)
            _check_reply(await protocol.reply, "bench.hold")

    try:
        await asyncio.gather(*(one() for _ in range(count)))
    except BaseException:
        for protocol in opened:
            if protocol.transport is not None:
                protocol.transport.close()
        raise
    return opened


async def _release_all(endpoint: Endpoint, held: list[_Exchange], releaser: Releaser,
                       group: str) -> float:
    started = time.perf_counter()
    await releaser.release(endpoint, group)
    await asyncio.gather(*(c.done for c in held))
    elapsed = time.perf_counter() - started
    not_ended = sum(1 for c in held if not c.ended)
    if not_ended:
        raise RuntimeError(f"held: {not_ended} connections closed without the ended line")
    return elapsed


_groups = itertools.count()


async def run_held(endpoint: Endpoint, count: int, releaser: Releaser,
                   timeout_s: float) -> dict[str, float]:
    """``count`` connections each monitoring a waiting job: server KiB per connection
    (RSS growth / count, after a small warm-up round) and seconds to release them all."""
    tag = f"held-{uuid.uuid4().hex[:8]}-{next(_groups)}"
    warm = await _hold(endpoint, min(50, count), releaser, tag + "-warm")
    await releaser.wait_running(endpoint, len(warm), timeout_s)
    await _release_all(endpoint, warm, releaser, tag + "-warm")
    before = rss_kb(endpoint.pid)
    started = time.perf_counter()
    held = await _hold(endpoint, count, releaser, tag)
    try:
        await releaser.wait_running(endpoint, count, timeout_s)
        setup = time.perf_counter() - started
        after = rss_kb(endpoint.pid)
        release = await _release_all(endpoint, held, releaser, tag)
    finally:
        for protocol in held:
            if protocol.transport is not None:
                protocol.transport.close()
    return {"kb_per_conn": (after - before) / count, "release_s": release, "setup_s": setup}


class _Kept(asyncio.Protocol):
    """A kept connection: packets go out as the client sends them and their
    answers are read in order.  Each packet sent gets a future, resolved with
    the time its answer completed: the ``R`` line for a plain command, the
    ended line for a monitored submit."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        #: Per packet in flight, oldest first: (its future, whether a stream follows
        #: its reply, whether the reply came).
        self.pending: collections.deque[list] = collections.deque()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, packets: bytes, count: int, monitored: bool) -> list[asyncio.Future[float]]:
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in range(count)]
        self.pending.extend([future, monitored, False] for future in futures)
        assert self.transport is not None
        self.transport.write(packets)
        return futures

    def data_received(self, data: bytes) -> None:
        lines = (self.buffer + data).split(b"\r\n")
        self.buffer = lines.pop()
        now = time.perf_counter()
        for line in lines:
            entry = self.pending[0]
            if not entry[2]:  # the reply
                if not line.startswith(OK_REPLY):
                    entry[0].set_exception(RuntimeError(f"server replied {line[:80]!r}"))
                    self.pending.popleft()
                    continue
                if line[8:9] == b":":  # (the last line of the reply)
                    entry[2] = True
                    if not entry[1]:
                        self.pending.popleft()
                        entry[0].set_result(now)
            elif line.startswith(ENDED):
                self.pending.popleft()
                entry[0].set_result(now)

    def connection_lost(self, exc: Exception | None) -> None:
        for future, _, _ in self.pending:
            if not future.done():
                future.set_exception(ConnectionError(f"kept connection closed: {exc}"))
        self.pending.clear()


async def _open_kept(endpoint: Endpoint) -> _Kept:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(_Kept, endpoint.host, endpoint.port)
    return protocol


async def _on_kept_connections(endpoint: Endpoint, clients: int, client) -> float:
    """Run ``client(connection)`` on each of ``clients`` kept connections; seconds it took."""
    connections = [await _open_kept(endpoint) for _ in range(clients)]
    try:
        started = time.perf_counter()
        await asyncio.gather(*(client(connection) for connection in connections))
        return time.perf_counter() - started
    finally:
        for connection in connections:
            if connection.transport is not None:
                connection.transport.close()


async def run_jobs_kept(endpoint: Endpoint, jobs: int, clients: int) -> dict[str, float]:
    """``jobs`` tiny monitored jobs from ``clients`` clients, each keeping its
    connection: the next submit goes out once the last job's ended line came."""
    packet = submit_packet("bench.tiny", **KEEP_OPEN)
    numbers = iter(range(jobs))
    latencies: list[float] = []

    async def client(connection: _Kept) -> None:
        for _ in numbers:
            started = time.perf_counter()
            (done,) = connection.send(packet, 1, monitored=True)
            latencies.append(await done - started)

    elapsed = await _on_kept_connections(endpoint, clients, client)
    return job_metrics(jobs, latencies, elapsed)


async def run_submits_pipelined(endpoint: Endpoint, submits: int, clients: int,
                                depth: int = PIPELINE_DEPTH) -> dict[str, float]:
    """``submits`` fire-and-forget tiny jobs from ``clients`` clients on kept
    connections, each with up to ``depth`` submits in flight: as acknowledgements
    come, the free places are filled in one send.  Latency runs from a submit's
    send to its acknowledgement."""
    packet = submit_packet("bench.tiny", monitor=False, **KEEP_OPEN)
    remaining = submits
    latencies: list[float] = []

    async def client(connection: _Kept) -> None:
        nonlocal remaining
        in_flight: collections.deque[tuple[float, asyncio.Future[float]]] = collections.deque()
        while remaining or in_flight:
            count = min(depth - len(in_flight), remaining)
            if count:
                remaining -= count
                started = time.perf_counter()
                in_flight.extend((started, f) for f in connection.send(packet * count, count,
                                                                       monitored=False))
            started, oldest = in_flight.popleft()
            latencies.append(await oldest - started)
            while in_flight and in_flight[0][1].done():
                started, done = in_flight.popleft()
                latencies.append(done.result() - started)

    elapsed = await _on_kept_connections(endpoint, clients, client)
    return submit_metrics(submits, latencies, elapsed)
