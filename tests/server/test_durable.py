"""The SQLite store: nothing acknowledged is lost across restarts and crashes."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import threading

import pytest

from jobmonitor import ConfigError, JobState
from jobmonitor.engine import pacing
from jobmonitor.engine import runner as runner_module
from jobmonitor.store.sqlite.file import NUMBER_BLOCK

from ..conftest import MACHINE, finished, release
from ..process.test_cli import ROOT, ServerProcess
from ..support import jobs
from ..support.helpers import Session, exchange, submit, xml_packet

ENDED = "J0000001: Transaction {} ended"


def tid_of(reply: str) -> str:
    assert reply.startswith("R0000000: T"), reply
    return reply.removeprefix("R0000000: ")


def status(tid: str, **variables: str) -> bytes:
    return xml_packet("GetJobStatus", {"_sys_TransactionID": tid, **variables})


def field(lines: list[str], key: str) -> str:
    for line in lines:
        if line[10:].startswith(f"{key}: "):
            return line[10 + len(key) + 2:]
    raise AssertionError(f"no {key} in {lines}")


@pytest.fixture
def db_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'jobs.db'}"


async def test_finished_jobs_and_their_lines_survive_a_restart(make_server, db_url):
    server = await make_server(store=db_url)
    streams = [await exchange(server.port, submit(p)) for p in ("echo", "partial", "fail")]
    server.close()
    await server.wait_closed()

    again = await make_server(store=db_url)
    for lines in streams:
        tid = tid_of(lines[0])
        assert await exchange(again.port, xml_packet("MonitorJob", {"_sys_TransactionID": tid})) \
            == lines
    assert field(await exchange(again.port, status("T0000002")), "Status") == \
        "CompletedWithErrors"
    assert tid_of((await exchange(again.port, submit("echo", monitor=False)))[0]) == "T0000004"


async def test_lone_surrogates_in_what_a_job_records_do_not_stop_the_store(make_server, db_url):
    server = await make_server(store=db_url)
    lines = await exchange(server.port, submit("surrogate-record"))
    assert lines[-2] == "J0000020: Job completed successfully."
    tid = tid_of(lines[0])
    assert tid_of((await exchange(server.port, submit("echo", monitor=False)))[0]) == "T0000002"
    server.close()
    await server.wait_closed()

    again = await make_server(store=db_url)
    info = await exchange(again.port, xml_packet("GetJobInformation", {"_sys_TransactionID": tid}))
    assert "R0000000- Output: \\udcff.pdf\tfile:///out/\\udcff.pdf\tapplication/pdf\\udcff" in info
    assert any(line.endswith(" copy \\udcff start from \\udcff") for line in info)
    assert field(info, "Last message") == "last \\udcff"
    assert field(await exchange(again.port, status("T0000002")), "Status") == "Completed"


async def test_transaction_ids_are_not_reused_after_deleting_the_newest(make_server, db_url):
    server = await make_server(store=db_url)
    tid = tid_of((await exchange(server.port, submit("echo")))[0])
    assert await exchange(server.port, xml_packet("DeleteJob", {"_sys_TransactionID": tid})) == \
        [f"R0000000: {tid} deleted"]
    server.close()
    await server.wait_closed()
    again = await make_server(store=db_url)
    assert await exchange(again.port, status(tid)) == [f"R0005009: Unknown transaction: {tid}"]
    assert tid_of((await exchange(again.port, submit("echo", monitor=False)))[0]) == "T0000002"


async def test_queued_jobs_keep_their_place_across_a_restart(make_server, db_url):
    server = await make_server(store=db_url, max_running=1, shutdown_grace_s=0.1)
    blocker = tid_of((await exchange(server.port, submit("wait", monitor=False, Key="x")))[0])
    queued = [tid_of((await exchange(server.port, submit("echo", monitor=False, N=str(n))))[0])
              for n in range(3)]
    server.close()
    await server.wait_closed()

    again = await make_server(store=db_url, max_running=1)
    starts = []
    for tid in queued:
        job = await finished(again, tid)
        assert job.state is JobState.COMPLETED
        starts.append(job.record.started)
    assert starts == sorted(starts)
    cancelled = await exchange(again.port, status(blocker))
    assert field(cancelled, "Status") == "Cancelled"


async def test_a_shutdown_during_a_restart_leaves_queued_jobs_queued(make_server, db_url):
    server = await make_server(store=db_url, max_running=1, shutdown_grace_s=0.2)
    running = await Session.open(server.port, submit("wait", Key="running"))
    await running.line()
    queued = tid_of((await exchange(server.port, submit("wait", monitor=False, Key="q")))[0])
    restart = asyncio.ensure_future(exchange(server.port, xml_packet("RestartServer")))
    while await running.line() != \
            "J0000190: Job engine restarting: running jobs have 0.2 s to finish":
        pass
    server.close()  # the restart ends while the server stops: it must start nothing
    await server.wait_closed()
    await restart
    await running.close()

    again = await make_server(store=db_url, max_running=1)
    await release("q")
    lines = await exchange(again.port, xml_packet("MonitorJob", {"_sys_TransactionID": queued}))
    assert "J0005002: Job interrupted by a server restart" not in lines
    assert lines[-3:] == ["J0000100: released", "J0000020: Job completed successfully.",
                          ENDED.format(queued)]


async def _stopped_in_its_first_run(server, packet: bytes) -> str:
    """Submit a retry job, stop the server (0.1 s of grace) during its first run, and
    check it was left to recovery: a stop notice and no completion line.  Returns
    its transaction ID once the server has stopped."""
    session = await Session.open(server.port, packet)
    tid = tid_of(await session.line())
    await session.line()
    assert await session.line() == "J0000100: first run"
    server.close()
    assert await session.rest() == [
        "J0000190: Server stopping: running jobs have 0.1 s to finish"]
    await session.close()
    await server.wait_closed()
    return tid


async def test_retry_on_restart_job_runs_again(make_server, db_url, tmp_path):
    marker = tmp_path / "marker"
    server = await make_server(store=db_url, shutdown_grace_s=0.1)
    tid = await _stopped_in_its_first_run(
        server, submit("retry-once", Marker=str(marker)))

    again = await make_server(store=db_url)
    lines = await exchange(again.port, xml_packet("MonitorJob", {"_sys_TransactionID": tid,
                                                                 "_sys_FromLine": "2"}))
    assert lines[1:] == [
        "J0000100: first run",
        "J0000190: Server stopping: running jobs have 0.1 s to finish",
        "J0005002: Job interrupted by a server restart",
        "J0000132: Job queued to run again.",
        "J0000100: second run",
        "J0000020: Job completed successfully.",
        ENDED.format(tid),
    ]


async def test_many_concurrent_submits_are_all_durable(make_server, db_url):
    server = await make_server(store=db_url, max_running=50)
    replies = await asyncio.gather(*(exchange(server.port, submit("echo", monitor=False, N=str(n)))
                                     for n in range(200)))
    tids = sorted(tid_of(r[0]) for r in replies)
    assert tids == [f"T{n:07d}" for n in range(1, 201)]
    for tid in tids:
        await finished(server, tid)
    server.close()
    await server.wait_closed()
    again = await make_server(store=db_url)
    listed = await exchange(again.port, xml_packet("ListJobs", {"_sys_Filter": "all"}))
    assert listed[0] == "R0000000- 200 jobs"
    assert all(line.split("\t")[1] == "Completed" for line in listed[1:])


async def test_a_long_stream_is_trimmed_in_memory_and_replayed_from_the_store(make_server, db_url):
    server = await make_server(store=db_url, max_lines_in_memory=100)
    lines = await exchange(server.port, submit("lines", Count="5000", YieldEvery="50"))
    assert lines[2:-2] == [f"J0000100: line {n}" for n in range(1, 5001)]
    replay = await exchange(server.port, xml_packet("MonitorJob", {
        "_sys_TransactionID": tid_of(lines[0]), "_sys_FromLine": "2"}))
    assert replay == [lines[0], *lines[2:]]


async def test_a_monitor_keeping_up_is_not_sent_to_the_store_by_a_job_ahead_of_it(
        make_server, db_url, monkeypatch):
    # Commits slowed down, so the job runs far ahead of the store: each commit makes
    # many lines deliverable at once.  A monitor that takes them all as they come
    # gets them from memory, never from the store.
    server = await make_server(store=db_url, max_lines_in_memory=100)
    store = server.engine._store
    write, read_lines = store._write, store.read_lines
    reads = []

    def slow_write(batch):
        threading.Event().wait(0.02)
        write(batch)

    async def counted_read_lines(*args):
        reads.append(args)
        return await read_lines(*args)

    monkeypatch.setattr(store, "_write", slow_write)
    monkeypatch.setattr(store, "read_lines", counted_read_lines)
    lines = await exchange(server.port, submit("lines", Count="5000", YieldEvery="50"))
    assert lines[2:-2] == [f"J0000100: line {n}" for n in range(1, 5001)]
    assert reads == []


async def test_a_job_that_never_checkpoints_waits_for_the_store_at_its_yields(
        make_server, db_url, monkeypatch):
    # The store slowed down, the job says lines as fast as it can: at each bare yield
    # past the bound it waits for the store, so its backlog stays near the bound
    # (it was as large as the job: every line it had said).
    monkeypatch.setattr(pacing, "MAX_BACKLOG_LINES", 2000)
    server = await make_server(store=db_url)
    store = server.engine._store
    write = store._write

    def slow_write(batch):
        threading.Event().wait(0.01)
        write(batch)

    monkeypatch.setattr(store, "_write", slow_write)
    lines = await exchange(server.port, submit("unpaced", Count="30000", Burst="100"))
    assert lines[2:-3] == [f"J0000100: line {n}" for n in range(1, 30001)]
    most = int(lines[-3].removeprefix("J0000100: most unstored after a yield: "))
    assert 0 < most <= 2000 + 100


async def test_retention_deletes_old_finished_jobs(make_server, db_url):
    server = await make_server(store=db_url, keep_days=1e-9)
    done = tid_of((await exchange(server.port, submit("echo")))[0])
    active = tid_of((await exchange(server.port, submit("wait", monitor=False, Key="k")))[0])
    assert await server.engine.purge_expired() == 1
    assert await exchange(server.port, status(done)) == [f"R0005009: Unknown transaction: {done}"]
    assert field(await exchange(server.port, status(active)), "Status") == "Processing"
    await release("k")


def test_sigkill_under_load_loses_no_acknowledged_job(tmp_path):
    """Kill -9 the real server while jobs are queued, running and finished; restart it."""
    url = f"sqlite:///{tmp_path / 'crash.db'}"
    marker = tmp_path / "marker"
    server = ServerProcess("--jobs", "tests/support/jobs.py", "--store", url, "--max-running", "3")

    async def load() -> dict[str, list[str]]:
        done = {}
        for n in range(20):
            lines = await exchange(server.port, submit("lines", Count="50", N=str(n)))
            done[tid_of(lines[0])] = lines
        acked = [tid_of((await exchange(server.port, submit(p, monitor=False, **v)))[0])
                 for p, v in [("wait", {"Key": "a"}), ("retry-once", {"Marker": str(marker)}),
                              ("wait", {"Key": "b"})]]
        queued = [tid_of((await exchange(server.port, submit("echo", monitor=False, N=str(n))))[0])
                  for n in range(5)]
        # make sure the running jobs have started before the crash
        watcher = await Session.open(server.port, xml_packet(
            "MonitorJob", {"_sys_TransactionID": acked[1], "_sys_FromLine": "2"}))
        await watcher.line()
        assert await watcher.line() == "J0000100: first run"
        await watcher.close()
        return {"done": done, "running": acked, "queued": queued}

    try:
        state = asyncio.run(load())
        server.proc.send_signal(signal.SIGKILL)
        server.proc.communicate(timeout=10)
    finally:
        server.kill()

    restarted = ServerProcess("--jobs", "tests/support/jobs.py", "--store", url)
    try:
        async def check() -> None:
            for tid, lines in state["done"].items():
                replay = await exchange(restarted.port, xml_packet(
                    "MonitorJob", {"_sys_TransactionID": tid}))
                assert replay == lines
            wait_a, retry, wait_b = state["running"]
            for tid in (wait_a, wait_b):
                lines = await exchange(restarted.port, xml_packet(
                    "MonitorJob", {"_sys_TransactionID": tid}))
                assert lines[-3:] == ["J0005002: Job interrupted by a server restart",
                                      "J0000022: Job failed.", ENDED.format(tid)]
            lines = await exchange(restarted.port, xml_packet(
                "MonitorJob", {"_sys_TransactionID": retry}))
            assert lines[-4:] == ["J0000132: Job queued to run again.", "J0000100: second run",
                                  "J0000020: Job completed successfully.", ENDED.format(retry)]
            for tid in state["queued"]:
                lines = await exchange(restarted.port, xml_packet(
                    "MonitorJob", {"_sys_TransactionID": tid}))
                assert lines[-2:] == ["J0000020: Job completed successfully.", ENDED.format(tid)]
            listed = await exchange(restarted.port, xml_packet("ListJobs", {"_sys_Filter": "all"}))
            assert listed[0] == f"R0000000- {20 + 3 + 5} jobs"
            fresh = await exchange(restarted.port, submit("echo", monitor=False))
            # After a crash numbering goes on after the block reserved beside the
            # database (sqlite_file.NUMBER_BLOCK), which 28 numbers did not use up.
            assert tid_of(fresh[0]) == f"T{NUMBER_BLOCK + 1:07d}"

        asyncio.run(check())
        assert restarted.stop() == 0
    finally:
        restarted.kill()


async def test_a_second_server_on_the_same_database_refuses_to_start(make_server, db_url):
    first = await make_server(store=db_url)
    with pytest.raises(ConfigError) as refused:
        await make_server(store=db_url)
    assert str(refused.value) == (
        f"store: {db_url.removeprefix('sqlite:///')} is in use by another jobmonitor server "
        f"(process {os.getpid()}); stop that one first, or give this one another --store or "
        f"--data-dir")
    assert tid_of((await exchange(first.port, submit("echo")))[0]) == "T0000001"
    first.close()
    await first.wait_closed()
    second = await make_server(store=db_url)  # the lock went with the first
    assert tid_of((await exchange(second.port, submit("echo")))[0]) == "T0000002"


def test_a_second_server_process_on_the_same_database_exits_with_one_line(tmp_path):
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    first = ServerProcess("--jobs", "tests/support/jobs.py", "--store", url, memory_store=False)
    try:
        second = subprocess.run(
            [sys.executable, "-m", "jobmonitor", "serve", "--port", "0", "--jobs",
             "tests/support/jobs.py", "--store", url], cwd=ROOT, capture_output=True, text=True,
            timeout=30)
        assert second.returncode == 2
        assert second.stderr.splitlines()[-1] == (
            f"jobmonitor: store: {tmp_path / 'jobs.db'} is in use by another jobmonitor "
            f"server (process {first.proc.pid}); stop that one first, or give this one "
            f"another --store or --data-dir")
        assert "Traceback" not in second.stderr
    finally:
        first.kill()  # SIGKILL: the lock goes with the process all the same
    again = ServerProcess("--jobs", "tests/support/jobs.py", "--store", url, memory_store=False)
    assert again.stop() == 0


def test_serve_defaults_to_sqlite_in_the_data_dir(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "jobmonitor", "serve", "--port", "0", "--data-dir",
         str(tmp_path / "data"), "--jobs", "tests/support/jobs.py", "--bogus"],
        cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2  # argparse refuses --bogus before anything starts
    server = ServerProcess("--data-dir", str(tmp_path / "data"), "--jobs", "tests/support/jobs.py",
                           memory_store=False)
    try:
        assert server.stop() == 0
    finally:
        server.kill()
    assert (tmp_path / "data" / "jobmonitor.db").exists()


def test_every_line_a_watcher_saw_survives_a_crash_with_the_same_number(tmp_path):
    """Lines go out only once stored: a SIGKILL just after a watcher got a line
    cannot take it back or give its number to another line."""
    url = f"sqlite:///{tmp_path / 'seen.db'}"
    server = ServerProcess("--jobs", "tests/support/jobs.py", "--store", url)

    async def watch_then_crash() -> tuple[str, list[str]]:
        session = await Session.open(server.port, submit("stepper", Key="never", Count="1"))
        tid = tid_of(await session.line())
        seen = [await session.line(), await session.line()]
        server.proc.send_signal(signal.SIGKILL)  # at once, well inside the commit window
        await session.close()
        return tid, seen

    try:
        tid, seen = asyncio.run(watch_then_crash())
        server.proc.communicate(timeout=10)
    finally:
        server.kill()
    assert seen[1] == "J0000100: before step 1"
    restarted = ServerProcess("--jobs", "tests/support/jobs.py", "--store", url)
    try:
        replay = asyncio.run(exchange(restarted.port, xml_packet(
            "MonitorJob", {"_sys_TransactionID": tid})))
        assert replay[1:3] == seen
        assert replay[3:] == ["J0005002: Job interrupted by a server restart",
                              "J0000022: Job failed.", ENDED.format(tid)]
        assert restarted.stop() == 0
    finally:
        restarted.kill()


async def test_a_retry_job_deaf_to_cancellation_is_still_left_to_recovery(
        make_server, db_url, tmp_path, monkeypatch):
    monkeypatch.setattr(runner_module, "CANCEL_WAIT_S", 0.2)
    server = await make_server(store=db_url, shutdown_grace_s=0.1)
    # The job never stops: its thread is abandoned, its stream ends without a completion.
    tid = await _stopped_in_its_first_run(
        server, submit("thread-retry", Marker=str(tmp_path / "m"), Key="deaf"))
    jobs.thread_releases["deaf"].set()
    returned = threading.Event()  # the database stays locked until the thread returns
    server.engine.when_threads_end(returned.set)
    assert await asyncio.to_thread(returned.wait, 10)

    again = await make_server(store=db_url)
    lines = await exchange(again.port, xml_packet("MonitorJob", {"_sys_TransactionID": tid}))
    assert lines[-4:] == ["J0000132: Job queued to run again.", "J0000100: second run",
                          "J0000020: Job completed successfully.", ENDED.format(tid)]


@pytest.mark.parametrize("count", [0, 1, 7, 9, 31, 129, 500])
@pytest.mark.parametrize("most_variables", [999, 100])
def test_multi_row_inserts_store_every_row_whatever_the_batch_size(count, most_variables):
    # Statements hold up to most_variables parameters (5 rows of 19 for 100), their
    # row counts rounded up by repeating the last row, which replaces itself.
    from jobmonitor.store.sqlite.rows import insert_rows

    db = sqlite3.connect(":memory:")
    db.execute(f"CREATE TABLE t (c0 PRIMARY KEY, {', '.join(f'c{i}' for i in range(1, 19))})")
    rows = [tuple(n * 100 + i for i in range(19)) for n in range(count)]
    insert_rows(db, "INSERT OR REPLACE INTO t", rows, most_variables)
    assert db.execute("SELECT * FROM t ORDER BY c0").fetchall() == rows


def test_a_later_write_changes_only_what_can_change(tmp_path):
    # The first write of a job inserts its row; later ones update the columns that
    # can change and keep the rest (the parameters are not written again).
    from jobmonitor.store.batching import Batch
    from jobmonitor.store.sqlite.rows import job_row, job_update, select_records
    from jobmonitor.store.sqlite.store import SqliteStore
    from jobmonitor.wire.records import JobRecord

    store = SqliteStore(str(tmp_path / "u.db"))
    store._open_db()
    first = JobRecord("T0000007", "echo", {"Text": "hi"}, {"d": "1"}, identity="ann",
                      job_token="k1", status=JobState.QUEUED, worker="w", created=1.0,
                      updated=1.0)
    store._write(Batch(rows=[job_row(first, 7, 0)]))
    later = first.copy()
    later.project, later.params, later.job_token = "other", {}, None  # never written again
    later.status, later.started, later.updated = JobState.PROCESSING, 2.0, 3.0
    store._write(Batch(updates=[job_update(later, 7, 4), job_update(later, 7, 4)]))
    (stored,) = select_records(store._db, "1", ())
    assert (stored.project, stored.params, stored.doc_variables, stored.job_token) == \
        ("echo", {"Text": "hi"}, {"d": "1"}, "k1")
    assert (stored.status, stored.started, stored.updated, stored.line_count) == \
        (JobState.PROCESSING, 2.0, 3.0, 4)
    store._db.close()
    store._thread.shutdown()


async def test_the_memory_store_keeps_only_the_newest_finished_jobs(make_server):
    server = await make_server(store="memory://", max_finished_in_memory=3)
    waiting = tid_of((await exchange(server.port, submit("wait", monitor=False, Key="cap")))[0])
    done = [tid_of((await exchange(server.port, submit("echo")))[0]) for _ in range(5)]
    for tid in done[:2]:
        unknown = f"R0005009: Unknown transaction: {tid}"
        assert await exchange(server.port, status(tid)) == [unknown]
    for tid in done[2:]:
        assert field(await exchange(server.port, status(tid)), "Status") == "Completed"
    # Jobs still running are never forgotten, however many finish after them.
    assert field(await exchange(server.port, status(waiting)), "Status") == "Processing"
    await release("cap")


async def test_a_deleted_job_frees_its_place_among_the_finished_jobs_kept(make_server):
    server = await make_server(store="memory://", max_finished_in_memory=3)
    done = [tid_of((await exchange(server.port, submit("echo")))[0]) for _ in range(3)]
    deleted = xml_packet("DeleteJob", {"_sys_TransactionID": done[1]})
    assert await exchange(server.port, deleted) == [f"R0000000: {done[1]} deleted"]
    done.append(tid_of((await exchange(server.port, submit("echo")))[0]))
    # Three finished jobs are kept: the deleted one is not counted among them.
    for tid in (done[0], done[2], done[3]):
        assert field(await exchange(server.port, status(tid)), "Status") == "Completed"


@pytest.mark.parametrize("count", [1, 7, 1000, 2500])
def test_deleting_many_jobs_deletes_exactly_those(count, tmp_path):
    # The numbers go in IN lists of up to 512: only their rows go.
    from jobmonitor.store.sqlite.rows import delete_numbers
    from jobmonitor.store.sqlite.store import SqliteStore

    store = SqliteStore(str(tmp_path / "d.db"))
    store._open_db()
    db = store._db
    keep = count + 1
    for number in range(1, count + 2):
        db.execute("INSERT INTO history VALUES (?, 0, 'job', 'queued', 0, NULL, NULL)", (number,))
    delete_numbers(db, list(range(1, count + 1)))
    assert db.execute("SELECT number FROM history").fetchall() == [(keep,)]
    db.close()
    store._thread.shutdown()


@pytest.mark.parametrize("project", ["chatty", "thread-chatty"])
async def test_a_chatty_job_waits_at_its_checkpoints_for_the_store(make_server, db_url,
                                                                   monkeypatch, project):
    # Bursts of 40 lines, at most 100 unstored after a checkpoint: without the wait
    # all 3 000 would pile up ahead of the commits.
    from jobmonitor.engine import job as job_module

    monkeypatch.setattr(job_module, "MAX_UNSTORED_LINES", 100)
    server = await make_server(store=db_url, commit_interval_s=0.02)
    lines = await exchange(server.port, submit(project, Count="3000", Burst="40"))
    said = [line for line in lines if line.startswith("J0000100: line ")]
    assert said == [f"J0000100: line {n}" for n in range(1, 3001)]
    most = int(next(line for line in lines if "most unstored" in line).rsplit(" ", 1)[1])
    assert most <= 100 + 40
    if project == "chatty":  # a thread's lines reach the stream in batches, more slowly
        assert most > 0


async def test_without_a_durable_store_checkpoints_never_wait_for_one(make_server):
    server = await make_server(store="memory://")
    lines = await exchange(server.port, submit("chatty", Count="500", Burst="50"))
    assert "J0000100: most unstored after a checkpoint: 0" in lines


async def test_a_watched_job_that_says_nothing_is_not_written_again_and_again(make_server,
                                                                             db_url):
    # Serving a watcher its newly stored lines is no change to the job: it must
    # not start another commit (which would serve the watcher, and so on forever).
    server = await make_server(store=db_url, commit_interval_s=0.01)
    session = await Session.open(server.port, submit("wait", Key="quiet"))
    tid = tid_of(await session.line())
    assert await session.line() == f"J0000100: Machine name: {MACHINE}"
    assert await session.line() == "J0000100: waiting"
    observer = sqlite3.connect(db_url.removeprefix("sqlite:///"))  # sees others' commits
    try:
        before = observer.execute("PRAGMA data_version").fetchone()[0]
        await asyncio.sleep(0.3)  # thirty commit intervals
        assert observer.execute("PRAGMA data_version").fetchone()[0] == before
    finally:
        observer.close()
    await release("quiet")
    rest = await session.rest()
    assert rest[-1] == ENDED.format(tid)
    await session.close()


async def test_a_monitor_of_a_queued_job_is_answered_at_once(make_server, db_url):
    # A monitor's reply waits for the job's next commit only while it has something
    # unstored; a job waiting in the queue has not (and commits are a minute apart).
    server = await make_server(store=db_url, max_running=1, commit_interval_s=60.0)
    await exchange(server.port, submit("wait", monitor=False, Key="ahead"))
    session = await Session.open(server.port, submit("echo", Text="queued"))
    tid = tid_of(await asyncio.wait_for(session.line(), 2.0))
    assert await asyncio.wait_for(session.line(), 2.0) == f"J0000100: Machine name: {MACHINE}"
    await release("ahead")
    rest = await session.rest()
    assert "J0000100: Text=queued" in rest and rest[-1] == ENDED.format(tid)
    await session.close()


async def test_call_when_stored_starts_the_commit_it_waits_for(tmp_path):
    # A change waits up to commit_interval_s (a minute here) for its commit; one
    # that someone waits on with call_when_stored is committed at once.
    from jobmonitor.engine.job import Job
    from jobmonitor.store.sqlite.store import SqliteStore
    from jobmonitor.wire.records import JobRecord

    store = SqliteStore(str(tmp_path / "w.db"), commit_interval_s=60.0)
    await store.open()
    try:
        loop = asyncio.get_running_loop()
        job = Job(JobRecord("T0000001", "echo", {}, {}, status=JobState.PROCESSING), loop)
        await store.add(job)
        job.info("one")
        store.changed(job)
        called = loop.create_future()
        store.call_when_stored(lambda: called.set_result(None))
        await asyncio.wait_for(called, 2.0)
        assert await store.read_lines("T0000001", 1, 10) == [b"J0000100: one\r\n"]
        nothing_waits = loop.create_future()  # nothing unstored: at the end of this turn
        store.call_when_stored(lambda: nothing_waits.set_result(None))
        await asyncio.wait_for(nothing_waits, 0.5)
    finally:
        await store.close()


async def test_two_submits_with_one_job_token_at_once_make_one_job(make_server, db_url):
    # The store is asked about the token off the loop; the second submit must
    # still find the job the first one made meanwhile.
    server = await make_server(store=db_url)
    packet = submit("echo", monitor=False, _sys_JobToken="once")
    replies = await asyncio.gather(*(exchange(server.port, packet) for _ in range(5)))
    assert len({tuple(reply) for reply in replies}) == 1, replies
    assert tid_of(replies[0][0]) == "T0000001"


async def test_call_when_stored_on_a_closed_store_still_calls_back(tmp_path):
    # A connection answering after the store closed (a shutdown) must not wait
    # for a commit that will never come.
    from jobmonitor.engine.job import Job
    from jobmonitor.store.sqlite.store import SqliteStore
    from jobmonitor.wire.records import JobRecord

    store = SqliteStore(str(tmp_path / "c.db"))
    await store.open()
    loop = asyncio.get_running_loop()
    job = Job(JobRecord("T0000001", "echo", {}, {}, status=JobState.PROCESSING), loop)
    await store.add(job)
    await store.close()
    job.info("late")
    store.changed(job)
    called = loop.create_future()
    store.call_when_stored(lambda: called.set_result(None))
    await asyncio.wait_for(called, 1.0)


async def test_a_job_that_fails_while_the_server_stops_runs_again_at_the_next_start(
        make_server, db_url):
    server = await make_server(store=db_url, shutdown_grace_s=10)
    session = await Session.open(server.port, submit("thread-flaky", Key="fails-at-stop-sqlite"))
    tid = tid_of(await session.line())
    await session.line()
    assert await session.line() == "J0000100: attempt 1"
    server.close()
    assert await session.line() == "J0000190: Server stopping: running jobs have 10 s to finish"
    jobs.thread_releases.setdefault("fails-at-stop-sqlite", threading.Event()).set()
    # Queued in the store, not failed: the stream ends without a completion line.
    assert await session.rest() == ["J0005000: attempt 1 failed",
                                    "J0000132: Job queued to run again (attempt 2 of 2)."]
    await session.close()
    await server.wait_closed()

    again = await make_server(store=db_url)
    lines = await exchange(again.port, xml_packet("MonitorJob", {"_sys_TransactionID": tid,
                                                                 "_sys_FromLine": "2"}))
    assert lines[1:] == [
        "J0000100: attempt 1",
        "J0000190: Server stopping: running jobs have 10 s to finish",
        "J0005000: attempt 1 failed",
        "J0000132: Job queued to run again (attempt 2 of 2).",
        "J0000100: attempt 2",
        "J0000020: Job completed successfully.",
        ENDED.format(tid),
    ]


async def test_a_job_left_queued_by_a_stop_and_cancelled_before_it_ends_says_so(
        make_server, db_url):
    server = await make_server(store=db_url, shutdown_grace_s=10)
    running = await Session.open(server.port, submit("wait", Key="holds-the-stop"))
    assert (await running.line()).startswith("R0000000: T")
    session = await Session.open(server.port, submit("thread-flaky", Key="left-queued"))
    tid = tid_of(await session.line())
    await session.line()
    assert await session.line() == "J0000100: attempt 1"
    # Connected before the stop (the listener closes): its CancelJob comes during it.
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    server.close()
    assert await session.line() == "J0000190: Server stopping: running jobs have 10 s to finish"
    jobs.thread_releases.setdefault("left-queued", threading.Event()).set()
    assert await session.line() == "J0005000: attempt 1 failed"
    assert await session.line() == "J0000132: Job queued to run again (attempt 2 of 2)."
    writer.write(xml_packet("CancelJob", {"_sys_TransactionID": tid}))
    assert await asyncio.wait_for(reader.read(), 10) == f"R0000000: {tid}\r\n".encode()
    writer.close()
    assert await session.rest() == ["J0000023: Job cancelled by user.", ENDED.format(tid)]
    await session.close()
    await release("holds-the-stop")
    await running.rest()
    await running.close()
    await server.wait_closed()

    again = await make_server(store=db_url)
    assert field(await exchange(again.port, status(tid)), "Status") == "Cancelled"
    lines = await exchange(again.port, xml_packet("MonitorJob", {"_sys_TransactionID": tid}))
    assert lines[-4:] == ["J0005000: attempt 1 failed",
                          "J0000132: Job queued to run again (attempt 2 of 2).",
                          "J0000023: Job cancelled by user.", ENDED.format(tid)]
