"""Stopping with a job whose handler never returns: a plain function in a worker
thread that blocks and never calls the ``Job`` API, which Python cannot stop.

The real CLI process exits soon after the grace period (or at once on a second
signal), and no other server opens the database while that thread may still
run; an embedded server's stop returns, and keeps the database locked until the
thread returns.  The job is recovered at the next start.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import jobmonitor.engine.runner as runner_module
from jobmonitor import ConfigError, Controller
from jobmonitor.client import SyncClient

from ..conftest import MACHINE
from ..support import jobs
from ..support.helpers import Session, exchange, submit, xml_packet
from .test_cli import READY, ROOT, ServerProcess

ENDED = "J0000001: Transaction {} ended"
NOTICE = "J0000190: Server stopping: running jobs have {:g} s to finish"

#: The deaf job's module.  Its server gives a cancelled job CANCEL_WAIT_S to stop
#: (5 s unless the test asks for less).
DEAF_JOBS = '''
import time
from pathlib import Path

import jobmonitor.engine.runner
from jobmonitor import JobMonitor

if {cancel_wait_s!r} is not None:
    jobmonitor.engine.runner.CANCEL_WAIT_S = {cancel_wait_s!r}
app = JobMonitor()


@app.job("deaf", retry_on_restart=True)
def deaf(job):
    """First run: blocks for 40 s without a word.  After a restart: completes."""
    marker = Path(job.params["Marker"])
    if marker.exists():
        job.info("second run")
        return
    marker.write_text("ran")
    job.info("first run")
    time.sleep(40)
'''


def deaf_server(tmp_path: Path, *args: str, cancel_wait_s: float | None = None
                ) -> ServerProcess:
    module = tmp_path / "deaf_jobs.py"
    module.write_text(DEAF_JOBS.format(cancel_wait_s=cancel_wait_s))
    return ServerProcess("--jobs", str(module), "--store", f"sqlite:///{tmp_path / 'jobs.db'}",
                         "--machine-name", MACHINE, *args, memory_store=False)


async def deaf_job_started(tmp_path: Path, server: ServerProcess) -> tuple[Session, str]:
    """Submit the deaf job, monitored; return once its handler is blocked."""
    session = await Session.open(server.port, submit("deaf", Marker=str(tmp_path / "marker")))
    tid = (await session.line()).removeprefix("R0000000: ")
    assert await session.line() == f"J0000100: Machine name: {MACHINE}"
    assert await session.line() == "J0000100: first run"
    return session, tid


def exit_within(server: ServerProcess, timeout_s: float) -> tuple[int, str]:
    """Wait for the process's exit; its status and the rest of its log."""
    try:
        _, err = server.proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        server.kill()
        pytest.fail(f"the server was still running {timeout_s:g} s later")
    return server.proc.returncode, err


async def recovered(tmp_path: Path, tid: str) -> list[str]:
    """Start a new server on the database; the deaf job's stream, replayed."""
    again = deaf_server(tmp_path)
    try:
        lines = await exchange(again.port, xml_packet("MonitorJob",
                                                      {"_sys_TransactionID": tid}))
        assert again.stop() == 0
    finally:
        again.kill()
    return lines


def another_server(tmp_path: Path) -> tuple[bool, str]:
    """Start a second server on the deaf job's database: whether it started (it
    is then killed), and its log."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobmonitor", "serve", "--port", "0", "--jobs",
         str(tmp_path / "deaf_jobs.py"), "--store", f"sqlite:///{tmp_path / 'jobs.db'}"],
        cwd=ROOT, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    assert proc.stderr is not None
    log = []
    started = False
    for line in proc.stderr:  # until it is ready, or has exited
        log.append(line)
        if READY.search(line):
            started = True
            break
    proc.kill()
    proc.communicate()
    return started, "".join(log)


async def test_sigterm_exits_soon_after_the_grace_despite_a_handler_that_never_returns(
        tmp_path):
    grace_s, cancel_wait_s = 0.5, 0.5
    server = deaf_server(tmp_path, "--shutdown-grace-s", str(grace_s),
                         cancel_wait_s=cancel_wait_s)
    try:
        session, tid = await deaf_job_started(tmp_path, server)
        server.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        # Left to recovery (it runs again after a restart): no completion line.
        assert await session.rest() == [NOTICE.format(grace_s)]
        await session.close()
        status, log = exit_within(server, 10)
        took = time.monotonic() - signalled
    finally:
        server.kill()
    print(f"\nexited {took:.2f} s after SIGTERM (grace {grace_s:g} s, "
          f"{cancel_wait_s:g} s to stop once cancelled)")
    assert status == 0
    assert grace_s + cancel_wait_s <= took < grace_s + cancel_wait_s + 3
    assert (f"exiting without waiting for job handlers that did not stop when cancelled: "
            f"{tid} (deaf)\n") in log
    assert (await recovered(tmp_path, tid))[-3:] == [
        "J0000100: second run", "J0000020: Job completed successfully.", ENDED.format(tid)]


async def test_a_second_sigterm_exits_at_once_despite_a_handler_that_never_returns(tmp_path):
    grace_s = 30.0
    server = deaf_server(tmp_path, "--shutdown-grace-s", str(grace_s))
    try:
        session, tid = await deaf_job_started(tmp_path, server)
        server.proc.send_signal(signal.SIGTERM)
        assert await session.line() == NOTICE.format(grace_s)
        server.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        status, log = exit_within(server, 10)
        took = time.monotonic() - signalled
        await session.close()
    finally:
        server.kill()
    print(f"\nexited {took:.2f} s after the second SIGTERM")
    assert status == 128 + signal.SIGTERM
    assert took < 3  # HURRIED_EXIT_S (1 s) and the time to log and exit
    assert "received SIGTERM again: cancelling running jobs now" in log
    assert ("the shutdown did not end within 1 s of the second SIGTERM: exiting now; the "
            f"next start recovers the jobs still running: {tid} (deaf)\n") in log
    assert (await recovered(tmp_path, tid))[-3:] == [
        "J0000100: second run", "J0000020: Job completed successfully.", ENDED.format(tid)]


async def test_no_other_server_opens_the_database_while_the_stuck_one_runs(tmp_path):
    # A silent client keeps the server lingering (linger_s) after it has closed
    # its store: the time a second server would have had to start beside it.
    server = deaf_server(tmp_path, "--shutdown-grace-s", "0.2", "--linger-s", "4",
                         "--idle-timeout-s", "30", "--packet-timeout-s", "30",
                         cancel_wait_s=0.3)
    silent = socket.create_connection(("127.0.0.1", server.port))
    try:
        session, _ = await deaf_job_started(tmp_path, server)
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.stderr is not None
        for line in server.proc.stderr:
            server.log.append(line)
            if "abandoning it" in line:
                break
        await session.rest()
        second_started, second_log = another_server(tmp_path)
        assert server.proc.poll() is None  # (else the second came too late to show anything)
        assert not second_started, "a second server started beside the stuck one"
        assert f"in use by another jobmonitor server (process {server.proc.pid})" in second_log
        await session.close()
        silent.close()  # the server stops lingering, and exits
        status, _ = exit_within(server, 10)
    finally:
        silent.close()
        server.kill()
    assert status == 0


def test_an_embedded_server_stops_and_keeps_the_database_locked_while_a_thread_runs(
        tmp_path, monkeypatch):
    monkeypatch.setattr(runner_module, "CANCEL_WAIT_S", 0.2)
    settings = {"port": 0, "machine_name": MACHINE, "store": f"sqlite:///{tmp_path / 'j.db'}",
                "shutdown_grace_s": 0.1, "linger_s": 1.0}
    packet = {"Marker": str(tmp_path / "marker"), "Key": "deaf"}
    controller = Controller(jobs.app, **settings)
    controller.start()
    try:
        with SyncClient("127.0.0.1", controller.port) as client:
            tx = client.submit("thread-retry", packet)
            assert [next(tx).text, next(tx).text] == [f"Machine name: {MACHINE}", "first run"]
        stopping = time.monotonic()
        controller.stop()
        assert time.monotonic() - stopping < 5  # not after the thread (30 s)
        with pytest.raises(ConfigError, match="is in use by another jobmonitor server"):
            Controller(jobs.app, **settings).start()
        server = controller.server
        assert [job.transaction_id for job in server.stuck_jobs()] == [tx.transaction_id]
    finally:
        jobs.thread_releases["deaf"].set()
    returned = threading.Event()
    server.engine.when_threads_end(returned.set)
    assert returned.wait(10)
    assert server.stuck_jobs() == []

    with Controller(jobs.app, **settings) as again:  # now it may, and runs the job again
        lines = asyncio.run(exchange(again.port, xml_packet(
            "MonitorJob", {"_sys_TransactionID": tx.transaction_id})))
    assert lines[-3:] == ["J0000100: second run", "J0000020: Job completed successfully.",
                          ENDED.format(tx.transaction_id)]
