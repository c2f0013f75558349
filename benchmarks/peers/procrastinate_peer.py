"""procrastinate, a PostgreSQL job queue for Python: the cluster's peer for tiny jobs.

procrastinate keeps its queue in PostgreSQL as jobmonitor's cluster does:
``defer_async`` inserts a job row (one transaction per job), workers take jobs
with ``FOR UPDATE SKIP LOCKED`` and are woken by LISTEN/NOTIFY.  A client cannot
wait for a job's end, so the run is timed from the first defer to the moment
the database says every job succeeded, and each job's latency is read from
procrastinate's own event table (its ``deferred`` to its ``succeeded`` event).

The workers are separate processes (``python procrastinate_peer.py worker
CONNINFO CONCURRENCY``), like jobmonitor's nodes, each running no-op async
tasks at the given concurrency; the submitters run in the benchmark's process.
procrastinate is not a jobmonitor dependency: ``pip install procrastinate``
(``make bench`` installs it into its own environment).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from typing import Any

__all__ = ["unavailable", "run_tiny_jobs"]

QUEUE = "bench"
POLL_S = 0.02


def unavailable() -> str | None:
    """Why procrastinate cannot run here, or None."""
    try:
        import procrastinate  # noqa: F401
    except ImportError:
        return "procrastinate is not installed (pip install procrastinate)"
    return None


def _app(conninfo: str) -> tuple[Any, Any]:
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=conninfo))

    @app.task(name="noop", queue=QUEUE)
    async def noop() -> None:
        return None

    return app, noop


async def _work(conninfo: str, concurrency: int) -> None:
    app, _ = _app(conninfo)
    async with app.open_async():
        await app.run_worker_async(queues=[QUEUE], concurrency=concurrency, wait=True,
                                   install_signal_handlers=True)


async def _reset(conninfo: str) -> None:
    """A fresh schema: procrastinate's tables in the database's default schema."""
    import psycopg

    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as connection:
        await connection.execute("DROP SCHEMA public CASCADE")
        await connection.execute("CREATE SCHEMA public")
    app, _ = _app(conninfo)
    async with app.open_async():
        await app.schema_manager.apply_schema_async()


async def _count_succeeded(connection: Any) -> int:
    cursor = await connection.execute(
        "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'")
    row = await cursor.fetchone()
    return int(row[0])


async def _latencies(connection: Any) -> list[float]:
    cursor = await connection.execute(
        "SELECT extract(epoch FROM s.at - d.at) FROM procrastinate_events d"
        " JOIN procrastinate_events s ON s.job_id = d.job_id AND s.type = 'succeeded'"
        " WHERE d.type = 'deferred'")
    return sorted(float(row[0]) for row in await cursor.fetchall())


async def run_tiny_jobs(conninfo: str, jobs: int, clients: int, workers: int,
                        concurrency: int = 10, timeout_s: float = 300.0) -> dict[str, float]:
    """Defer ``jobs`` no-op jobs from ``clients`` concurrent submitters while
    ``workers`` worker processes run them; return jobs/s end to end, submits/s
    and latency percentiles (ms)."""
    import psycopg

    await _reset(conninfo)
    processes = [subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "worker", conninfo, str(concurrency)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(workers)]
    try:
        app, noop = _app(conninfo)
        async with app.open_async(), \
                await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as watch:
            await asyncio.sleep(1.0)  # (the workers connect and LISTEN)
            per_client = [jobs // clients + (i < jobs % clients) for i in range(clients)]

            async def submit(count: int) -> None:
                for _ in range(count):
                    await noop.defer_async()

            start = time.perf_counter()
            await asyncio.gather(*(submit(n) for n in per_client))
            submitted = time.perf_counter()
            deadline = start + timeout_s
            while await _count_succeeded(watch) < jobs:
                if time.perf_counter() > deadline:
                    raise TimeoutError(f"procrastinate: {jobs} jobs not done in {timeout_s} s")
                await asyncio.sleep(POLL_S)
            done = time.perf_counter()
            latencies = await _latencies(watch)
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
    return {
        "jobs_per_s": jobs / (done - start),
        "submits_per_s": jobs / (submitted - start),
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
    }


if __name__ == "__main__" and sys.argv[1:2] == ["worker"]:
    asyncio.run(_work(sys.argv[2], int(sys.argv[3])))
