"""The SQLite store's file: one server per file under any name, start-up
refusals in one line, damage SQLite does not catch, space given back.

Damage is made by hand on a stopped server's files: a database emptied, not a
database, a damaged page, a flipped byte in the write-ahead log, rows that
went missing or do not decode.  Each time, a transaction number a client was
given must never be handed out again, and the server must either refuse to
start in one line saying what to do, or start and serve everything else.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from jobmonitor import ConfigError
from jobmonitor.store.sqlite.file import NUMBER_BLOCK
from jobmonitor.store.sqlite.rows import SCHEMA

from ..server.test_durable import tid_of
from ..support.helpers import exchange, submit, xml_packet
from .test_cli import READY, ROOT, ServerProcess

LIST_ALL = xml_packet("ListJobs", {"_sys_Filter": "all"})
MOVE_AWAY = ("move it away with its -wal and -shm files (the next start makes a new database; "
             "keep the .numbers file beside it, so that numbers go on), or put back a backup")


@pytest.fixture
def db_path(tmp_path) -> Path:
    return tmp_path / "jobs.db"


@pytest.fixture
def db_url(db_path) -> str:
    return f"sqlite:///{db_path}"


async def run_jobs(make_server, url: str, count: int) -> list[str]:
    """Start a server, run ``count`` echo jobs to their end, stop it."""
    server = await make_server(store=url)
    tids = [tid_of((await exchange(server.port, submit("echo")))[0]) for _ in range(count)]
    server.close()
    await server.wait_closed()
    return tids


def refused_start(*args: str, limit_file_bytes: int | None = None) -> tuple[int, list[str]]:
    """Run ``jobmonitor serve`` expecting it not to start: its exit status and
    standard error lines (a server that does start is stopped, and fails the test)."""
    def limit() -> None:
        if limit_file_bytes is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_file_bytes, limit_file_bytes))

    proc = subprocess.Popen(
        [sys.executable, "-m", "jobmonitor", "serve", "--port", "0",
         "--jobs", "tests/support/jobs.py", *args],
        cwd=ROOT, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, preexec_fn=limit)
    assert proc.stderr is not None
    lines = []
    for line in proc.stderr:
        lines.append(line.rstrip("\n"))
        if READY.search(line):
            proc.kill()
            proc.communicate()
            raise AssertionError(f"the server started: {lines}")
    proc.communicate(timeout=10)
    return proc.returncode, lines


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "jobmonitor", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=30)


# -- one server per file ------------------------------------------------------------


async def test_every_name_of_a_running_servers_database_is_refused(make_server, tmp_path,
                                                                   db_path, db_url):
    first = await make_server(store=db_url)
    other = tmp_path / "other"
    other.mkdir()
    link = other / "link.db"
    link.symlink_to(db_path)
    with pytest.raises(ConfigError) as refused:
        await make_server(store=f"sqlite:///{link}")
    assert str(refused.value) == (
        f"store: {link} is in use by another jobmonitor server (process {os.getpid()}); stop "
        f"that one first, or give this one another --store or --data-dir")
    hard = other / "hard.db"
    os.link(db_path, hard)
    with pytest.raises(ConfigError) as refused:
        await make_server(store=f"sqlite:///{hard}")
    assert str(refused.value).startswith(f"store: {hard} has 2 names (hard links); ")
    # The first server goes on, and hands out each number once.
    assert tid_of((await exchange(first.port, submit("echo")))[0]) == "T0000001"


# -- start-up refusals: one line, status 2 -----------------------------------------------


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _not_sqlite(path: Path) -> None:
    path.write_bytes(b"these are not the jobs you are looking for\n" * 200)


def _damaged(path: Path) -> None:
    with sqlite3.connect(path) as db:  # a real database, its first page then overwritten
        db.executescript(SCHEMA)
    db.close()
    with open(path, "r+b") as file:
        file.seek(100)
        file.write(b"\xff" * 200)


@pytest.mark.parametrize(("damage", "message"), [
    (_empty, "store: {path} is an empty file, not a database (if it held jobs, they are "
             "gone); " + MOVE_AWAY),
    (_not_sqlite, "store: cannot open {path}: file is not a database; it is not an SQLite "
                  "database; " + MOVE_AWAY),
    (_damaged, "store: cannot open {path}: database disk image is malformed; the database is "
               "damaged (jobmonitor serve --check-store says more); " + MOVE_AWAY),
])
def test_a_database_that_cannot_be_used_is_refused_in_one_line(db_path, damage, message):
    damage(db_path)
    status, lines = refused_start("--store", f"sqlite:///{db_path}")
    assert status == 2
    assert lines == ["jobmonitor: " + message.format(path=db_path)]


def test_a_full_disk_at_start_up_is_one_line(db_path):
    status, lines = refused_start("--store", f"sqlite:///{db_path}", limit_file_bytes=2048)
    assert status == 2
    assert lines == [f"jobmonitor: store: cannot open {db_path}: disk I/O error; its disk "
                     f"could not read or write it (is it full, or failing?); free some space "
                     f"or check the disk, then start again"]


# -- numbers are never handed out twice ---------------------------------------------------


async def test_numbers_of_jobs_the_database_lost_are_not_handed_out_again(
        make_server, db_path, db_url, caplog):
    assert await run_jobs(make_server, db_url, 3) == ["T0000001", "T0000002", "T0000003"]
    with sqlite3.connect(db_path) as db:  # the newest two rows are lost
        for table in ("jobs", "line_blocks", "history", "outputs"):
            db.execute(f"DELETE FROM {table} WHERE number > 1")
    db.close()
    again = await make_server(store=db_url)
    assert (f"{db_path} holds jobs up to T0000001, but the last stop recorded T0000003: the "
            f"jobs after T0000001 are missing from it (damage?)") in caplog.text
    again.close()
    await again.wait_closed()
    caplog.clear()
    third = await make_server(store=db_url)  # the database took the mark: no second warning
    assert "missing" not in caplog.text
    assert tid_of((await exchange(third.port, submit("echo")))[0]) == "T0000004"


def test_a_flipped_byte_in_the_log_after_a_crash_does_not_reuse_numbers(db_path):
    server = ServerProcess("--jobs", "tests/support/jobs.py", "--store", f"sqlite:///{db_path}")
    try:
        async def load() -> list[str]:
            return [tid_of((await exchange(server.port, submit("echo", monitor=False)))[0])
                    for _ in range(5)]

        acked = asyncio.run(load())
        server.proc.send_signal(signal.SIGKILL)
        server.proc.communicate(timeout=10)
    finally:
        server.kill()
    assert acked == [f"T{n:07d}" for n in range(1, 6)]
    with open(f"{db_path}-wal", "r+b") as wal:  # a byte of the first frame's page
        wal.seek(32 + 24 + 100)
        byte = wal.read(1)
        wal.seek(-1, os.SEEK_CUR)
        wal.write(bytes([byte[0] ^ 0x40]))

    again = ServerProcess("--jobs", "tests/support/jobs.py", "--store", f"sqlite:///{db_path}")
    try:
        async def check() -> tuple[list[str], str]:
            listed = await exchange(again.port, LIST_ALL)
            return listed, tid_of((await exchange(again.port, submit("echo")))[0])

        listed, fresh = asyncio.run(check())
        assert listed == ["R0000000: 0 jobs"]  # SQLite dropped every commit after the byte
        assert fresh == f"T{NUMBER_BLOCK + 1:07d}"
        assert again.stop() == 0
    finally:
        again.kill()


# -- a row that does not decode -------------------------------------------------------------


async def test_a_job_row_that_does_not_decode_is_logged_once_and_left_out(
        make_server, db_path, db_url, caplog):
    await run_jobs(make_server, db_url, 4)
    with sqlite3.connect(db_path) as db:
        # A queued job (read back at start) whose parameters are cut short, and a
        # job whose project holds bytes that are not UTF-8.
        db.execute("UPDATE jobs SET status = 'Queued', params = '{\"Text\": ' WHERE number = 2")
        db.execute("UPDATE jobs SET project = CAST(x'6563686fff' AS TEXT) WHERE number = 3")
    db.close()
    caplog.set_level(logging.ERROR, "jobmonitor.store")
    again = await make_server(store=db_url)
    for _ in range(2):
        listed = await exchange(again.port, LIST_ALL)
        assert [line[10:18] for line in listed] == ["2 jobs", "T0000001", "T0000004"]
    info = xml_packet("GetJobStatus", {"_sys_TransactionID": "T0000003"})
    assert await exchange(again.port, info) == ["R0005009: Unknown transaction: T0000003"]
    assert [r.getMessage() for r in caplog.records] == [
        "job T0000002 is damaged in the database and left out: params is not JSON "
        "(Expecting value: line 1 column 10 (char 9))",
        "job T0000003 is damaged in the database and left out: project holds text that is "
        "not UTF-8"]
    assert tid_of((await exchange(again.port, submit("echo")))[0]) == "T0000005"


# -- space given back ----------------------------------------------------------------------------


def _made_before(path: Path) -> None:
    """A database as an earlier version made it: without auto_vacuum."""
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(SCHEMA)
    db.close()


def _files_bytes(path: Path) -> int:
    return sum(os.path.getsize(p) for p in (path, Path(f"{path}-wal")) if p.exists())


@pytest.mark.parametrize("made_before", [False, True], ids=["new", "made-before"])
async def test_a_large_purge_gives_the_space_back(make_server, db_path, db_url, made_before):
    if made_before:
        _made_before(db_path)
    server = await make_server(store=db_url, keep_days=1e-9)
    # A monitor is sent only stored lines: once it has them all, so has the file.
    # (random lines: the store compresses repetitive ones to next to nothing)
    lines = await exchange(server.port, submit("random", Count="15000", Width="200"))
    assert lines[-1] == f"J0000001: Transaction {tid_of(lines[0])} ended"
    full = _files_bytes(db_path)
    assert full > 2_000_000
    assert await server.engine.purge_expired() == 1
    assert _files_bytes(db_path) < full / 10
    with sqlite3.connect(db_path) as db:
        assert db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental from now on
    db.close()


# -- jobmonitor serve --check-store ----------------------------------------------------------


async def test_check_store_finds_nothing_wrong_in_a_sound_database(make_server, db_path, db_url):
    await run_jobs(make_server, db_url, 2)
    result = run_cli("serve", "--store", db_url, "--check-store")
    assert (result.returncode, result.stdout, result.stderr) == (
        0, f"{db_path}: no problems found\n", "")


async def test_check_store_lists_damaged_pages_and_rows(make_server, db_path, db_url):
    await run_jobs(make_server, db_url, 3)
    with sqlite3.connect(db_path) as db:
        db.execute("UPDATE jobs SET status = 'Finished?' WHERE number = 2")
    db.close()
    result = run_cli("serve", "--store", db_url, "--check-store")
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"{db_path}: job T0000002 does not decode: 'Finished?' is not a valid JobState",
        f"{db_path}: 1 problem found; the server leaves out jobs that do not decode, but a "
        f"damaged database can lose more: stop the server and " + MOVE_AWAY]

    with sqlite3.connect(db_path) as db:
        root = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'jobs_by_status'"
                          ).fetchone()[0]
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
    db.close()
    with open(db_path, "r+b") as file:  # the first page of an index, overwritten
        file.seek((root - 1) * page_size)
        file.write(b"\x0d\xff\xff\xff\xff\xff\xff\xff")
    result = run_cli("serve", "--store", db_url, "--check-store")
    assert result.returncode == 1, result.stderr
    assert result.stdout.splitlines()[0] == (
        f"{db_path}: Page {root}: btreeInitPage() returns error code 11")


async def test_check_store_lists_blocks_of_lines_that_do_not_read_back(
        make_server, db_path, db_url):
    await run_jobs(make_server, db_url, 3)
    with sqlite3.connect(db_path) as db:
        (first, count), *_ = db.execute("SELECT first_line, count FROM line_blocks "
                                        "WHERE number = 1 AND count > 1").fetchall()
        last = first + count - 1
        db.execute("UPDATE line_blocks SET data = x'789c0102', compressed = 1 "
                   "WHERE number = 2 AND first_line = ?", (first,))
        db.execute("UPDATE line_blocks SET data = CAST('J0000100: one' || char(13, 10) AS BLOB),"
                   " compressed = 0 WHERE number = 3 AND first_line = ?", (first,))
    db.close()
    result = run_cli("serve", "--store", db_url, "--check-store")
    assert result.returncode == 1
    assert result.stdout.splitlines()[:2] == [
        f"{db_path}: job T0000002, lines {first}-{last} do not read back: Error -5 while "
        f"decompressing data: incomplete or truncated stream",
        f"{db_path}: job T0000003, lines {first}-{last}: the block holds 1 lines, not {count}"]


async def test_a_damaged_block_of_lines_is_one_clear_error_reply(make_server, db_path, db_url):
    tids = await run_jobs(make_server, db_url, 2)
    with sqlite3.connect(db_path) as db:
        db.execute("UPDATE line_blocks SET data = x'789c0102', compressed = 1 "
                   "WHERE number = 1 AND first_line = 1")
    db.close()
    server = await make_server(store=db_url)
    def lines_of(tid: str) -> bytes:
        return xml_packet("GetTaskLog", {"_sys_TransactionID": tid, "_sys_FromLine": "1"})

    lines = await exchange(server.port, lines_of(tids[0]))
    assert lines == [f"R0005999: Internal server error: the stored lines of {tids[0]} from "
                     f"line 1 are damaged (Error -5 while decompressing data: incomplete or "
                     f"truncated stream); jobmonitor serve --check-store lists what else is"]
    # The server goes on: the other job's lines read as before.
    assert (await exchange(server.port, lines_of(tids[1])))[0].startswith("R0000000")


def test_check_store_refuses_a_database_in_use(db_path, db_url):
    server = ServerProcess("--jobs", "tests/support/jobs.py", "--store", db_url)
    try:
        result = run_cli("serve", "--store", db_url, "--check-store")
    finally:
        server.kill()
    assert result.returncode == 2
    assert result.stderr == (
        f"jobmonitor: store: {db_path} is in use by another jobmonitor server (process "
        f"{server.proc.pid}); stop that one first, or give this one another --store or "
        f"--data-dir\n")
