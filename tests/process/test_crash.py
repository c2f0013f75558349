"""The real CLI server on SQLite: SIGKILL under heavy load; SIGTERM, and SIGTERM twice.

After each, a new server on the same database must hold every job a client
was told about, and every job's stored stream must be whole: line numbers
from 1 with no gap and nothing twice.
"""

from __future__ import annotations

import asyncio
import re
import signal

import pytest

from jobmonitor.store.sqlite.file import NUMBER_BLOCK

from ..support.helpers import Session, exchange, submit, xml_packet
from .test_cli import ServerProcess

MACHINE = "J0000100: Machine name: testhost"
ENDED = "J0000001: Transaction {} ended"
#: Before the cancelled line of a job the server cancelled because it stopped.
SHUTDOWN_CANCEL = "J0005004: Job cancelled: the server is shutting down."
COUNTED = re.compile(r"J0000100: (?:line|tick) (\d+)")
#: Lines said longer ago than this before a crash must have been stored: the
#: group-commit interval (0.05 s) plus the time one commit may take under load.
COMMIT_WINDOW_S = 1.0


def serve(url: str, *args: str) -> ServerProcess:
    # Warnings only: nobody reads the log while the test runs, and hundreds of
    # 'job ended' lines would fill the pipe and block the server.
    return ServerProcess("--jobs", "tests/support/jobs.py", "--store", url,
                         "--machine-name", "testhost", "--log-level", "warning", *args)


def check_stream(tid: str, lines: list[str]) -> int:
    """Check a finished job's replayed stream; return how many counted lines it has."""
    assert lines[0] == MACHINE, lines[:3]
    numbers = [int(m.group(1)) for line in lines if (m := COUNTED.fullmatch(line))]
    assert numbers == list(range(1, len(numbers) + 1)), f"{tid}: a gap or a repeat"
    rest = [line for line in lines[1:] if not COUNTED.fullmatch(line)]
    assert rest in (["J0000020: Job completed successfully.", ENDED.format(tid)],
                    ["J0005002: Job interrupted by a server restart", "J0000022: Job failed.",
                     ENDED.format(tid)]), (tid, rest)
    return len(numbers)


async def replay(port: int, tid: str) -> list[str]:
    lines = await exchange(port, xml_packet("MonitorJob", {"_sys_TransactionID": tid}))
    assert lines[0] == f"R0000000: {tid}", lines[:1]
    return lines[1:]


# -- SIGKILL under heavy load ----------------------------------------------------------------

SUBMITTERS = 8
SUBMITS_EACH = 100


async def try_submit(port: int, packet: bytes) -> str | None:
    """Submit; the transaction ID if the reply came, None if the server died first."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return None
    try:
        writer.write(packet)
        data = await asyncio.wait_for(reader.read(), 10)
    except OSError:
        return None
    finally:
        writer.close()
    match = re.match(rb"R0000000: (T\d{7})\r\n", data)
    return match.group(1).decode() if match else None


async def submitter(port: int, number: int, acked: list[str], stop: asyncio.Event,
                    loaded: asyncio.Event) -> None:
    for n in range(SUBMITS_EACH):
        if stop.is_set():
            return
        tid = await try_submit(port, submit("lines", monitor=False, Count="2000",
                                            YieldEvery="50", N=f"{number}.{n}"))
        if tid is None:
            return
        acked.append(tid)
        if len(acked) >= 20:
            loaded.set()


async def watch_ticks(session: Session, seen: list[tuple[float, int]],
                      enough: asyncio.Event) -> None:
    """Record when each tick arrives, until the connection dies."""
    loop = asyncio.get_running_loop()
    while line := await session.reader.readline():
        match = COUNTED.fullmatch(line.decode().rstrip("\r\n"))
        if match:
            seen.append((loop.time(), int(match.group(1))))
            if len(seen) >= 1500:
                enough.set()


@pytest.mark.timeout(120)
async def test_sigkill_under_heavy_load_keeps_every_acknowledged_job_and_line(tmp_path):
    url = f"sqlite:///{tmp_path / 'crash.db'}"
    server = serve(url, "--max-running", "4")
    loop = asyncio.get_running_loop()
    try:
        ticker = await Session.open(server.port, submit("ticker", Count="100000",
                                                        Interval="0.0005"))
        ticker_tid = (await ticker.line())[10:]
        seen: list[tuple[float, int]] = []
        acked: list[str] = []
        enough, stop, loaded = asyncio.Event(), asyncio.Event(), asyncio.Event()
        watching = asyncio.ensure_future(watch_ticks(ticker, seen, enough))
        load = [asyncio.ensure_future(submitter(server.port, n, acked, stop, loaded))
                for n in range(SUBMITTERS)]
        # Kill only once both are under way: a stream being watched, and submits.
        await asyncio.wait_for(asyncio.gather(enough.wait(), loaded.wait()), 60)
        server.proc.send_signal(signal.SIGKILL)
        killed_at = loop.time()
        stop.set()
        await asyncio.gather(watching, *load, return_exceptions=True)
        server.proc.wait(10)
        await ticker.close()
    finally:
        server.kill()

    again = serve(url)
    try:
        listed = await exchange(again.port, xml_packet("ListJobs", {"_sys_Filter": "all"}))
        stored = {line[10:].split("\t")[0] for line in listed[1:]}
        assert set(acked) | {ticker_tid} <= stored
        for tid in sorted(stored):
            check_stream(tid, await replay(again.port, tid))
        ticks = check_stream(ticker_tid, await replay(again.port, ticker_tid))
        # every tick said a commit window before the crash is there, and the live
        # monitor saw the same ticks in the same order, none twice
        assert [n for _, n in seen] == list(range(1, len(seen) + 1))
        assert ticks >= sum(1 for at, _ in seen if at <= killed_at - COMMIT_WINDOW_S)
        newest = max(int(tid[1:]) for tid in stored)
        fresh = await try_submit(again.port, submit("echo", monitor=False))
        # Never a number used before; after a crash, the first of a block (the
        # numbers reserved beside the database before the crash are skipped).
        assert int(fresh[1:]) > newest and int(fresh[1:]) % NUMBER_BLOCK == 1
        print(f"\nSIGKILL: {len(acked)} acknowledged submits, {len(stored)} jobs stored; "
              f"the monitor saw {len(seen)} ticks, {ticks} stored")
        assert again.stop() == 0
    finally:
        again.kill()


# -- SIGTERM, and SIGTERM twice ----------------------------------------------------------------

NOTICE = "J0000190: Server stopping: running jobs have {:g} s to finish"


async def started(port: int, packet: bytes, first_line: str) -> tuple[Session, str]:
    """Submit with monitoring; return once the job has said ``first_line``."""
    session = await Session.open(port, packet)
    tid = (await session.line())[10:]
    assert await session.line() == MACHINE
    assert await session.line() == first_line
    return session, tid


async def status_of(port: int, tid: str) -> str:
    lines = await exchange(port, xml_packet("GetJobStatus", {"_sys_TransactionID": tid}))
    return next(line for line in lines if line[10:].startswith("Status: "))[18:]


@pytest.mark.timeout(60)
async def test_sigterm_lets_jobs_finish_within_the_grace_then_cancels(tmp_path):
    url = f"sqlite:///{tmp_path / 'term.db'}"
    grace_s = 2.0
    server = serve(url, "--max-running", "2", "--shutdown-grace-s", str(grace_s))
    loop = asyncio.get_running_loop()
    try:
        quick, quick_tid = await started(server.port, submit("ticker", Count="50",
                                                             Interval="0.01"), "J0000100: tick 1")
        stuck, stuck_tid = await started(server.port, submit("wait", Key="never"),
                                         "J0000100: waiting")
        queued = (await exchange(server.port, submit("echo", monitor=False)))[0][10:]
        server.proc.send_signal(signal.SIGTERM)
        signalled = loop.time()
        quick_rest, stuck_rest = await asyncio.gather(quick.rest(), stuck.rest())
        stuck_ended = loop.time() - signalled
        assert NOTICE.format(grace_s) in quick_rest
        assert quick_rest[-2:] == ["J0000020: Job completed successfully.",
                                   ENDED.format(quick_tid)]
        assert stuck_rest == [NOTICE.format(grace_s), SHUTDOWN_CANCEL,
                              "J0000023: Job cancelled by user.", ENDED.format(stuck_tid)]
        assert grace_s <= stuck_ended < grace_s + 5
        await asyncio.gather(quick.close(), stuck.close())
        assert server.proc.wait(15) == 0
    finally:
        server.kill()

    again = serve(url)
    try:
        assert await status_of(again.port, quick_tid) == "Completed"
        assert await status_of(again.port, stuck_tid) == "Cancelled"
        # kept queued for the next start, and run then
        assert await replay(again.port, queued) == [
            MACHINE, NOTICE.format(grace_s), "J0000100: ProjectName=echo",
            "J0000020: Job completed successfully.", ENDED.format(queued)]
        assert again.stop() == 0
    finally:
        again.kill()


@pytest.mark.timeout(60)
async def test_a_second_sigterm_cancels_at_once_and_leaves_the_store_whole(tmp_path):
    url = f"sqlite:///{tmp_path / 'twice.db'}"
    grace_s = 30.0
    marker = tmp_path / "marker"
    server = serve(url, "--max-running", "3", "--shutdown-grace-s", str(grace_s))
    loop = asyncio.get_running_loop()
    try:
        stuck, stuck_tid = await started(server.port, submit("wait", Key="never"),
                                         "J0000100: waiting")
        worker, worker_tid = await started(server.port, submit("thread-wait", Key="never"),
                                           "J0000100: still working")
        retry, retry_tid = await started(server.port, submit("retry-once", Marker=str(marker)),
                                         "J0000100: first run")
        queued = (await exchange(server.port, submit("echo", monitor=False)))[0][10:]
        server.proc.send_signal(signal.SIGTERM)
        assert await stuck.line() == NOTICE.format(grace_s)
        server.proc.send_signal(signal.SIGTERM)
        signalled = loop.time()
        stuck_rest, worker_rest, retry_rest = await asyncio.gather(
            stuck.rest(), worker.rest(), retry.rest())
        assert loop.time() - signalled < 5, "the second signal did not hurry"
        assert stuck_rest == [SHUTDOWN_CANCEL, "J0000023: Job cancelled by user.",
                              ENDED.format(stuck_tid)]
        assert worker_rest[-3:] == [SHUTDOWN_CANCEL, "J0000023: Job cancelled by user.",
                                    ENDED.format(worker_tid)]
        # a job that runs again after a restart is left to recovery: no completion line
        assert retry_rest == [NOTICE.format(grace_s)]
        await asyncio.gather(stuck.close(), worker.close(), retry.close())
        _, log = server.proc.communicate(timeout=15)
        assert server.proc.returncode == 0
        assert "did not stop when cancelled" not in log
    finally:
        server.kill()

    again = serve(url)
    try:
        assert await status_of(again.port, stuck_tid) == "Cancelled"
        assert await status_of(again.port, worker_tid) == "Cancelled"
        retried = await replay(again.port, retry_tid)
        assert retried[-4:] == ["J0000132: Job queued to run again.", "J0000100: second run",
                                "J0000020: Job completed successfully.", ENDED.format(retry_tid)]
        assert (await replay(again.port, queued))[-2:] == [
            "J0000020: Job completed successfully.", ENDED.format(queued)]
        assert again.stop() == 0
    finally:
        again.kill()
