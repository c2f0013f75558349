"""beanstalkd: its text protocol, a worker, and the jobs-scenario producers.

Commands are ASCII lines ending in CRLF; ``put <pri> <delay> <ttr> <bytes>``
is followed by the job body and CRLF; ``reserve`` answers
``RESERVED <id> <bytes>`` followed by the body.  beanstalkd never tells a
producer that a job is done, so the producer learns it the way a beanstalkd
application would: each producer watches its own reply tube
(``bench.reply.N``, named in the job body), and the worker, after deleting the
job, puts a one-byte notice there.  A job's latency runs from the producer's
``put`` to its ``reserve`` of the notice, comparable to a jobmonitor or
gearman client waiting for its job's end; it costs beanstalkd two jobs per
benchmark job.  Producers keep their connections (beanstalkd clients do) and
pipeline the notice's ``delete`` with their next ``put``.

``run_jobs_per_connection`` is the jobs scenario as jobmonitor and gearmand
clients run it: a new connection per job.  It pipelines all it can in one send
(``use``, ``watch``, ``ignore``, ``put``, ``reserve``), and after the notice
sends its ``delete`` with ``quit`` and closes without waiting, as a jobmonitor
client closes after its ended line.

Fire-and-forget submits (``run_submits``) ``put`` a job whose body is
``NO_REPLY`` and wait for ``INSERTED`` only; the worker just deletes such a
job.  ``run_submits_pipelined`` keeps ``PIPELINE_DEPTH`` puts in flight on
each producer's connection, sending more as ``INSERTED`` lines come.  ``idle``
tells when the job tube is empty again.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Iterator
from functools import partial

from harness import Endpoint, job_metrics, submit_metrics

__all__ = ["run_jobs", "run_jobs_per_connection", "run_submits", "run_submits_per_connection",
           "run_submits_pipelined", "idle", "worker", "PIPELINE_DEPTH"]

JOB_TUBE = b"bench.jobs"
TTR_S = 60
NO_REPLY = b"-"  # a job body no tube is named (tube names cannot start with "-")
#: Puts a pipelining producer keeps in flight (the same as jobmonitor's pipelining client).
PIPELINE_DEPTH = 16


def put(body: bytes) -> bytes:
    return b"put 0 0 %d %d\r\n%s\r\n" % (TTR_S, len(body), body)


async def expect(reader: asyncio.StreamReader, word: bytes) -> bytes:
    """Read one reply line; it must start with ``word``."""
    line = await reader.readuntil(b"\r\n")
    if not line.startswith(word):
        raise RuntimeError(f"beanstalkd: expected {word.decode()}, got {line[:100]!r}")
    return line


async def read_reserved(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """Read a ``RESERVED <id> <bytes>`` reply and its body: (job id, body)."""
    _, job_id, size = (await expect(reader, b"RESERVED ")).split()
    body = await reader.readexactly(int(size) + 2)
    return job_id, body[:-2]


async def worker(endpoint: Endpoint, stop: asyncio.Event, ready: asyncio.Event) -> None:
    """Reserve jobs from ``bench.jobs``, delete each and put a notice in its reply tube.

    ``ready`` is set once the connection watches the job tube.
    """
    reader, writer = await asyncio.open_connection(endpoint.host, endpoint.port)
    try:
        writer.write(b"watch " + JOB_TUBE + b"\r\nignore default\r\nreserve\r\n")
        await expect(reader, b"WATCHING")
        await expect(reader, b"WATCHING")
        ready.set()
        using = b"default"
        while not stop.is_set():
            job_id, reply_tube = await read_reserved(reader)
            if reply_tube == NO_REPLY:
                writer.write(b"delete " + job_id + b"\r\nreserve\r\n")
                await expect(reader, b"DELETED")
                continue
            switch = b"" if reply_tube == using else b"use " + reply_tube + b"\r\n"
            writer.write(b"delete " + job_id + b"\r\n" + switch + put(b"x") + b"reserve\r\n")
            await expect(reader, b"DELETED")
            if switch:
                await expect(reader, b"USING")
                using = reply_tube
            await expect(reader, b"INSERTED")
    except (asyncio.IncompleteReadError, ConnectionError):
        pass  # the server went away: the run is over
    finally:
        writer.close()


async def _producer(endpoint: Endpoint, index: int, numbers: Iterator[int],
                    latencies: list[float]) -> None:
    reader, writer = await asyncio.open_connection(endpoint.host, endpoint.port)
    reply_tube = b"bench.reply.%d" % index
    try:
        writer.write(b"use " + JOB_TUBE + b"\r\nwatch " + reply_tube + b"\r\nignore default\r\n")
        await expect(reader, b"USING")
        await expect(reader, b"WATCHING")
        await expect(reader, b"WATCHING")
        request = put(reply_tube) + b"reserve\r\n"
        delete_pending = False
        for _ in numbers:
            started = time.perf_counter()
            writer.write(request)
            if delete_pending:
                await expect(reader, b"DELETED")
            await expect(reader, b"INSERTED")
            notice_id, _ = await read_reserved(reader)
            latencies.append(time.perf_counter() - started)
            writer.write(b"delete " + notice_id + b"\r\n")
            delete_pending = True
        if delete_pending:
            await expect(reader, b"DELETED")
    finally:
        writer.close()


async def run_jobs(endpoint: Endpoint, jobs: int, clients: int) -> dict[str, float]:
    """``jobs`` jobs from ``clients`` producers, each waiting for its job's notice."""
    numbers = iter(range(jobs))
    latencies: list[float] = []
    started = time.perf_counter()
    await asyncio.gather(*(_producer(endpoint, i, numbers, latencies) for i in range(clients)))
    return job_metrics(jobs, latencies, time.perf_counter() - started)


class _OneConnection(asyncio.Protocol):
    """A connection that sends ``request`` (its commands pipelined in one send),
    waits for ``lines`` reply lines, sends what ``last`` makes of them (then
    closes, without waiting for the answer) and resolves ``done``.  ``last``
    raises RuntimeError if the replies are not the expected ones."""

    def __init__(self, request: bytes, lines: int, last: Callable[[list[bytes]], bytes],
                 done: asyncio.Future[None]) -> None:
        self.request = request
        self.lines = lines
        self.last = last
        self.done = done
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if (self.done.done() or not self.buffer.endswith(b"\r\n")
                or self.buffer.count(b"\r\n") < self.lines):
            return
        assert self.transport is not None
        try:
            self.transport.write(self.last(self.buffer.split(b"\r\n")))
        except RuntimeError as exc:
            self.done.set_exception(exc)
        else:
            self.done.set_result(None)
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(ConnectionError(f"beanstalkd closed the connection: {exc}"))


async def _per_connection(endpoint: Endpoint, count: int, clients: int,
                          request: Callable[[int], bytes], lines: int,
                          last: Callable[[list[bytes]], bytes]) -> list[float]:
    """``count`` exchanges from ``clients`` producers, a connection each; their latencies."""
    loop = asyncio.get_running_loop()
    numbers = iter(range(count))
    latencies: list[float] = []

    async def producer(index: int) -> None:
        data = request(index)
        for _ in numbers:
            started = time.perf_counter()
            done = loop.create_future()
            await loop.create_connection(partial(_OneConnection, data, lines, last, done),
                                         endpoint.host, endpoint.port)
            await done
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(producer(i) for i in range(clients)))
    return latencies


def _job_request(index: int) -> bytes:
    reply_tube = b"bench.reply.%d" % index
    return (b"use " + JOB_TUBE + b"\r\nwatch " + reply_tube + b"\r\nignore default\r\n"
            + put(reply_tube) + b"reserve\r\n")


def _delete_notice(lines: list[bytes]) -> bytes:
    # lines: USING, WATCHING, WATCHING, INSERTED, RESERVED <id> 1, the notice's body
    if not (lines[0].startswith(b"USING") and lines[3].startswith(b"INSERTED")
            and lines[4].startswith(b"RESERVED ")):
        raise RuntimeError(f"beanstalkd: unexpected {lines[:6]!r}")
    return b"delete " + lines[4].split()[1] + b"\r\nquit\r\n"


def _quit_after_insert(lines: list[bytes]) -> bytes:
    if not (lines[0].startswith(b"USING") and lines[1].startswith(b"INSERTED")):
        raise RuntimeError(f"beanstalkd: unexpected {lines[:2]!r}")
    return b"quit\r\n"


async def run_jobs_per_connection(endpoint: Endpoint, jobs: int,
                                  clients: int) -> dict[str, float]:
    """``jobs`` jobs from ``clients`` producers, a new connection per job."""
    started = time.perf_counter()
    latencies = await _per_connection(endpoint, jobs, clients, _job_request, 6,
                                      _delete_notice)
    return job_metrics(jobs, latencies, time.perf_counter() - started)


async def run_submits_per_connection(endpoint: Endpoint, submits: int,
                                     clients: int) -> dict[str, float]:
    """``submits`` fire-and-forget jobs, a new connection per job."""
    started = time.perf_counter()
    latencies = await _per_connection(
        endpoint, submits, clients, lambda _: b"use " + JOB_TUBE + b"\r\n" + put(NO_REPLY), 2,
        _quit_after_insert)
    return submit_metrics(submits, latencies, time.perf_counter() - started)


async def _submitter(endpoint: Endpoint, numbers: Iterator[int], latencies: list[float]) -> None:
    reader, writer = await asyncio.open_connection(endpoint.host, endpoint.port)
    try:
        writer.write(b"use " + JOB_TUBE + b"\r\n")
        await expect(reader, b"USING")
        request = put(NO_REPLY)
        for _ in numbers:
            started = time.perf_counter()
            writer.write(request)
            await expect(reader, b"INSERTED")
            latencies.append(time.perf_counter() - started)
    finally:
        writer.close()


async def run_submits(endpoint: Endpoint, submits: int, clients: int) -> dict[str, float]:
    """``submits`` fire-and-forget jobs from ``clients`` producers that keep their
    connections (as in ``run_jobs``): each ``put``s, waits for ``INSERTED`` and
    puts the next.  The workers delete the jobs meanwhile; wait for ``idle``."""
    numbers = iter(range(submits))
    latencies: list[float] = []
    started = time.perf_counter()
    await asyncio.gather(*(_submitter(endpoint, numbers, latencies) for _ in range(clients)))
    return submit_metrics(submits, latencies, time.perf_counter() - started)


async def _pipelining_submitter(endpoint: Endpoint, counter: list[int],
                                latencies: list[float]) -> None:
    reader, writer = await asyncio.open_connection(endpoint.host, endpoint.port)
    try:
        writer.write(b"use " + JOB_TUBE + b"\r\n")
        await expect(reader, b"USING")
        request = put(NO_REPLY)
        in_flight: collections.deque[float] = collections.deque()
        while counter[0] or in_flight:
            count = min(PIPELINE_DEPTH - len(in_flight), counter[0])
            if count:
                counter[0] -= count
                in_flight.extend([time.perf_counter()] * count)
                writer.write(request * count)
            await expect(reader, b"INSERTED")
            latencies.append(time.perf_counter() - in_flight.popleft())
    finally:
        writer.close()


async def run_submits_pipelined(endpoint: Endpoint, submits: int,
                                clients: int) -> dict[str, float]:
    """``submits`` fire-and-forget jobs from ``clients`` producers that keep their
    connections, each with up to ``PIPELINE_DEPTH`` puts in flight."""
    counter = [submits]
    latencies: list[float] = []
    started = time.perf_counter()
    await asyncio.gather(*(_pipelining_submitter(endpoint, counter, latencies)
                           for _ in range(clients)))
    return submit_metrics(submits, latencies, time.perf_counter() - started)


async def idle(endpoint: Endpoint) -> bool:
    """True once the job tube holds no job: none ready, reserved, delayed or buried."""
    reader, writer = await asyncio.open_connection(endpoint.host, endpoint.port)
    try:
        writer.write(b"stats-tube " + JOB_TUBE + b"\r\n")
        _, size = (await asyncio.wait_for(expect(reader, b"OK "), 10)).split()
        text = (await reader.readexactly(int(size) + 2)).decode(errors="replace")
    finally:
        writer.close()
    counts = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.startswith("current-jobs-") and value.strip().isdigit():
            counts[key] = int(value)
    if not counts:
        raise RuntimeError(f"beanstalkd: no job counts in stats-tube: {text[:200]!r}")
    return not any(counts.values())
