"""The SQLite store when a commit fails, and jobs changed while their first commit runs.

A commit is made to fail the way a backup tool or the ``sqlite3`` shell makes it
fail: another connection holds the database's write lock for longer than the
store's busy timeout (shortened here from 5 s).  Each test then lets go of the
lock and checks that nothing acknowledged was lost, nothing refused was kept,
and no monitor saw a line that was not stored.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time

import pytest

from jobmonitor.engine import runner as runner_module
from jobmonitor.store import batching
from jobmonitor.store.sqlite import store as sqlite_store

from ..conftest import MACHINE, release
from ..support import jobs
from ..support.helpers import Session, exchange, submit, xml_packet
from .test_durable import field, status, tid_of

BUSY_TIMEOUT_S = 0.3
RETRY_DELAY_S = 0.1
REFUSED = "R0005011: Server busy: store unavailable: database is locked"


@pytest.fixture(autouse=True)
def _short_timeouts(monkeypatch) -> None:
    monkeypatch.setattr(sqlite_store, "BUSY_TIMEOUT_S", BUSY_TIMEOUT_S)
    monkeypatch.setattr(batching, "RETRY_DELAY_S", RETRY_DELAY_S)


@pytest.fixture
def db_path(tmp_path) -> str:
    return str(tmp_path / "jobs.db")


class Lock:
    """Another connection holding the database's write lock while it is entered."""

    def __init__(self, path: str) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, timeout=10)

    def __enter__(self) -> Lock:
        self._db.execute("BEGIN IMMEDIATE")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._db.execute("ROLLBACK")
        self._db.close()


def stored_lines(path: str, number: int) -> list[tuple[int, int]]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT first_line, count FROM line_blocks WHERE number = ? "
                          "ORDER BY first_line", (number,)).fetchall()


async def silent(session: Session, seconds: float) -> bool:
    """True when nothing arrives on the session for ``seconds``."""
    try:
        data = await asyncio.wait_for(session.reader.read(1), seconds)
    except TimeoutError:
        return True
    raise AssertionError(f"{data!r} arrived")


async def test_a_failed_delete_rolls_back_and_the_store_goes_on(make_server, db_path):
    server = await make_server(store=f"sqlite:///{db_path}")
    await exchange(server.port, submit("echo"))
    with Lock(db_path):
        delete = xml_packet("DeleteJob", {"_sys_TransactionID": "T0000001"})
        assert await exchange(server.port, delete) == [REFUSED]
    assert server.engine._store._db.in_transaction is False
    assert tid_of((await exchange(server.port, submit("echo")))[0]) == "T0000002"
    assert field(await exchange(server.port, status("T0000002")), "Status") == "Completed"
    assert await exchange(server.port, delete) == ["R0000000: T0000001 deleted"]


async def test_lines_of_a_failed_commit_are_stored_by_the_next_and_sent_only_then(
        make_server, db_path):
    url = f"sqlite:///{db_path}"
    server = await make_server(store=url)
    session = await Session.open(server.port, submit("stepper", Key="k", Count="2"))
    seen = [await session.line() for _ in range(3)]
    assert seen[1:] == [f"J0000100: Machine name: {MACHINE}", "J0000100: before step 1"]
    with Lock(db_path):
        await release("k")  # "step 1 done" and "before step 2": their commit fails
        assert await silent(session, BUSY_TIMEOUT_S * 3)  # and no monitor sees them
    seen += [await session.line(), await session.line()]
    await release("k")
    seen += await session.rest()
    await session.close()
    assert seen[3:] == ["J0000100: step 1 done", "J0000100: before step 2",
                        "J0000100: step 2 done", "J0000020: Job completed successfully.",
                        "J0000001: Transaction T0000001 ended"]
    blocks = stored_lines(db_path, 1)
    assert [first for first, _ in blocks] == [1, *[first + count for first, count in blocks][:-1]]
    assert sum(count for _, count in blocks) == 7

    server.close()
    await server.wait_closed()
    again = await make_server(store=url)
    replay = await exchange(again.port,
                            xml_packet("MonitorJob", {"_sys_TransactionID": "T0000001"}))
    assert replay == seen
    from_line_4 = await exchange(again.port, xml_packet(
        "MonitorJob", {"_sys_TransactionID": "T0000001", "_sys_FromLine": "4"}))
    assert from_line_4 == [seen[0], *seen[4:]]


async def test_a_job_whose_last_commit_failed_still_ends_for_its_monitor(make_server, db_path):
    url = f"sqlite:///{db_path}"
    server = await make_server(store=url)
    session = await Session.open(server.port, submit("stepper", Key="k", Count="1"))
    assert [await session.line() for _ in range(3)][2] == "J0000100: before step 1"
    with Lock(db_path):
        await release("k")  # the job ends; the commit of its end fails
        await asyncio.sleep(BUSY_TIMEOUT_S * 3)
    rest = await asyncio.wait_for(session.rest(), 10)
    await session.close()
    assert rest == ["J0000100: step 1 done", "J0000020: Job completed successfully.",
                    "J0000001: Transaction T0000001 ended"]
    server.close()
    await server.wait_closed()
    again = await make_server(store=url)
    assert field(await exchange(again.port, status("T0000001")), "Status") == "Completed"


async def test_a_refused_submit_leaves_no_job_behind(make_server, db_path):
    url = f"sqlite:///{db_path}"
    server = await make_server(store=url)
    with Lock(db_path):
        refused = await exchange(server.port, submit("echo", _sys_JobToken="order-1"))
    assert refused == [REFUSED]
    assert await exchange(server.port, xml_packet("ListJobs")) == ["R0000000: 0 jobs"]
    assert (await exchange(server.port, status("T0000001")))[0].startswith("R0005009")
    again = await exchange(server.port, submit("echo", _sys_JobToken="order-1"))
    assert again[0] == "R0000000: T0000002"
    assert again[-2] == "J0000020: Job completed successfully."
    server.close()
    await server.wait_closed()
    restarted = await make_server(store=url)
    assert await exchange(restarted.port, xml_packet("ListJobs", {"_sys_Filter": "all"})) == [
        "R0000000- 1 jobs", "R0000000: T0000002\tCompleted\techo\t"]


async def test_a_resubmit_of_a_job_token_is_answered_only_once_the_job_is_stored(
        make_server, db_path, monkeypatch):
    monkeypatch.setattr(sqlite_store, "BUSY_TIMEOUT_S", 5.0)  # the commit waits, then succeeds
    server = await make_server(store=f"sqlite:///{db_path}")
    packet = submit("echo", monitor=False, _sys_JobToken="order-2")
    with Lock(db_path):
        first = asyncio.ensure_future(exchange(server.port, packet))
        await asyncio.sleep(0.1)
        second = asyncio.ensure_future(exchange(server.port, packet))
        await asyncio.sleep(0.3)
        assert not first.done() and not second.done()
    assert await first == await second == ["R0000000: T0000001"]


async def test_a_resubmit_of_a_job_token_is_refused_with_the_submit_it_waited_for(
        make_server, db_path):
    server = await make_server(store=f"sqlite:///{db_path}")
    packet = submit("echo", monitor=False, _sys_JobToken="order-3")
    with Lock(db_path):
        first = asyncio.ensure_future(exchange(server.port, packet))
        await asyncio.sleep(0.1)
        second = await exchange(server.port, packet)
    assert await first == second == [REFUSED]


async def test_a_job_cancelled_while_its_submit_commits_never_runs(make_server, db_path,
                                                                  monkeypatch):
    monkeypatch.setattr(sqlite_store, "BUSY_TIMEOUT_S", 5.0)  # the commit waits, then succeeds
    server = await make_server(store=f"sqlite:///{db_path}")
    with Lock(db_path):
        submitter = asyncio.ensure_future(
            exchange(server.port, submit("wait", Key="never", _sys_JobToken="order-4")))
        await asyncio.sleep(0.1)
        cancel = await exchange(server.port, xml_packet("CancelJob", {"_sys_JobToken": "order-4"}))
        assert cancel == ["R0000000: T0000001"]
    assert await submitter == ["R0000000: T0000001", f"J0000100: Machine name: {MACHINE}",
                               "J0000023: Job cancelled by user.",
                               "J0000001: Transaction T0000001 ended"]
    assert "never" not in jobs.releases  # the handler never started
    assert server.engine.running_count == 0
    assert field(await exchange(server.port, status("T0000001")), "Status") == "Cancelled"


async def test_a_job_suspended_while_its_submit_commits_waits_to_be_resumed(
        make_server, db_path, monkeypatch):
    monkeypatch.setattr(sqlite_store, "BUSY_TIMEOUT_S", 5.0)
    server = await make_server(store=f"sqlite:///{db_path}")
    with Lock(db_path):
        submitted = asyncio.ensure_future(
            exchange(server.port, submit("echo", monitor=False, _sys_JobToken="order-5")))
        await asyncio.sleep(0.1)
        suspend = xml_packet("SuspendJob", {"_sys_JobToken": "order-5"})
        assert await exchange(server.port, suspend) == ["R0000000: T0000001 suspended"]
        resume = xml_packet("ResumeJob", {"_sys_JobToken": "order-5"})
        assert await exchange(server.port, resume) == ["R0000000: T0000001 resumed"]
        assert await exchange(server.port, suspend) == ["R0000000: T0000001 suspended"]
        assert server.engine.running_count == 0  # not started before it is stored
    assert await submitted == ["R0000000: T0000001"]
    assert field(await exchange(server.port, status("T0000001")), "Status") == "Suspended"
    assert server.engine.running_count == server.engine.queued_count == 0
    assert await exchange(server.port, resume) == ["R0000000: T0000001 resumed"]
    monitor = xml_packet("MonitorJob", {"_sys_TransactionID": "T0000001"})
    assert (await exchange(server.port, monitor))[-2:] == [
        "J0000020: Job completed successfully.", "J0000001: Transaction T0000001 ended"]


# -- the engine -----------------------------------------------------------------------------


async def test_queued_jobs_of_a_project_gone_after_a_reload_fail_and_free_the_queue(make_server):
    server = await make_server(max_running=1, shutdown_grace_s=0.1)
    blocker = await Session.open(server.port, submit("wait", Key="block"))
    await blocker.line()
    orphan = await Session.open(server.port, submit("echo", Text="hello"))
    assert await orphan.line() == "R0000000: T0000002"
    await release("block")
    without_echo = {name: h for name, h in jobs.app.handlers.items() if name != "echo"}
    await server.engine.restart(0.5, without_echo)
    assert await orphan.rest() == [
        f"J0000100: Machine name: {MACHINE}",
        "J0000190: Job engine restarting: running jobs have 0.5 s to finish",
        "J0005000: No handler for project 'echo' after the job modules were reloaded",
        "J0000022: Job failed.", "J0000001: Transaction T0000002 ended"]
    await blocker.close()
    await orphan.close()
    later = await exchange(server.port, submit("lines", Count="1"))
    assert later[-2] == "J0000020: Job completed successfully."


async def test_a_thread_abandoned_by_a_restart_holds_no_slot(make_server, tmp_path,
                                                              monkeypatch):
    monkeypatch.setattr(runner_module, "CANCEL_WAIT_S", 0.2)
    server = await make_server(max_running=1, shutdown_grace_s=0.1)
    deaf = await Session.open(server.port, submit("thread-retry", Marker=str(tmp_path / "m"),
                                                  Key="deaf"))
    await deaf.line()
    try:
        await server.engine.restart(0.1, jobs.app.handlers)
        assert (await deaf.rest())[-2] == "J0000023: Job cancelled by user."
        started = time.monotonic()
        after = await asyncio.wait_for(exchange(server.port, submit("thread", Count="1")), 10)
        assert after[-2] == "J0000020: Job completed successfully."
        assert time.monotonic() - started < 5  # not after the abandoned thread
        assert not jobs.thread_releases["deaf"].is_set()
    finally:
        jobs.thread_releases.setdefault("deaf", __import__("threading").Event()).set()
        await deaf.close()
