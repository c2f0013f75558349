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
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

from harness import Endpoint, percentile

__all__ = ["run_jobs", "worker"]

JOB_TUBE = b"bench.jobs"
TTR_S = 60


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
    elapsed = time.perf_counter() - started
    return {"jobs_per_s": jobs / elapsed, "p50_ms": percentile(latencies, 0.50) * 1000,
            "p99_ms": percentile(latencies, 0.99) * 1000, "elapsed_s": elapsed}
