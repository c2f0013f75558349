"""gearmand: the binary protocol, a raw-socket worker, and the benchmark clients.

Packets are a 12-byte header (``\\0REQ`` or ``\\0RES``, a big-endian type and
a big-endian data length) and data whose arguments are separated by NUL bytes.
Only the packet types the benchmarks need are used:

* worker: ``CAN_DO`` each function, then ``GRAB_JOB``; ``NO_JOB`` is answered
  with ``PRE_SLEEP`` and the server's ``NOOP`` wake-up with ``GRAB_JOB``.
* client: ``SUBMIT_JOB`` (foreground), then ``JOB_CREATED``, any number of
  ``WORK_DATA`` and one ``WORK_COMPLETE``; or ``SUBMIT_JOB_BG`` (background,
  fire and forget), then ``JOB_CREATED`` only.

The worker's functions mirror ``bench_jobs.py``: ``bench.stream`` relays N
``WORK_DATA`` packets of one 52-byte status line each, ``BATCH`` packets per
write (as a fast worker buffering its output would); ``bench.tiny`` completes
at once; ``bench.hold`` is kept (the worker grabs the next job meanwhile)
until a ``bench.release`` job completes every held job.
"""

from __future__ import annotations

import asyncio
import struct
import time

from harness import LINE, Endpoint, job_metrics, rss_kb, submit_metrics

__all__ = ["Worker", "run_stream", "run_jobs", "run_jobs_persistent", "run_submits",
           "run_submits_persistent", "idle", "run_held", "admin_status", "FUNCTIONS"]

REQ, RES = b"\0REQ", b"\0RES"
CAN_DO, PRE_SLEEP, NOOP, SUBMIT_JOB, JOB_CREATED = 1, 4, 6, 7, 8
GRAB_JOB, NO_JOB, JOB_ASSIGN, WORK_COMPLETE, WORK_FAIL = 9, 10, 11, 13, 14
SUBMIT_JOB_BG, ERROR, WORK_EXCEPTION, WORK_DATA = 18, 19, 25, 28
HEADER = struct.Struct(">4sII")
BATCH = 1000
FUNCTIONS = ("bench.stream", "bench.tiny", "bench.hold", "bench.release")
CONNECT_CONCURRENCY = 200


def packet(magic: bytes, kind: int, *args: bytes) -> bytes:
    data = b"\0".join(args)
    return HEADER.pack(magic, kind, len(data)) + data


def split_packets(buffer: bytearray) -> list[tuple[int, bytes]]:
    """Remove every complete packet from ``buffer``; return (type, data) pairs."""
    found = []
    offset, size = 0, len(buffer)
    while size - offset >= 12:
        magic, kind, length = HEADER.unpack_from(buffer, offset)
        if magic not in (REQ, RES):
            raise ConnectionError(f"gearman: bad magic {magic!r}")
        end = offset + 12 + length
        if end > size:
            break
        found.append((kind, bytes(buffer[offset + 12:end])))
        offset = end
    del buffer[:offset]
    return found


GRAB = packet(REQ, GRAB_JOB)


# -- the worker --------------------------------------------------------------------


class Worker(asyncio.Protocol):
    """One worker connection; several share ``held`` through their ``pool``."""

    def __init__(self, pool: list[Worker]) -> None:
        self.pool = pool
        self.held: list[bytes] = []
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.paused: asyncio.Event = asyncio.Event()
        self.paused.set()
        self.closed = asyncio.get_running_loop().create_future()
        # The streams under way: the loop keeps only a weak reference to a task.
        self.streams: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.pool.append(self)
        self.transport.write(b"".join(packet(REQ, CAN_DO, f.encode()) for f in FUNCTIONS) + GRAB)

    def pause_writing(self) -> None:
        self.paused.clear()

    def resume_writing(self) -> None:
        self.paused.set()

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self.pool:
            self.pool.remove(self)
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        assert self.transport is not None
        for kind, body in split_packets(self.buffer):
            if kind == NO_JOB:
                self.transport.write(packet(REQ, PRE_SLEEP))
            elif kind == NOOP:
                self.transport.write(GRAB)
            elif kind == JOB_ASSIGN:
                handle, function, workload = body.split(b"\0", 2)
                self.assigned(handle, function, workload)

    def assigned(self, handle: bytes, function: bytes, workload: bytes) -> None:
        assert self.transport is not None
        if function == b"bench.tiny":
            self.transport.write(packet(REQ, WORK_COMPLETE, handle, b"") + GRAB)
        elif function == b"bench.hold":
            self.held.append(handle)
            self.transport.write(GRAB)
        elif function == b"bench.release":
            for worker in list(self.pool):
                worker.complete_held()
            self.transport.write(packet(REQ, WORK_COMPLETE, handle, b"") + GRAB)
        elif function == b"bench.stream":
            stream = asyncio.ensure_future(self.stream(handle, int(workload or b"0")))
            self.streams.add(stream)
            stream.add_done_callback(self.streams.discard)
        else:
            self.transport.write(packet(REQ, WORK_FAIL, handle) + GRAB)

    def complete_held(self) -> None:
        held, self.held = self.held, []
        if held and self.transport is not None:
            self.transport.write(b"".join(packet(REQ, WORK_COMPLETE, h, b"") for h in held))

    async def stream(self, handle: bytes, lines: int) -> None:
        assert self.transport is not None
        one = packet(REQ, WORK_DATA, handle, LINE)
        full = one * BATCH
        for _ in range(lines // BATCH):
            self.transport.write(full)
            await self.paused.wait()
        self.transport.write(one * (lines % BATCH) + packet(REQ, WORK_COMPLETE, handle, b"")
                             + GRAB)


# -- clients -----------------------------------------------------------------------


class _Submit(asyncio.Protocol):
    """A client connection: submits jobs and resolves one future per job at WORK_COMPLETE."""

    def __init__(self, count_data: bool = False) -> None:
        loop = asyncio.get_running_loop()
        self.created: asyncio.Future[bytes] = loop.create_future()
        self.complete: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.work_data = 0
        self.count_data = count_data
        self._fast_prefix = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def submit(self, function: bytes, workload: bytes = b"") -> None:
        loop = asyncio.get_running_loop()
        if self.complete.done():
            self.created, self.complete = loop.create_future(), loop.create_future()
        assert self.transport is not None
        self.transport.write(packet(REQ, SUBMIT_JOB, function, b"", workload))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self._fast_prefix:
            self._skip_line_packets()
        for kind, body in split_packets(self.buffer):
            if kind == WORK_DATA:
                self.work_data += 1
            elif kind == JOB_CREATED:
                self.created.set_result(body)
                # Every WORK_DATA of this job has the same header and handle:
                # check and count those with one comparison each.
                self._fast_prefix = packet(RES, WORK_DATA, body, LINE)
                if self.count_data:
                    self._skip_line_packets()
            elif kind == WORK_COMPLETE:
                self._fast_prefix = b""
                if not self.complete.done():
                    self.complete.set_result(None)
            elif kind in (WORK_FAIL, WORK_EXCEPTION, ERROR):
                failure = RuntimeError(f"gearman: packet {kind}: {body[:200]!r}")
                for future in (self.created, self.complete):
                    if not future.done():
                        future.set_exception(failure)

    def _skip_line_packets(self) -> None:
        prefix, buffer = self._fast_prefix, self.buffer
        step, offset, end = len(prefix), 0, len(buffer)
        while offset + step <= end and buffer.startswith(prefix, offset):
            offset += step
        if offset:
            self.work_data += offset // step
            del buffer[:offset]

    def connection_lost(self, exc: Exception | None) -> None:
        failure = ConnectionError(f"gearman: connection lost: {exc}")
        for future in (self.created, self.complete):
            if not future.done():
                future.set_exception(failure)


async def _connect(endpoint: Endpoint, count_data: bool = False) -> _Submit:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(lambda: _Submit(count_data),
                                               endpoint.host, endpoint.port)
    return protocol


async def run_stream(endpoint: Endpoint, lines: int) -> dict[str, float]:
    """One foreground job whose worker relays ``lines`` WORK_DATA packets; lines/s."""
    started = time.perf_counter()
    client = await _connect(endpoint, count_data=True)
    try:
        client.submit(b"bench.stream", str(lines).encode())
        await client.complete
        elapsed = time.perf_counter() - started
    finally:
        assert client.transport is not None
        client.transport.close()
    if client.work_data != lines:
        raise RuntimeError(f"gearman stream: {client.work_data} WORK_DATA, expected {lines}")
    return {"lines_per_s": lines / elapsed, "elapsed_s": elapsed}


async def run_jobs(endpoint: Endpoint, jobs: int, clients: int) -> dict[str, float]:
    """``jobs`` tiny foreground jobs, a new connection per job (as jobmonitor clients do)."""
    numbers = iter(range(jobs))
    latencies: list[float] = []

    async def client() -> None:
        for _ in numbers:
            started = time.perf_counter()
            connection = await _connect(endpoint)
            connection.submit(b"bench.tiny")
            await connection.complete
            latencies.append(time.perf_counter() - started)
            assert connection.transport is not None
            connection.transport.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return job_metrics(jobs, latencies, time.perf_counter() - started)


async def run_jobs_persistent(endpoint: Endpoint, jobs: int, clients: int) -> dict[str, float]:
    """``jobs`` tiny foreground jobs over ``clients`` long-lived connections, one job at a
    time each."""
    numbers = iter(range(jobs))
    latencies: list[float] = []
    connections = [await _connect(endpoint) for _ in range(clients)]

    async def client(connection: _Submit) -> None:
        for _ in numbers:
            started = time.perf_counter()
            connection.submit(b"bench.tiny")
            await connection.complete
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    try:
        await asyncio.gather(*(client(c) for c in connections))
    finally:
        for connection in connections:
            assert connection.transport is not None
            connection.transport.close()
    return job_metrics(jobs, latencies, time.perf_counter() - started)


class _Background(asyncio.Protocol):
    """A client connection for background jobs: ``created`` resolves at each JOB_CREATED.

    One job at a time: ``submit`` again once ``created`` is done.
    """

    SUBMIT_TINY = packet(REQ, SUBMIT_JOB_BG, b"bench.tiny", b"", b"")  # empty ID: never merged

    def __init__(self) -> None:
        self.created: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def submit_tiny(self) -> None:
        if self.created.done():
            self.created = asyncio.get_running_loop().create_future()
        assert self.transport is not None
        self.transport.write(self.SUBMIT_TINY)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        for kind, body in split_packets(self.buffer):
            if self.created.done():
                continue  # nothing else is expected on a background client
            if kind == JOB_CREATED:
                self.created.set_result(body)
            elif kind == ERROR:
                self.created.set_exception(RuntimeError(f"gearman: ERROR {body[:200]!r}"))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.created.done():
            self.created.set_exception(ConnectionError(f"gearman: connection lost: {exc}"))


async def _connect_background(endpoint: Endpoint) -> _Background:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(_Background, endpoint.host, endpoint.port)
    return protocol


async def run_submits(endpoint: Endpoint, submits: int, clients: int) -> dict[str, float]:
    """``submits`` tiny background jobs, a new connection per submit: connect,
    ``SUBMIT_JOB_BG``, wait for ``JOB_CREATED``, close.  The workers run the
    jobs meanwhile; wait for ``idle`` afterwards."""
    numbers = iter(range(submits))
    latencies: list[float] = []

    async def client() -> None:
        for _ in numbers:
            started = time.perf_counter()
            connection = await _connect_background(endpoint)
            try:
                connection.submit_tiny()
                await connection.created
            finally:
                assert connection.transport is not None
                connection.transport.close()
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return submit_metrics(submits, latencies, time.perf_counter() - started)


async def run_submits_persistent(endpoint: Endpoint, submits: int,
                                 clients: int) -> dict[str, float]:
    """``submits`` tiny background jobs over ``clients`` long-lived connections,
    each submitting its next job once gearmand has acknowledged the last."""
    numbers = iter(range(submits))
    latencies: list[float] = []
    connections = []
    try:
        for _ in range(clients):
            connections.append(await _connect_background(endpoint))

        async def client(connection: _Background) -> None:
            for _ in numbers:
                started = time.perf_counter()
                connection.submit_tiny()
                await connection.created
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(client(c) for c in connections))
        elapsed = time.perf_counter() - started
    finally:
        for connection in connections:
            assert connection.transport is not None
            connection.transport.close()
    return submit_metrics(submits, latencies, elapsed)


async def idle(endpoint: Endpoint) -> bool:
    """True once gearmand has no bench.tiny job queued or running."""
    return (await admin_status(endpoint)).get("bench.tiny", (0, 0, 0))[0] == 0


async def admin_status(endpoint: Endpoint) -> dict[str, tuple[int, int, int]]:
    """The text admin ``status`` command: function -> (total, running, workers)."""
    reader, writer = await asyncio.open_connection(endpoint.host, endpoint.port)
    try:
        writer.write(b"status\n")
        text = (await asyncio.wait_for(reader.readuntil(b".\n"), 10)).decode()
    finally:
        writer.close()
    table = {}
    for line in text.splitlines():
        fields = line.split("\t")
        if len(fields) == 4:
            table[fields[0]] = (int(fields[1]), int(fields[2]), int(fields[3]))
    return table


async def _wait_held(endpoint: Endpoint, count: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while (await admin_status(endpoint)).get("bench.hold", (0, 0, 0))[1] < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"gearman: {count} bench.hold jobs not running in {timeout_s} s")
        await asyncio.sleep(0.05)


async def _hold(endpoint: Endpoint, count: int) -> list[_Submit]:
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    opened: list[_Submit] = []

    async def one() -> None:
        async with gate:
            connection = await _connect(endpoint)
            opened.append(connection)
            connection.submit(b"bench.hold")
            await connection.created

    try:
        await asyncio.gather(*(one() for _ in range(count)))
    except BaseException:
        _close_all(opened)
        raise
    return opened


def _close_all(connections: list[_Submit]) -> None:
    for connection in connections:
        if connection.transport is not None:
            connection.transport.close()


async def _release(endpoint: Endpoint, held: list[_Submit]) -> float:
    started = time.perf_counter()
    releaser = await _connect(endpoint)
    try:
        releaser.submit(b"bench.release")
        await asyncio.gather(releaser.complete, *(c.complete for c in held))
    finally:
        _close_all([releaser])
    return time.perf_counter() - started


async def run_held(endpoint: Endpoint, count: int, timeout_s: float) -> dict[str, float]:
    """``count`` client connections, each with a foreground job the worker holds:
    gearmand KiB per connection (RSS growth / count, after a warm-up round) and
    seconds from the release job to the last WORK_COMPLETE."""
    warm = await _hold(endpoint, min(50, count))
    try:
        await _wait_held(endpoint, len(warm), timeout_s)
        await _release(endpoint, warm)
    finally:
        _close_all(warm)
    before = rss_kb(endpoint.pid)
    started = time.perf_counter()
    held = await _hold(endpoint, count)
    try:
        await _wait_held(endpoint, count, timeout_s)
        setup = time.perf_counter() - started
        after = rss_kb(endpoint.pid)
        release = await _release(endpoint, held)
    finally:
        _close_all(held)
    return {"kb_per_conn": (after - before) / count, "release_s": release, "setup_s": setup}
