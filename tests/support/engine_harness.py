"""Driving the job engine without a socket: an ``Engine`` on the test's own loop,
a ``FakeStore`` under it, and a watcher that reads a job's stream as text."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from jobmonitor.config import Config
from jobmonitor.engine.engine import Engine
from jobmonitor.engine.job import Job
from jobmonitor.engine.registry import HandlerRegistry

from .fake_store import FakeStore

MACHINE = "unit-host"
#: How long a test waits for something the engine does at once (a bound, not a pause).
WAIT_S = 5.0


class Lines:
    """A watcher of one job's stream: its lines as wire text, and its end."""

    writable = True

    def __init__(self, job: Job, from_line: int = 1) -> None:
        self.texts: list[str] = []
        self.stream_cursor = 0
        self._ended = asyncio.get_running_loop().create_future()
        self._waiters: list[tuple[Callable[[list[str]], bool], asyncio.Future[None]]] = []
        job.stream.watch(self, from_line)

    def write(self, data: bytes) -> None:
        self.texts.extend(raw.decode() for raw in data.split(b"\r\n")[:-1])
        for waiter in list(self._waiters):
            if waiter[0](self.texts) and not waiter[1].done():
                waiter[1].set_result(None)
                self._waiters.remove(waiter)

    def stream_ended(self) -> None:
        self._ended.set_result(None)

    def fell_behind(self, next_line: int) -> None:
        raise AssertionError(f"the stream fell behind at line {next_line}")

    async def until(self, text: str) -> list[str]:
        """Wait until a line is ``text``; return the lines so far."""
        await self._wait(lambda texts: text in texts)
        return self.texts

    async def end(self) -> list[str]:
        """Wait until the stream ends; return every line."""
        await asyncio.wait_for(asyncio.shield(self._ended), WAIT_S)
        return self.texts

    async def _wait(self, ready: Callable[[list[str]], bool]) -> None:
        if ready(self.texts):
            return
        done = asyncio.get_running_loop().create_future()
        self._waiters.append((ready, done))
        await asyncio.wait_for(done, WAIT_S)


@contextlib.asynccontextmanager
async def running_engine(registry: HandlerRegistry, *, store: FakeStore | None = None,
                         **settings: object) -> AsyncIterator[Engine]:
    """A started engine for ``registry``'s handlers; stopped (0 s of grace) after
    the block unless the test stopped it."""
    store = store if store is not None else FakeStore()
    config = Config(**{"machine_name": MACHINE, "keep_days": 0, **settings})  # type: ignore[arg-type]
    engine = Engine(registry.handlers, config, store)
    await engine.start()
    try:
        yield engine
    finally:
        if not store.closed:
            await engine.stop(0.0)


async def submit(engine: Engine, project: str, **params: str) -> tuple[Job, Lines]:
    """Submit a job and watch it from its first line."""
    _, job = await engine.submit(project, params, {})
    assert job is not None
    return job, Lines(job)


def events(job: Job) -> list[str]:
    """The job's own history events (stage ``job``), by name."""
    return [event.status for event in job.record.history if event.stage == "job"]
