"""Shared fixtures: an in-process server on port 0 with the test jobs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from jobmonitor import Job, Server

from .support import jobs
from .support.postgres import pg_url, postgres_server  # noqa: F401 (fixtures)

MACHINE = "testhost"


@pytest.fixture(autouse=True)
def _fresh_releases() -> None:
    jobs.releases.clear()
    jobs.thread_releases.clear()
    jobs.job_stopping.clear()


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    async with jobs.app.serve(host="127.0.0.1", port=0, machine_name=MACHINE,
                              linger_s=1.0, shutdown_grace_s=1.0) as running:
        yield running


@pytest.fixture
async def make_server() -> AsyncIterator:
    """Start servers with other settings; they are shut down after the test."""
    contexts = []

    async def start(**settings) -> Server:
        settings = {"host": "127.0.0.1", "port": 0, "machine_name": MACHINE,
                    "linger_s": 1.0, "shutdown_grace_s": 1.0, **settings}
        context = jobs.app.serve(**settings)
        running = await context.__aenter__()
        contexts.append(context)
        return running

    yield start
    for context in reversed(contexts):
        await context.__aexit__(None, None, None)


async def finished(server: Server, transaction_id: str) -> Job:
    """Wait until the job has ended (its stream closed), without polling."""
    job = server.engine.jobs.find(transaction_id)
    if job.stream.closed:
        return job
    done = asyncio.get_running_loop().create_future()

    class _Watcher:
        writable = True

        def write(self, data: bytes) -> None:
            pass

        def stream_ended(self) -> None:
            done.set_result(None)

        def fell_behind(self, next_line: int) -> None:
            job.stream.watch(self, job.stream.base + 1)  # only the end matters here

    job.stream.watch(_Watcher(), len(job.stream) + 1)
    await asyncio.wait_for(done, 10)
    return job


async def release(key: str) -> None:
    """Let the 'wait' job with this Key finish."""
    jobs.releases.setdefault(key, asyncio.Event()).set()
