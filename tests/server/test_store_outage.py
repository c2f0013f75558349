"""A store that cannot write, over real sockets: what commands are answered, and what
the server logs while it lasts and when it ends.

The disk is made full the way SQLite meets a full disk: the store's connection may
not grow the database past its present size (``PRAGMA max_page_count``), so a
commit that needs a new page fails with SQLite's own SQLITE_FULL error, "database
or disk is full".  Every submit here carries a parameter larger than a database
page, so its row always needs new pages.  Lifting the limit is the operator
freeing space.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from jobmonitor.store import batching

from ..support.helpers import exchange, submit, xml_packet
from .test_durable import field, status, tid_of

RETRY_DELAY_S = 0.05
#: More than a database page (4 KiB): a job with it always needs new pages.
LARGE = "x" * 10_000
FULL = "R0005011: Server busy: store unavailable: database or disk is full"
#: Most of the server's log records allowed for one episode: its start and its end.
EPISODE_RECORDS = 2


@pytest.fixture(autouse=True)
def _quick_retries(monkeypatch) -> None:
    monkeypatch.setattr(batching, "RETRY_DELAY_S", RETRY_DELAY_S)


@pytest.fixture
async def server(make_server, tmp_path):
    return await make_server(store=f"sqlite:///{tmp_path / 'jobs.db'}")


async def set_disk_full(server, full: bool) -> None:
    """Let the store's database grow no further (a number below its size is taken as
    its size), or let it grow again."""
    store = server.engine._store
    pages = 1 if full else 1_073_741_823
    await store._call(store._db.execute, f"PRAGMA max_page_count = {pages}")


def large_submit(monitor: bool = False) -> bytes:
    return submit("echo", monitor=monitor, Text=LARGE)


def server_records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("jobmonitor")]


async def test_a_submit_on_a_full_disk_is_refused_as_store_unavailable(server):
    done = tid_of((await exchange(server.port, large_submit()))[0])
    await set_disk_full(server, True)
    assert await exchange(server.port, large_submit()) == [FULL]
    assert await exchange(server.port, large_submit(monitor=True)) == [FULL]
    # Reads still work, and the refused jobs do not exist.
    assert field(await exchange(server.port, status(done)), "Status") == "Completed"
    listed = await exchange(server.port, xml_packet("ListJobs", {"_sys_Filter": "all"}))
    assert listed == ["R0000000- 1 jobs", f"R0000000: {done}\tCompleted\techo\t"]


async def test_a_disk_that_stays_full_is_logged_once_not_per_refused_submit(server, caplog):
    caplog.set_level(logging.DEBUG, logger="jobmonitor")
    await set_disk_full(server, True)
    replies = []
    for _ in range(5):  # several failed commits, ten submits riding each
        replies += await asyncio.gather(*(exchange(server.port, large_submit())
                                          for _ in range(10)))
    assert replies == [[FULL]] * 50
    records = [r for r in server_records(caplog) if r.levelno >= logging.INFO]
    assert len(records) == 1, [r.getMessage() for r in records]
    assert records[0].levelno == logging.ERROR and records[0].exc_info is None
    assert "database or disk is full" in records[0].getMessage()
    # One traceback, of the first failure, for whoever asks for debug lines.
    tracebacks = [r for r in server_records(caplog) if r.exc_info is not None]
    assert [r.levelno for r in tracebacks] == [logging.DEBUG]


async def test_after_the_disk_has_room_again_submits_succeed_and_the_end_is_logged(
        server, caplog):
    caplog.set_level(logging.INFO, logger="jobmonitor")
    await set_disk_full(server, True)
    for _ in range(3):
        assert await exchange(server.port, large_submit()) == [FULL]
    await set_disk_full(server, False)
    lines = await exchange(server.port, large_submit(monitor=True))
    tid = tid_of(lines[0])
    assert lines[-2:] == ["J0000020: Job completed successfully.",
                          f"J0000001: Transaction {tid} ended"]
    records = server_records(caplog)
    assert len(records) == EPISODE_RECORDS, [r.getMessage() for r in records]
    recovered = records[-1]
    assert recovered.levelno == logging.WARNING
    assert "works again after" in recovered.getMessage()
    assert "commands refused meanwhile: 3)" in recovered.getMessage()
    listed = await exchange(server.port, xml_packet("ListJobs", {"_sys_Filter": "all"}))
    assert listed == ["R0000000- 1 jobs", f"R0000000: {tid}\tCompleted\techo\t"]


async def test_each_episode_of_a_full_disk_is_logged_once(server, caplog):
    caplog.set_level(logging.INFO, logger="jobmonitor")
    for _episode in range(2):
        await set_disk_full(server, True)
        for _ in range(3):
            assert await exchange(server.port, large_submit()) == [FULL]
        await set_disk_full(server, False)
        assert (await exchange(server.port, large_submit()))[0].startswith("R0000000: T")
    records = server_records(caplog)
    assert len(records) == 2 * EPISODE_RECORDS, [r.getMessage() for r in records]
    assert [r.levelno for r in records] == [logging.ERROR, logging.WARNING] * 2
    assert all("commands refused meanwhile: 3)" in r.getMessage() for r in records[1::2])


class Commits:
    """Counts the store's commits as they end (failed or not), to wait for one."""

    def __init__(self, server, monkeypatch) -> None:
        store = server.engine._store
        loop = asyncio.get_running_loop()
        self.count = 0
        self._ended = asyncio.Event()
        write = store._write

        def counted(batch) -> None:  # (on the database thread)
            try:
                write(batch)
            finally:
                loop.call_soon_threadsafe(self._end)

        monkeypatch.setattr(store, "_write", counted)

    def _end(self) -> None:
        self.count += 1
        self._ended.set()

    async def until(self, count: int) -> None:
        while self.count < count:
            self._ended.clear()
            await asyncio.wait_for(self._ended.wait(), 5)


async def test_a_retry_with_nothing_left_to_write_does_not_end_the_spell(
        server, caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger="jobmonitor")
    commits = Commits(server, monkeypatch)
    await set_disk_full(server, True)
    assert await exchange(server.port, large_submit()) == [FULL]
    await commits.until(2)  # the retry after the failed commit: nothing was left to write
    assert await exchange(server.port, large_submit()) == [FULL]
    await set_disk_full(server, False)
    assert (await exchange(server.port, large_submit()))[0].startswith("R0000000: T")
    records = server_records(caplog)
    assert [r.levelno for r in records] == [logging.ERROR, logging.WARNING], [
        r.getMessage() for r in records]
    assert "commands refused meanwhile: 2)" in records[1].getMessage()
