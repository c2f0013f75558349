"""A cluster of real ``jobmonitor serve`` processes on one real PostgreSQL.

Each test starts its nodes on a schema of its own, on 127.0.0.1, with short
heartbeats and leases (0.2 s / 1 s), and talks to them over real sockets.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from jobmonitor.wire.states import JobState

from ..support.helpers import Session, exchange, submit, xml_packet
from ..support.postgres import PostgresServer
from .test_cli import ROOT, ServerProcess, run_cli

HEARTBEAT_S, LEASE_S = "0.2", "1"
TICK = re.compile(r"J0000100: tick (\d+)")
FAILED, CANCELLED = "J0000022: Job failed.", "J0000023: Job cancelled by user."
SUSPENDED, RESUMED = "J0000130: Job suspended.", "J0000131: Job resumed."


def ended(tid: str) -> str:
    return f"J0000001: Transaction {tid} ended"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Nodes:
    """The node processes of one test, killed at its end."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.procs: list[tuple[str, ServerProcess]] = []  # (two may share a name)

    def start(self, name: str, *args: str) -> ServerProcess:
        node = ServerProcess(
            "--jobs", "tests/support/jobs.py", "--store", self.url, "--node-name", name,
            "--port", str(free_port()), "--cluster-heartbeat-s", HEARTBEAT_S,
            "--cluster-lease-s", LEASE_S, "--log-level", "error", "--shutdown-grace-s", "0.5",
            *args)
        self.procs.append((name, node))
        return node

    def kill_all(self) -> None:
        """Kill every node; print what each logged (errors only), for a failing test."""
        for name, node in self.procs:
            if node.proc.poll() is None:
                node.proc.send_signal(signal.SIGCONT)  # (a stopped one dies only once woken)
                node.proc.kill()
            _, err = node.proc.communicate()
            if err:
                print(f"--- node {name} logged:\n{err[-3000:]}")


@pytest.fixture
def nodes(pg_url: str) -> Iterator[Nodes]:
    started = Nodes(pg_url)
    yield started
    started.kill_all()


async def submitted(port: int, project: str, **variables: str) -> str:
    lines = await exchange(port, submit(project, monitor=False, **variables))
    assert len(lines) == 1 and lines[0].startswith("R0000000: T"), lines
    return lines[0].removeprefix("R0000000: ")


async def command(port: int, name: str, tid: str) -> list[str]:
    return await exchange(port, xml_packet(name, {"_sys_TransactionID": tid}))


async def monitor(port: int, tid: str, from_line: int = 1) -> Session:
    session = await Session.open(port, xml_packet(
        "MonitorJob", {"_sys_TransactionID": tid, "_sys_FromLine": str(from_line)}))
    assert await session.line() == f"R0000000: {tid}"
    return session


async def until_line(session: Session, wanted: str, seen: list[str]) -> float:
    """Read lines into ``seen`` until ``wanted``; return when it came (monotonic)."""
    while True:
        line = await session.line()
        seen.append(line)
        if line == wanted:
            return time.monotonic()


async def replay(port: int, tid: str, from_line: int = 1) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(xml_packet("MonitorJob", {"_sys_TransactionID": tid,
                                           "_sys_FromLine": str(from_line)}))
    try:
        data = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, rest = data.partition(b"\r\n")
    assert head == f"R0000000: {tid}".encode(), head
    return rest


def texts(data: bytes) -> list[str]:
    return data.decode().split("\r\n")[:-1]


def ticks(lines: list[str]) -> list[int]:
    return [int(m.group(1)) for line in lines if (m := TICK.fullmatch(line))]


async def accepting(port: int) -> None:
    """Return once ``port`` accepts connections (within a few seconds)."""
    for _ in range(300):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.01)
            continue
        writer.close()
        return
    raise AssertionError(f"nothing listens on port {port}")


async def until_running(port: int, tids: list[str], count: int) -> list[dict[str, object]]:
    """The jobs' statuses once ``count`` of them are running (within a few seconds)."""
    for _ in range(300):
        found = [await status(port, tid) for tid in tids]
        if sum(job["Status"] == JobState.PROCESSING.number for job in found) >= count:
            return found
        await asyncio.sleep(0.02)
    raise AssertionError(f"fewer than {count} of {tids} running: {found}")


async def status(port: int, tid: str) -> dict[str, object]:
    (reply,) = await exchange(port, xml_packet(
        "GetJobStatus", {"_sys_TransactionID": tid, "_sys_Format": "json"}))
    data: dict[str, object] = json.loads(reply.removeprefix("R0000000: "))
    return data


# -- work shared ----------------------------------------------------------------------------


async def test_a_submit_on_a_busy_node_runs_on_another_and_a_third_watches_it(nodes):
    a = nodes.start("a", "--max-running", "1")
    b = nodes.start("b")
    c = nodes.start("c")
    blocker = await submitted(a.port, "checked-ticker", Count="1000")  # a's one slot
    tid = await submitted(a.port, "checked-ticker", Count="20", Interval="0.02")
    watcher = await monitor(c.port, tid)
    seen: list[str] = []
    await until_line(watcher, ended(tid), seen)
    await watcher.close()
    # (b or c, whichever claimed it first, says so after a's first line)
    assert seen[0] == "J0000100: Machine name: a"
    assert seen[1] in ("J0000100: Machine name: b", "J0000100: Machine name: c")
    assert ticks(seen) == list(range(1, 21))  # every line once, in order
    assert seen[-2:] == ["J0000020: Job completed successfully.", ended(tid)]
    # Re-attaching from any line, on any node, gives the same bytes.
    whole = await replay(c.port, tid)
    assert texts(whole) == seen
    for port, line in ((a.port, 5), (b.port, 12), (c.port, len(seen))):
        again = await replay(port, tid, line)
        assert again == b"".join(part + b"\r\n" for part in whole.split(b"\r\n")[line - 1:-1])
    # The listing of active jobs and the task log are the cluster's, on any node.
    active = await exchange(c.port, xml_packet("ListJobs", {"_sys_Format": "json"}))
    assert [job["Id"] for job in json.loads(active[0][10:])["Jobs"]] == [blocker]
    log = await exchange(b.port, xml_packet("GetTaskLog"))
    assert f"{tid}\tchecked-ticker\tcomplete" in "\n".join(log)
    assert await command(b.port, "CancelJob", blocker) == [f"R0000000: {blocker}"]


async def test_a_live_monitor_reattaching_on_another_node_misses_nothing(nodes):
    b = nodes.start("b")
    c = nodes.start("c")
    tid = await submitted(b.port, "checked-ticker", Count="30", Interval="0.03")
    first = await monitor(c.port, tid)
    seen: list[str] = []
    await until_line(first, "J0000100: tick 10", seen)
    await first.close()
    second = await monitor(b.port, tid, len(seen) + 1)  # (from the line after the last seen)
    await until_line(second, ended(tid), seen)
    await second.close()
    assert ticks(seen) == list(range(1, 31))
    assert texts(await replay(c.port, tid)) == seen


async def test_server_sent_events_on_another_node_follow_the_job_to_its_end(nodes):
    a = nodes.start("a")
    web_port = free_port()
    b = nodes.start("b", "--http-port", str(web_port))
    await accepting(web_port)  # (the HTTP listener starts just after the TCP one says ready)
    tid = await submitted(a.port, "checked-ticker", Count="15", Interval="0.03")
    reader, writer = await asyncio.open_connection("127.0.0.1", web_port)
    writer.write(f"GET /api/v1/jobs/{tid}/events HTTP/1.0\r\n\r\n".encode())
    try:
        body = (await asyncio.wait_for(reader.read(), 10)).decode()
    finally:
        writer.close()
    ids = [int(line[4:]) for line in body.splitlines() if line.startswith("id: ")]
    data = [line[6:] for line in body.splitlines() if line.startswith("data: J")]
    assert ids == list(range(1, len(data) + 1))  # every line once, in order
    assert data == texts(await replay(b.port, tid))
    assert ticks(data) == list(range(1, 16)) and data[-1] == ended(tid)
    assert "event: end" in body


async def test_two_nodes_racing_one_job_token_make_one_job(nodes):
    a, b = nodes.start("a"), nodes.start("b")
    for n in range(5):
        packet = submit("echo", monitor=False, _sys_JobToken=f"race-{n}")
        first, second = await asyncio.gather(exchange(a.port, packet), exchange(b.port, packet))
        assert first == second and first[0].startswith("R0000000: T"), (first, second)
    listing = await exchange(a.port, xml_packet("ListJobs", {"_sys_Filter": "all"}))
    assert listing[0].endswith("5 jobs"), listing[0]


async def test_two_monitored_submits_racing_one_job_token_both_follow_the_one_job(nodes):
    a, b = nodes.start("a"), nodes.start("b")
    packet = submit("checked-ticker", _sys_JobToken="watched", Count="5", Interval="0.02")
    first, second = await asyncio.gather(exchange(a.port, packet), exchange(b.port, packet))
    assert first[0] == second[0] and first[0].startswith("R0000000: T"), (first, second)
    tid = first[0].removeprefix("R0000000: ")
    assert first[1:] == second[1:] == texts(await replay(a.port, tid))
    assert first[-1] == ended(tid) and ticks(first) == [1, 2, 3, 4, 5]


async def test_a_user_cannot_reach_another_users_job_through_another_node(nodes, tmp_path):
    from jobmonitor.users import hash_password

    digest = hash_password("pw")
    config = tmp_path / "users.toml"
    config.write_text("".join(f'[users.{name}]\npassword_hash = "{digest}"\n{extra}'
                              for name, extra in (("ann", ""), ("bob", ""),
                                                  ("root", 'role = "admin"\n'))))
    a = nodes.start("a", "--config", str(config))
    b = nodes.start("b", "--config", str(config))

    def as_user(user: str, command_name: str, **variables: str) -> bytes:
        return xml_packet(command_name, {"_sys_User": user, "_sys_Password": "pw", **variables})

    (reply,) = await exchange(a.port, as_user("ann", "SubmitJob", ProjectName="checked-ticker",
                                              Count="1000", _sys_JobToken="mine"))
    tid = reply.removeprefix("R0000000: ")
    for name in ("GetJobStatus", "CancelJob", "SuspendJob", "MonitorJob", "DeleteJob",
                 "RetrieveJob", "RerunJob"):
        assert await exchange(b.port, as_user("bob", name, _sys_TransactionID=tid)) == [
            f"R0005009: Unknown transaction: {tid}"], name
    assert (await exchange(b.port, as_user("bob", "GetJobStatus", _sys_JobToken="mine")))[0] \
        .startswith("R0005009")
    assert await exchange(b.port, as_user("bob", "ListJobs")) == ["R0000000: 0 jobs"]
    assert await exchange(b.port, as_user("bob", "ListNodes")) == [
        "R0005013: Permission denied: ListNodes is for administrators"]
    assert (await exchange(b.port, as_user("root", "ListNodes")))[0] == "R0000000- 2 nodes"
    assert await exchange(b.port, as_user("ann", "CancelJob", _sys_JobToken="mine")) == [
        f"R0000000: {tid}"]


async def test_cancel_suspend_and_resume_reach_the_node_running_the_job(nodes):
    b, c = nodes.start("b"), nodes.start("c")
    tid = await submitted(b.port, "checked-ticker", Count="1000", Interval="0.02")
    watcher = await monitor(b.port, tid)  # on the node that runs it
    seen: list[str] = []
    await until_line(watcher, "J0000100: tick 3", seen)
    delays = {}
    for name, reply, line in (("SuspendJob", f"{tid} suspend requested", SUSPENDED),
                              ("ResumeJob", f"{tid} resumed", RESUMED),
                              ("CancelJob", tid, CANCELLED)):
        asked = time.monotonic()
        assert await command(c.port, name, tid) == [f"R0000000: {reply}"]
        delays[name] = await until_line(watcher, line, seen) - asked
    print(f"command on another node to the holder's line: "
          f"{ {name: round(delay * 1000) for name, delay in delays.items()} } ms")
    assert max(delays.values()) < 1.0
    assert await watcher.line() == ended(tid)
    await watcher.close()
    assert await command(c.port, "CancelJob", tid) == [
        f"R0005010: Invalid state for this request: {tid} has already ended (Cancelled)"]


async def test_a_command_on_a_queued_job_is_stored_before_its_reply(nodes):
    a = nodes.start("a", "--max-running", "1")
    b = nodes.start("b", "--max-running", "1")
    busy_a = await submitted(a.port, "checked-ticker", Count="1000")  # a's one slot
    busy_b = await submitted(b.port, "checked-ticker", Count="1000")  # b's one slot
    waiting = await submitted(a.port, "echo")  # nobody has a slot: it waits unheld
    assert await command(b.port, "SuspendJob", waiting) == [f"R0000000: {waiting} suspended"]
    # At once, on the other node: the job is suspended, as b said.
    assert await command(a.port, "ResumeJob", waiting) == [f"R0000000: {waiting} resumed"]
    for busy, node in ((busy_a, a), (busy_b, b)):
        assert await command(node.port, "CancelJob", busy) == [f"R0000000: {busy}"]
    lines = texts(await replay(a.port, waiting))  # (to its end)
    assert lines[2:4] == [SUSPENDED, RESUMED]
    assert lines[-2:] == ["J0000020: Job completed successfully.", ended(waiting)]


async def test_a_job_resumed_on_a_busy_node_runs_on_an_idle_one(nodes):
    a = nodes.start("a", "--max-running", "1")
    b = nodes.start("b", "--max-running", "1")
    busy_a = await submitted(a.port, "checked-ticker", Count="1000")
    await submitted(b.port, "checked-ticker", Count="1000")
    waiting = await submitted(a.port, "echo")  # nobody has a slot: it waits unheld
    assert await command(b.port, "SuspendJob", waiting) == [f"R0000000: {waiting} suspended"]
    assert await command(a.port, "CancelJob", busy_a) == [f"R0000000: {busy_a}"]  # a is idle
    # b holds the suspended job and has no slot: once resumed, a runs it.
    assert await command(a.port, "ResumeJob", waiting) == [f"R0000000: {waiting} resumed"]
    lines = texts(await replay(a.port, waiting))  # (to its end)
    assert lines[-2:] == ["J0000020: Job completed successfully.", ended(waiting)]
    assert (await status(a.port, waiting))["WorkerId"] == "a"


async def test_a_cancel_right_after_a_resume_on_another_node_is_never_lost(nodes):
    a = nodes.start("a", "--max-running", "1")
    b = nodes.start("b", "--max-running", "1")
    await submitted(a.port, "checked-ticker", Count="1000")  # a's one slot
    await submitted(b.port, "checked-ticker", Count="1000")  # b's one slot
    for _ in range(8):
        waiting = await submitted(a.port, "echo")  # nobody has a slot: it waits unheld
        assert await command(b.port, "SuspendJob", waiting) == [f"R0000000: {waiting} suspended"]
        # b resumes it and, having no slot, lets it go: the cancel must find it.
        assert await command(a.port, "ResumeJob", waiting) == [f"R0000000: {waiting} resumed"]
        assert await command(a.port, "CancelJob", waiting) == [f"R0000000: {waiting}"]
        lines = texts(await replay(a.port, waiting))  # (to its end)
        assert lines[-2:] == [CANCELLED, ended(waiting)]


async def test_a_cancel_at_once_with_a_resume_on_another_node_is_never_lost(nodes):
    a = nodes.start("a", "--max-running", "1")
    b = nodes.start("b", "--max-running", "1")
    await submitted(a.port, "checked-ticker", Count="1000")  # a's one slot
    await submitted(b.port, "checked-ticker", Count="1000")  # b's one slot
    for _ in range(10):
        waiting = await submitted(a.port, "echo")  # nobody has a slot: it waits unheld
        assert await command(b.port, "SuspendJob", waiting) == [f"R0000000: {waiting} suspended"]
        # Both asked of b at once; b may let go of the job as it resumes it.
        resumed, cancelled = await asyncio.gather(command(a.port, "ResumeJob", waiting),
                                                  command(a.port, "CancelJob", waiting))
        assert cancelled == [f"R0000000: {waiting}"], resumed
        lines = texts(await asyncio.wait_for(replay(a.port, waiting), 5))
        assert lines[-2:] == [CANCELLED, ended(waiting)]


async def test_a_node_claims_no_more_of_a_queue_than_it_may_run(nodes, tmp_path):
    config = tmp_path / "queues.toml"
    config.write_text("[queues.reports]\nmax_running = 1\n")
    b = nodes.start("b", "--config", str(config), "--max-running", "1")
    busy_b = await submitted(b.port, "checked-ticker", Count="1000")
    reports = [await submitted(b.port, "checked-ticker", Count="1000", _sys_QueueName="reports")
               for _ in range(2)]
    a = nodes.start("a", "--config", str(config), "--max-running", "4")  # claims at its start
    await until_running(a.port, reports, 1)
    assert await command(b.port, "CancelJob", busy_b) == [f"R0000000: {busy_b}"]
    # a runs one report and has let the other go: b, free now, runs it.
    found = await until_running(a.port, reports, 2)
    assert sorted(str(job["WorkerId"]) for job in found) == ["a", "b"]
    for tid in reports:
        assert await command(a.port, "CancelJob", tid) == [f"R0000000: {tid}"]


async def paused_queues(port: int) -> set[str]:
    (listed,) = await exchange(port, xml_packet("ListQueues", {"_sys_Format": "json"}))
    return {str(row["Name"]) for row in json.loads(listed.removeprefix("R0000000: "))
            if row["Paused"]}


async def test_a_queue_paused_on_one_node_is_paused_on_every_node(nodes, tmp_path):
    config = tmp_path / "queues.toml"
    config.write_text("[queues.reports]\nmax_running = 4\n")
    a, b = nodes.start("a", "--config", str(config)), nodes.start("b", "--config", str(config))
    pause = xml_packet("PauseQueue", {"_sys_QueueName": "reports"})
    assert await exchange(a.port, pause) == ["R0000000: Queue reports paused"]
    for _ in range(300):  # (b hears of it within milliseconds: a notification)
        if await paused_queues(b.port) == {"reports"}:
            break
        await asyncio.sleep(0.01)
    assert await paused_queues(b.port) == {"reports"}
    tid = await submitted(b.port, "checked-ticker", Count="1000", _sys_QueueName="reports")
    assert (await status(a.port, tid))["Status"] == JobState.QUEUED.number  # (stored, unrun)
    resume = xml_packet("ResumeQueue", {"_sys_QueueName": "reports"})
    assert await exchange(b.port, resume) == ["R0000000: Queue reports resumed"]
    await until_running(a.port, [tid], 1)
    assert await paused_queues(a.port) == set()
    assert await command(a.port, "CancelJob", tid) == [f"R0000000: {tid}"]


async def test_list_nodes_shows_every_live_node(nodes):
    procs = [nodes.start(name) for name in ("a", "b", "c")]
    lines = await exchange(procs[1].port, xml_packet("ListNodes"))
    assert lines[0] == "R0000000- 3 nodes"
    rows = [line[10:].split("\t") for line in lines[1:]]
    assert [(row[0], row[1]) for row in rows] == [
        (name, f"127.0.0.1:{proc.port}") for name, proc in zip("abc", procs, strict=True)]
    assert all(float(row[3]) < 2 and row[4] == "0" for row in rows)


async def test_a_node_on_port_0_shows_the_port_it_listens_on(nodes):
    a, b = nodes.start("a", "--port", "0"), nodes.start("b")
    lines = await exchange(b.port, xml_packet("ListNodes"))
    assert [line[10:].split("\t")[:2] for line in lines[1:]] == [
        ["a", f"127.0.0.1:{a.port}"], ["b", f"127.0.0.1:{b.port}"]]


async def test_a_second_live_node_with_the_same_name_is_warned_of(nodes):
    first = nodes.start("twin", "--log-level", "warning")
    second = nodes.start("twin", "--log-level", "warning")
    assert not any("named twin" in line for line in first.log)
    assert sum("another live node of this cluster is named twin" in line
               for line in second.log) == 1
    lines = await exchange(first.port, xml_packet("ListNodes"))
    assert lines[0] == "R0000000- 2 nodes"  # (both serve: a warning, not a refusal)


async def test_jobmonitor_nodes_prints_the_cluster(nodes):
    a, b = nodes.start("a"), nodes.start("b")
    result = await asyncio.get_running_loop().run_in_executor(
        None, run_cli, "nodes", "--port", str(b.port))
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()]
    assert rows[0] == ["NODE", "ADDRESS", "STARTED", "HEARTBEAT", "AGE", "RUNNING"]
    assert [(row[0], row[1], row[-1]) for row in rows[1:]] == [
        ("a", f"127.0.0.1:{a.port}", "0"), ("b", f"127.0.0.1:{b.port}", "0")]


async def test_a_stopping_node_lets_the_others_have_the_jobs_it_held(nodes):
    a = nodes.start("a", "--max-running", "1")
    b = nodes.start("b", "--max-running", "1")
    busy_a = await submitted(a.port, "checked-ticker", Count="1000")
    busy_b = await submitted(b.port, "checked-ticker", Count="1000")
    waiting = await submitted(a.port, "echo")  # nobody has a slot: it waits unheld
    assert await command(a.port, "SuspendJob", waiting) == [f"R0000000: {waiting} suspended"]
    assert a.stop() == 0  # a held the suspended job, and ran busy_a
    listed = await exchange(b.port, xml_packet("ListNodes"))
    assert [line[10:].split("\t")[0] for line in listed[1:]] == ["b"]  # a left at once
    a_lines = texts(await replay(b.port, busy_a))
    assert a_lines[-3:] == ["J0005004: Job cancelled: the server is shutting down.",
                            CANCELLED, ended(busy_a)]
    assert await command(b.port, "CancelJob", busy_b) == [f"R0000000: {busy_b}"]
    assert await command(b.port, "ResumeJob", waiting) == [f"R0000000: {waiting} resumed"]
    lines = texts(await replay(b.port, waiting))  # (to its end)
    assert lines == ["J0000100: Machine name: a", SUSPENDED,
                     "J0000190: Server stopping: running jobs have 0.5 s to finish",
                     "J0000100: Machine name: b", RESUMED, "J0000100: ProjectName=echo",
                     "J0000020: Job completed successfully.", ended(waiting)]


async def test_check_store_on_postgresql_does_not_print_the_password(nodes):
    nodes.start("a")  # (it makes the tables)
    url = nodes.url.replace("postgres@", "postgres:s3cret-pw@", 1)  # (the server trusts all)
    result = await asyncio.get_running_loop().run_in_executor(
        None, run_cli, "serve", "--store", url, "--check-store")
    assert result.returncode == 0, result.stderr
    assert "s3cret-pw" not in result.stdout + result.stderr
    assert result.stdout.endswith(": no problems found\n"), result.stdout
    assert result.stdout.startswith("PostgreSQL postgres@127.0.0.1:"), result.stdout


def test_serve_on_postgresql_without_its_driver_says_what_to_install_in_one_line(tmp_path):
    hidden = tmp_path / "asyncpg"  # (an asyncpg that cannot be imported, first on the path)
    hidden.mkdir()
    (hidden / "__init__.py").write_text("raise ImportError('No module named asyncpg')\n")
    result = subprocess.run(
        [sys.executable, "-m", "jobmonitor", "serve", "--jobs", "tests/support/jobs.py",
         "--store", "postgresql://jm@127.0.0.1:1/jobs"], cwd=ROOT, capture_output=True,
        text=True, timeout=30, env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "jobmonitor: store: a postgresql:// store needs its driver: install the PostgreSQL "
        "driver: pip install 'jobmonitor[postgres]'"]


async def test_a_stopping_nodes_retry_on_restart_job_runs_again_on_another(nodes, tmp_path):
    a, b = nodes.start("a"), nodes.start("b")
    tid = await submitted(a.port, "retry-once", Marker=str(tmp_path / "marker"))
    watcher = await monitor(b.port, tid)
    seen: list[str] = []
    await until_line(watcher, "J0000100: first run", seen)
    assert a.stop() == 0  # its job is left to be taken over, as a restart leaves it
    await until_line(watcher, ended(tid), seen)
    await watcher.close()
    assert seen[-6:] == ["J0005002: Job interrupted: node a stopped",
                         "J0000132: Job queued to run again.", "J0000100: Machine name: b",
                         "J0000100: second run", "J0000020: Job completed successfully.",
                         ended(tid)]


# -- failures -------------------------------------------------------------------------------


async def test_a_killed_nodes_job_ends_within_5_s_and_its_queued_work_runs_elsewhere(nodes):
    a = nodes.start("a", "--max-running", "1")
    b = nodes.start("b", "--max-running", "1")
    running = await submitted(a.port, "checked-ticker", Count="1000")
    # b is busy for about a second
    blocker = await submitted(b.port, "checked-ticker", Count="10", Interval="0.1")
    queued = await submitted(a.port, "echo", Key="queued")  # neither has a slot: it waits
    watcher = await monitor(b.port, running)
    seen: list[str] = []
    await until_line(watcher, "J0000100: tick 2", seen)
    killed = time.monotonic()
    a.proc.kill()
    await until_line(watcher, "J0005002: Job interrupted: node a stopped", seen)
    detected = time.monotonic() - killed
    assert await watcher.line() == FAILED
    assert await watcher.line() == ended(running)
    print(f"SIGKILL of the node running the job to J0005002 on another: {detected:.2f} s")
    assert detected < 5.0
    await watcher.close()
    queued_lines = texts(await replay(b.port, queued))  # (to its end)
    assert queued_lines[1] == "J0000100: Machine name: b"  # run by b, once it had a slot
    assert queued_lines[-2:] == ["J0000020: Job completed successfully.", ended(queued)]
    assert (await status(b.port, blocker))["WorkerId"] == "b"


async def test_a_claimed_jobs_interruption_names_the_node_that_ran_it(nodes):
    a = nodes.start("a", "--max-running", "1")
    b = nodes.start("b", "--max-running", "1")
    await submitted(a.port, "checked-ticker", Count="1000")  # a's one slot
    tid = await submitted(a.port, "checked-ticker", Count="1000")  # b claims it
    watcher = await monitor(a.port, tid)
    seen: list[str] = []
    await until_line(watcher, "J0000100: Machine name: b", seen)
    b.proc.kill()
    await until_line(watcher, FAILED, seen)
    await watcher.close()
    assert seen[-2] == "J0005002: Job interrupted: node b stopped"
    assert (await status(a.port, tid))["WorkerId"] == "b"


async def test_a_frozen_node_is_taken_over_and_writes_nothing_when_it_wakes(nodes):
    a = nodes.start("a")
    b = nodes.start("b")
    tid = await submitted(a.port, "checked-ticker", Count="1000", Interval="0.02")
    watcher = await monitor(b.port, tid)
    on_a = await monitor(a.port, tid)  # a monitor on the node that freezes
    seen: list[str] = []
    await until_line(watcher, "J0000100: tick 3", seen)
    stopped = time.monotonic()
    a.proc.send_signal(signal.SIGSTOP)
    await until_line(watcher, "J0005002: Job interrupted: node a stopped", seen)
    taken = time.monotonic() - stopped
    assert [await watcher.line(), await watcher.line()] == [FAILED, ended(tid)]
    await watcher.close()
    print(f"SIGSTOP of the node running the job to its takeover: {taken:.2f} s")
    assert taken < 15.0
    stored = await replay(b.port, tid)
    a.proc.send_signal(signal.SIGCONT)
    for _ in range(100):  # a notices at its next heartbeat or commit
        counts = await exchange(a.port, xml_packet("GetJobQueueLen"))
        if counts[-1] == "R0000000: Running: 0":
            break
        await asyncio.sleep(0.05)
    assert counts[-1] == "R0000000: Running: 0"  # its copy of the run has stopped
    await asyncio.sleep(0.5)  # (a few of a's commit intervals: nothing more is written)
    assert await replay(b.port, tid) == stored
    assert await replay(a.port, tid) == stored
    # a's own monitor was handed over to the store: it got the same lines, once each.
    seen_on_a: list[str] = []
    await until_line(on_a, ended(tid), seen_on_a)
    await on_a.close()
    assert seen_on_a == texts(stored)
    names = [line[10:].split("\t")[0] for line in
             (await exchange(b.port, xml_packet("ListNodes")))[1:]]
    assert names == ["a", "b"]  # a joined again


async def test_a_postgresql_restart_under_load_loses_no_acknowledged_job(
        nodes, postgres_server: PostgresServer):
    a, b = nodes.start("a"), nodes.start("b")
    acked: list[str] = []
    refused: list[str] = []
    stop = asyncio.Event()

    async def submitter(port: int) -> None:
        while not stop.is_set():
            try:
                lines = await exchange(port, submit("checked-ticker", monitor=False, Count="5",
                                                    Interval="0.01"))
            except (OSError, TimeoutError):
                continue
            if lines and lines[0].startswith("R0000000: T"):
                acked.append(lines[0].removeprefix("R0000000: "))
            else:
                refused.extend(lines)
                await asyncio.sleep(0.05)

    load = [asyncio.ensure_future(submitter(port)) for port in (a.port, b.port) * 2]
    while len(acked) < 20:
        await asyncio.sleep(0.02)
    await asyncio.get_running_loop().run_in_executor(None, postgres_server.restart)
    before = len(acked)
    for _ in range(300):
        if len(acked) > before + 20:
            break
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.gather(*load)
    assert len(acked) > before, "no submit succeeded after the restart"
    assert all(line.startswith("R0005011") for line in refused), refused[:3]
    for tid in acked:
        lines = texts(await replay(a.port, tid))  # (to its end)
        assert lines[-1] == ended(tid), (tid, lines)
        assert ticks(lines) == list(range(1, 6)), (tid, lines)
    print(f"{len(acked)} jobs acknowledged around the restart, {len(refused)} submits refused")
