"""The client library: result parsing without sockets, then against real servers on port 0."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import signal
import threading
import time
from collections.abc import AsyncIterator

import pytest

import jobmonitor.client as client_module
from jobmonitor import JobState, Outcome, Reply, Status
from jobmonitor.client import (
    Client,
    JobInfo,
    JobStatus,
    Output,
    Progress,
    ProtocolError,
    QueueLength,
    Reattach,
    ReplyError,
    StreamLine,
    SyncClient,
    TaskLogEntry,
    connect,
)
from jobmonitor.client.decoding import (
    info_from_json,
    projects_from_lines,
    queue_length_from_lines,
    status_from_json,
    task_log_from_lines,
)
from jobmonitor.wire.packet import Packet, PacketParser

from ..conftest import MACHINE, release
from ..process.test_cli import ServerProcess
from ..support import jobs
from ..support.helpers import exchange, xml_packet
from .test_security import certificate  # noqa: F401  (a fixture)


@pytest.fixture
def unused_port() -> int:
    """A port nothing listens on (bound once by us, then released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- results, without sockets ------------------------------------------------------


def test_public_names_are_exported():
    for name in client_module.__all__:
        assert hasattr(client_module, name), name


@pytest.mark.parametrize(("text", "progress"), [
    ("Progress: 3/10 (30%)", Progress(3, 10, 30, "")),
    ("Progress: 4/4 (100%) all done", Progress(4, 4, 100, "all done")),
    ("Progress: 5/0", Progress(5, 0, 0, "")),
    ("Progress of sorts", None),
])
def test_progress_lines_are_parsed(text, progress):
    assert StreamLine(3, 110, text).progress == progress


def test_stream_line_properties():
    assert StreamLine(1, 5000, "x").is_error and not StreamLine(1, 100, "x").is_error
    assert StreamLine(5, 21, "Job only partially completed.").outcome is Outcome.PARTIAL
    assert StreamLine(5, 100, "x").outcome is None
    assert StreamLine(6, 1, "Transaction T0000001 ended").is_end
    assert StreamLine(2, 5000, "a", more=True).wire_text() == "J0005000- a"
    assert StreamLine(2, 100, "info").progress is None


STATUS = {
    "Id": "T0000007", "Type": "Build Docs", "JobName": "nightly", "Status": 2,
    "Identity": "ann", "WorkerId": "w1", "StatusMessage": "Compiling",
    "Created": "2026-11-21T05:30:00Z", "Started": "2026-11-21T05:30:01Z",
    "Updated": "2026-11-21T05:30:02Z", "Completed": None, "Estimated": None,
    "Progress": {"Done": 2, "Total": 4, "Percent": 50, "Message": "half"},
    "JobData": [{"Name": "out.pdf", "Uri": "file:///o/out.pdf", "MediaType": "application/pdf"}],
    "Parameters": r"a=1;b=x\;y\=z;c\\=d", "PollAfter": 2, "Lines": 9,
}


def test_status_json_becomes_a_typed_status():
    status = status_from_json(STATUS)
    assert status.transaction_id == "T0000007" and status.project == "Build Docs"
    assert status.status is JobState.PROCESSING and not status.is_final
    assert status.created == dt.datetime(2026, 11, 21, 5, 30, tzinfo=dt.UTC)
    assert status.completed is None
    assert status.progress == Progress(2, 4, 50, "half")
    assert status.outputs == (Output("out.pdf", "file:///o/out.pdf", "application/pdf"),)
    assert dict(status.parameters) == {"a": "1", "b": "x;y=z", "c\\": "d"}
    assert status.poll_after_s == 2.0 and status.lines == 9


def test_unknown_status_number_is_none_and_history_is_read():
    info = info_from_json({**STATUS, "Status": 99, "History": [
        {"Stage": "job", "Status": "queued", "Timestamp": "2026-11-21T05:30:00Z",
         "Date": None, "Info": None}]})
    assert isinstance(info, JobInfo) and info.status is None
    assert info.history[0].stage == "job" and info.history[0].info is None


@pytest.mark.parametrize("bad", [[], {"Status": 1}, {**STATUS, "Status": "x"},
                                 {**STATUS, "Created": "yesterday"}, {**STATUS, "JobData": [{}]}])
def test_bad_status_objects_are_protocol_errors(bad):
    with pytest.raises(ProtocolError):
        status_from_json(bad)


@pytest.mark.parametrize("lines", [[], ["2 projects", "a"], ["1 project", "a"]])
def test_bad_project_lists_are_protocol_errors(lines):
    with pytest.raises(ProtocolError):
        projects_from_lines(lines)


async def test_projects_are_the_registered_handlers(server):
    projects = await Client("127.0.0.1", server.port).projects()
    assert projects == sorted(jobs.app.handlers) and "echo" in projects


def test_queue_length_and_task_log_lines_are_read():
    assert queue_length_from_lines(["Queued: 2", "Running: 8"]) == QueueLength(2, 8)
    assert task_log_from_lines([
        "2 events", "2026-11-21T05:06:02Z\tT0000001\tcount\tqueued",
        "2026-11-21T05:06:03Z\tT0000001\tcount\tstart"])[1] == TaskLogEntry(
        dt.datetime(2026, 11, 21, 5, 6, 3, tzinfo=dt.UTC), "T0000001", "count",
        "start")
    assert task_log_from_lines(["0 events"]) == []


@pytest.mark.parametrize("lines", [["Queued: 2"], ["Queued: two", "Running: 1"], []])
def test_bad_queue_lengths_are_protocol_errors(lines):
    with pytest.raises(ProtocolError):
        queue_length_from_lines(lines)


@pytest.mark.parametrize("lines", [
    [],
    ["2 events", "2026-11-21T05:06:02Z\tT0000001\tcount\tqueued"],  # a line is missing
    ["1 events", "2026-11-21T05:06:02Z\tT0000001\tqueued"],  # a field is missing
    ["1 events", "yesterday\tT0000001\tcount\tqueued"],
])
def test_bad_task_logs_are_protocol_errors(lines):
    with pytest.raises(ProtocolError):
        task_log_from_lines(lines)


def test_reply_error_carries_code_text_and_detail():
    error = ReplyError(5009, "Unknown transaction: T0000042")
    assert error.code == 5009 and error.reply is Reply.UNKNOWN_TRANSACTION
    assert error.detail == "T0000042"
    assert str(error) == "R0005009: Unknown transaction: T0000042"
    assert ReplyError(6000, "custom").reply is None


# -- against a real server -----------------------------------------------------------


async def test_submit_streams_parsed_lines_and_gives_the_outcome(server):
    async with await connect("127.0.0.1", server.port) as client:
        assert client.server_build and client.server_build.startswith("jobmonitor ")
        tx = await client.submit("partial")
        lines = [line async for line in tx]
        result = await tx.result()
    assert [line.number for line in lines] == list(range(1, len(lines) + 1))
    assert lines[0].text == f"Machine name: {MACHINE}"
    assert [(line.code, line.more, line.is_error) for line in lines[2:4]] == [
        (5000, True, True), (5000, False, True)]
    assert result.outcome is Outcome.PARTIAL and not result.ok
    assert result.errors == ("Evaluation failed for variable: FormatPriceJS",
                             "Script result was null, line 48")
    assert result.lines == len(lines) and tx.ended


@pytest.mark.parametrize(("project", "outcome"), [
    ("echo", Outcome.SUCCESS), ("fail", Outcome.FAILED), ("crash", Outcome.FAILED)])
async def test_result_without_iterating(server, project, outcome):
    tx = await Client("127.0.0.1", server.port).submit(project)
    assert (await tx.result()).outcome is outcome


async def test_any_value_is_escaped_in_the_packet(server):
    value = "<a href=\"x\">&amp; ]]> 'quotes' \u2603"
    tx = await Client("127.0.0.1", server.port).submit(
        "echo", {"Odd": value}, job_name="A & B", doc_variables={"D": "<&>"})
    texts = [line.text async for line in tx]
    assert f"Odd={value}" in texts and "JobName=A & B" in texts and "doc D=<&>" in texts


async def test_numbers_and_bools_are_sent_as_text(server):
    client = Client("127.0.0.1", server.port)
    tx = await client.submit("echo", {"Count": 2, "Ratio": 0.5, "Dry": True, "Text": "x"})
    assert [line.text async for line in tx][1:6] == [
        "Count=2", "Dry=true", "ProjectName=echo", "Ratio=0.5", "Text=x"]
    with pytest.raises(TypeError, match="the value of variable 'Due' must be a string, a "
                                        "number or a bool, not datetime"):
        await client.submit("echo", {"Due": dt.datetime(2026, 11, 21)})


async def test_error_reply_raises_reply_error(server):
    client = Client("127.0.0.1", server.port)
    with pytest.raises(ReplyError) as caught:
        await client.submit("no such project")
    assert caught.value.reply is Reply.UNKNOWN_PROJECT
    assert caught.value.detail == "no such project"
    with pytest.raises(ReplyError) as caught:
        await client.status("T0000099")
    assert caught.value.code == Reply.UNKNOWN_TRANSACTION


async def test_refused_connection_raises_os_error(unused_port):
    with pytest.raises(ConnectionRefusedError):
        await connect("127.0.0.1", unused_port)


async def test_unmonitored_submit_attaches_when_asked_for_lines(server):
    client = Client("127.0.0.1", server.port)
    tx = await client.submit("wait", {"Key": "late"}, monitor=False)
    assert tx.transaction_id == "T0000001" and not tx.ended
    await release("late")
    assert (await tx.result()).outcome is Outcome.SUCCESS
    assert tx.last_line == 5


async def test_status_info_list_and_outputs(server):
    client = Client("127.0.0.1", server.port, user_token="ann")
    done = await client.submit("history", job_name="report")
    await done.result()
    running = await client.submit("wait", {"Key": "s"}, monitor=False, user_token="bob")

    status = await client.status(done.transaction_id)
    assert isinstance(status, JobStatus) and status.status is JobState.COMPLETED
    assert status.identity == "ann" and status.job_name == "report"
    info = await client.info(done.transaction_id)
    assert [entry.status for entry in info.history][-1] == "complete"
    assert [o.name for o in await client.outputs(done.transaction_id)] == ["report", "log"]

    # the client's own user token (ann) filters unless a call names another
    assert await client.list_jobs() == []
    assert [job.transaction_id for job in await client.list_jobs(all=True)] == \
        [done.transaction_id]
    bobs = await client.list_jobs(user_token="bob")
    assert [(job.transaction_id, job.status) for job in bobs] == [
        (running.transaction_id, JobState.PROCESSING)]
    assert len(await Client("127.0.0.1", server.port).list_jobs(all=True)) == 2
    await release("s")


async def test_characters_the_line_layer_escapes_keep_json_replies_json(server):
    # DEL, C1 controls and the Unicode line separators are escaped on the wire;
    # inside a JSON reply that must be a JSON escape, or the reply is not JSON.
    odd = "a\x7fb\x85c\u2028d\u2029e"
    client = Client("127.0.0.1", server.port)
    tx = await client.submit("echo", {"Odd": odd}, job_name=odd)
    await tx.result()
    status = await client.status(tx.transaction_id)
    assert status.job_name == odd and status.parameters["Odd"] == odd
    assert (await client.info(tx.transaction_id)).job_name == odd
    assert [job.job_name for job in await client.list_jobs(all=True)] == [odd]


async def test_suspend_resume_cancel_delete(server):
    client = Client("127.0.0.1", server.port)
    tx = await client.submit("stepper", {"Key": "k"})
    assert (await tx.__anext__()).number == 1
    assert (await tx.__anext__()).text == "before step 1"
    requested = await client.suspend(tx.transaction_id)
    assert requested.transaction_id == tx.transaction_id and requested.requested
    await release("k")
    async for line in tx:
        if line.code == Status.SUSPENDED:
            break
    assert (await client.status(tx.transaction_id)).status is JobState.SUSPENDED
    resumed = await client.resume(tx.transaction_id)
    assert resumed.text == f"{tx.transaction_id} resumed" and not resumed.requested
    cancelled = await client.cancel(tx.transaction_id)
    assert cancelled.transaction_id == tx.transaction_id
    assert (await tx.result()).outcome is Outcome.CANCELLED
    with pytest.raises(ReplyError) as caught:
        await client.cancel(tx.transaction_id)
    assert caught.value.reply is Reply.INVALID_STATE
    assert (await client.delete(tx.transaction_id)).text == f"{tx.transaction_id} deleted"


async def test_queue_length_task_log_and_restart(server):
    client = Client("127.0.0.1", server.port)
    assert await client.queue_length() == QueueLength(0, 0)
    held = await client.submit("wait", {"Key": "q"}, monitor=False)
    assert await client.queue_length() == QueueLength(0, 1)
    await release("q")
    await (await client.watch(held.transaction_id)).result()
    done = await client.submit("echo")
    await done.result()
    log = await client.task_log()
    assert [(e.transaction_id, e.project, e.event) for e in log] == [
        (held.transaction_id, "wait", "queued"), (held.transaction_id, "wait", "start"),
        (held.transaction_id, "wait", "complete"), (done.transaction_id, "echo", "queued"),
        (done.transaction_id, "echo", "start"), (done.transaction_id, "echo", "complete")]
    assert all(abs(e.timestamp.timestamp() - time.time()) < 60 for e in log)
    assert await client.restart_server() == "Job engine restarted"
    assert (await (await client.submit("echo")).result()).outcome is Outcome.SUCCESS


async def test_a_result_says_when_the_shutdown_cancelled_the_job(make_server):
    server = await make_server(shutdown_grace_s=0.1)
    client = Client("127.0.0.1", server.port)
    stopped = await client.submit("wait", {"Key": "a"})
    cancelled = await client.submit("wait", {"Key": "b"})
    for tx in (stopped, cancelled):
        async for line in tx:
            if line.text == "waiting":
                break
    await client.cancel(cancelled.transaction_id)
    by_user = await cancelled.result()
    server.close()
    by_shutdown = await stopped.result()
    assert (by_user.outcome, by_user.cancelled_by_shutdown, by_user.errors) == (
        Outcome.CANCELLED, False, ())
    assert (by_shutdown.outcome, by_shutdown.cancelled_by_shutdown, by_shutdown.errors) == (
        Outcome.CANCELLED, True, ("Job cancelled: the server is shutting down.",))


async def test_restart_waits_for_the_grace_period_past_the_reply_timeout(make_server):
    # The answer comes once running jobs had shutdown_grace_s to finish, which
    # the server's settings decide, not the client's reply_timeout_s.
    server = await make_server(shutdown_grace_s=0.5)
    client = Client("127.0.0.1", server.port, reply_timeout_s=0.1)
    held = await client.submit("wait")
    async for line in held:
        if line.text == "waiting":  # running, so the restart waits for it
            break
    assert await client.restart_server() == "Job engine restarted"
    assert (await held.result()).outcome is Outcome.CANCELLED


async def test_job_token_resubmit_returns_the_same_job_from_line_one(server):
    client = Client("127.0.0.1", server.port, user_token="ann")
    first = await client.submit("echo", job_token="nightly-42")
    lines = [line.wire_text() async for line in first]
    again = await client.submit("echo", job_token="nightly-42")
    assert again.transaction_id == first.transaction_id
    assert [line.wire_text() async for line in again] == lines


async def test_watch_from_a_line(server):
    client = Client("127.0.0.1", server.port)
    full = [line async for line in await client.submit("partial")]
    watched = [line async for line in await client.watch("T0000001", from_line=3)]
    assert watched == full[2:]
    with pytest.raises(ReplyError):
        await client.watch("T0000077")


async def test_a_transaction_id_in_lower_case_is_answered_in_its_canonical_form(server):
    client = Client("127.0.0.1", server.port)
    full = [line async for line in await client.submit("partial")]
    watched = await client.watch("t0000001")
    assert watched.transaction_id == "T0000001"
    assert [line async for line in watched] == full
    assert (await watched.result()).transaction_id == "T0000001"
    for ask in (client.status, client.info):
        assert (await ask("t0000001")).transaction_id == "T0000001"
    assert (await client.delete("t0000001")).text == "T0000001 deleted"
    with pytest.raises(ReplyError) as caught:
        await client.status("t0000001")
    assert caught.value.text == "Unknown transaction: T0000001"


async def test_watch_from_past_the_end_of_a_finished_job_ends_with_its_outcome(server):
    client = Client("127.0.0.1", server.port)
    done = await client.submit("partial")
    lines = (await done.result()).lines
    for from_line in (lines + 1, 99):
        started = time.monotonic()
        late = await client.watch(done.transaction_id, from_line=from_line)
        assert [line async for line in late] == []
        result = await late.result()
        assert (result.outcome, result.lines) == (Outcome.PARTIAL, 0)
        assert time.monotonic() - started < 1  # at once, not after retrying


async def test_watch_from_the_ended_line_gives_the_outcome(server):
    client = Client("127.0.0.1", server.port)
    done = await client.submit("partial")
    lines = (await done.result()).lines
    late = await client.watch(done.transaction_id, from_line=lines)
    assert [line.text async for line in late] == [f"Transaction {done.transaction_id} ended"]
    assert (await late.result()).outcome is Outcome.PARTIAL


async def test_a_peer_that_takes_nothing_cannot_hold_a_request(monkeypatch):
    from jobmonitor.client import connection as wire

    monkeypatch.setattr(wire, "CLOSE_TIMEOUT_S", 0.2)
    stop = asyncio.Event()

    async def never_read(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.transport.pause_reading()
        await stop.wait()
        writer.close()

    deaf = await asyncio.start_server(never_read, "127.0.0.1", 0)
    try:
        port = deaf.sockets[0].getsockname()[1]
        client = Client("127.0.0.1", port, connect_timeout_s=0.5, reply_timeout_s=0.5)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await client.request("SubmitJob", {"Big": "x" * 8_000_000})
        assert time.monotonic() - started < 5
    finally:
        stop.set()
        deaf.close()
        await deaf.wait_closed()


async def test_transaction_as_context_manager_drops_the_connection(server):
    client = Client("127.0.0.1", server.port)
    async with await client.submit("wait", {"Key": "ctx"}) as tx:
        await tx.__anext__()
    await release("ctx")
    # the job ran on; iterating again re-attaches after the last line received
    rest = [line async for line in tx]
    assert rest[0].number == 2 and rest[-1].is_end


# -- re-attaching -----------------------------------------------------------------------


async def test_watch_reattaches_after_a_dropped_connection(server):
    client = Client("127.0.0.1", server.port)
    tx = await client.submit("stepper", {"Key": "drop", "Count": "2"})
    seen = [await tx.__anext__(), await tx.__anext__()]
    tx._writer.transport.abort()  # the network drops the connection
    await release("drop")
    seen.append(await tx.__anext__())
    await release("drop")
    seen += [line async for line in tx]
    replay = [line async for line in await client.watch(tx.transaction_id)]
    assert seen == replay
    assert (await tx.result()).outcome is Outcome.SUCCESS


@contextlib.asynccontextmanager
async def scripted_server(answers: list[bytes | None]
                           ) -> AsyncIterator[tuple[int, list[Packet]]]:
    """A fake server on a free port: the Nth connection's packet is kept, and answered
    with ``answers[N]`` and a close (None: no answer, until the fake server ends).
    Yields the port and the packets so far."""
    packets: list[Packet] = []
    ending = asyncio.Event()

    async def scripted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        parser = PacketParser()
        packet = None
        while packet is None:
            packet = parser.feed(await reader.read(4096))
        packets.append(packet)
        answer = answers[len(packets) - 1]
        if answer is None:
            await ending.wait()
        else:
            writer.write(answer)
            await writer.drain()
        writer.close()

    listener = await asyncio.start_server(scripted, "127.0.0.1", 0)
    async with listener:
        try:
            yield listener.sockets[0].getsockname()[1], packets
        finally:
            ending.set()


async def test_a_line_cut_by_a_drop_comes_again_exactly_once():
    """A scripted server: the first stream breaks mid-line; the client asks for that line."""
    answers = [b"R0000000: T0000001\r\nJ0000100: Machine name: x\r\nJ0000100: hal",
               b"R0000000: T0000001\r\nJ0000100: half\r\n"
               b"J0000022: Job failed.\r\nJ0000001: Transaction T0000001 ended\r\n"]
    async with scripted_server(answers) as (port, packets):
        tx = await Client("127.0.0.1", port).submit("anything")
        lines = [line async for line in tx]
    assert [(line.number, line.text) for line in lines] == [
        (1, "Machine name: x"), (2, "half"), (3, "Job failed."), (4, "Transaction T0000001 ended")]
    assert [(p.command, p.variables.get("_sys_FromLine")) for p in packets] == [
        ("SubmitJob", None), ("MonitorJob", "2")]
    assert (await tx.result()).outcome is Outcome.FAILED


async def test_reattaching_gives_up_after_reconnect_timeout_s_even_if_the_server_hangs():
    """The server accepts the re-attach but never answers: the client gives up when
    ``reconnect_timeout_s`` has passed, not after its 60 s ``reply_timeout_s``."""
    answers = [b"R0000000: T0000001\r\nJ0000100: one\r\n", None]
    async with scripted_server(answers) as (port, packets):
        told: list[Reattach] = []
        client = Client("127.0.0.1", port, reply_timeout_s=60, reconnect_timeout_s=0.2,
                        on_reattach=told.append)
        tx = await client.watch("T0000001")
        assert (await tx.__anext__()).text == "one"
        async with asyncio.timeout(10):
            with pytest.raises(TimeoutError):
                await tx.__anext__()
    assert [p.variables.get("_sys_FromLine") for p in packets] == ["1", "2"]
    assert told == [Reattach("T0000001", 2, reattached=False)]  # and never back


async def test_a_too_slow_monitor_notice_is_followed_not_shown():
    answers = [b"R0000000: T0000001\r\nJ0000100: one\r\nJ0000100: two\r\n"
               b"J0005003: Monitor fell too far behind: "
               b"re-attach with MonitorJob from line 3\r\n",
               b"R0000000: T0000001\r\nJ0000100: three\r\n"
               b"J0000020: Job completed successfully.\r\n"
               b"J0000001: Transaction T0000001 ended\r\n"]
    told: list[Reattach] = []
    async with scripted_server(answers) as (port, packets):
        tx = await Client("127.0.0.1", port, on_reattach=told.append).watch("T0000001")
        lines = [(line.number, line.text) async for line in tx]
    assert lines == [(1, "one"), (2, "two"), (3, "three"), (4, "Job completed successfully."),
                     (5, "Transaction T0000001 ended")]
    assert [p.variables.get("_sys_FromLine") for p in packets] == ["1", "3"]
    # The server closed it: re-attaching from the line its notice named is told too.
    assert told == [Reattach("T0000001", 3, reattached=False),
                    Reattach("T0000001", 3, reattached=True)]


async def test_on_reattach_is_told_once_when_the_connection_is_lost_and_once_when_back():
    """The stream breaks after line 2; the first re-attach finds the server busy, the
    second works: one call before the wait, one after it, however many attempts."""
    answers = [b"R0000000: T0000001\r\nJ0000100: Machine name: x\r\nJ0000100: one\r\n",
               b"R0005011: Server busy\r\n",
               (b"R0000000: T0000001\r\nJ0000100: two\r\n"
                b"J0000020: Job completed successfully.\r\n"
                b"J0000001: Transaction T0000001 ended\r\n")]
    seen: list[object] = []
    async with scripted_server(answers) as (port, packets):
        client = Client("127.0.0.1", port, on_reattach=seen.append)
        tx = await client.submit("anything")
        async with asyncio.timeout(10):
            async for line in tx:
                seen.append(line.number)
    assert seen == [1, 2, Reattach("T0000001", 3, reattached=False),
                    Reattach("T0000001", 3, reattached=True), 3, 4, 5]
    assert [p.variables.get("_sys_FromLine") for p in packets] == [None, "3", "3"]
    assert (await tx.result()).outcome is Outcome.SUCCESS


async def test_what_on_reattach_raises_comes_out_of_the_iteration():
    """Even an OSError: it is the hook's, not a failed attach to retry."""
    rest = (b"R0000000: T0000001\r\nJ0000020: Job completed successfully.\r\n"
            b"J0000001: Transaction T0000001 ended\r\n")
    answers = [b"R0000000: T0000001\r\nJ0000100: Machine name: x\r\n", rest, rest]

    def hook(reattach: Reattach) -> None:
        if reattach.reattached:
            raise OSError("the hook's own")

    async with scripted_server(answers) as (port, packets):
        tx = await Client("127.0.0.1", port, on_reattach=hook).submit("anything")
        assert (await tx.__anext__()).number == 1
        async with asyncio.timeout(10):
            with pytest.raises(OSError, match="the hook's own"):
                await tx.__anext__()
        await tx.aclose()
    assert len(packets) == 2  # the submit and one re-attach


async def test_on_reattach_is_not_told_when_the_connection_was_not_lost(server):
    """A stream read to its end, and one dropped on purpose (``async with``) and
    iterated again, lost nothing: the hook is not called."""
    told: list[Reattach] = []
    client = Client("127.0.0.1", server.port, on_reattach=told.append)
    assert (await (await client.submit("partial")).result()).outcome is Outcome.PARTIAL
    async with await client.submit("wait", {"Key": "kept"}) as tx:
        await tx.__anext__()
    await release("kept")
    assert [line async for line in tx][-1].is_end
    assert told == []


def test_on_reattach_through_sync_client_over_a_real_server():
    """The network drops a SyncClient's stream while the job waits after line 2
    (``SyncClient`` takes ``Client``'s options): the hook hears of it, re-attaching
    from line 3, before line 3 comes."""
    from jobmonitor import Controller

    seen: list[object] = []
    with (Controller(jobs.app, port=0, machine_name=MACHINE, linger_s=1.0) as controller,
          SyncClient("127.0.0.1", controller.port, on_reattach=seen.append) as client):
        tx = client.submit("thread-stepper", {"Key": "sync-drop"})
        seen += [next(tx).number, next(tx).number]
        tx._transaction._writer.transport.abort()  # the network drops the connection
        jobs.thread_releases.setdefault("sync-drop", threading.Event()).set()
        for line in tx:
            seen.append(line.number)
    assert seen == [1, 2, Reattach(tx.transaction_id, 3, reattached=False),
                    Reattach(tx.transaction_id, 3, reattached=True), 3, 4, 5]


async def test_not_a_jobmonitor_server_is_a_protocol_error():
    async def talker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-2.0-OpenSSH\r\n")
        await writer.drain()
        writer.close()

    listener = await asyncio.start_server(talker, "127.0.0.1", 0)
    async with listener:
        with pytest.raises(ProtocolError):
            await connect("127.0.0.1", listener.sockets[0].getsockname()[1])


@pytest.mark.parametrize("reply", [
    "R0000000: T\u0660\u0660\u0660\u0660\u0660\u0660\u0661",  # Arabic-Indic digits
    "R0000000: T\uff10\uff10\uff10\uff10\uff10\uff10\uff11",  # fullwidth digits
    "R\u0660\u0660\u0660\u0660\u0660\u0660\u0660: T0000001",  # and in the code
])
async def test_only_ascii_digits_make_a_code_or_a_transaction_id(reply):
    async def server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"job_command>")  # (its end tag)
        writer.write(reply.encode() + b"\r\n")
        await writer.drain()
        writer.close()

    listener = await asyncio.start_server(server, "127.0.0.1", 0)
    async with listener:
        client = Client("127.0.0.1", listener.sockets[0].getsockname()[1])
        with pytest.raises(ProtocolError):
            await client.submit("echo", monitor=False)


async def test_watch_survives_a_graceful_server_restart(make_server, tmp_path):
    """A retry-on-restart job runs again after the restart; the watcher sees it all once."""
    db_url = f"sqlite:///{tmp_path / 'jobs.db'}"
    first = await make_server(store=db_url, shutdown_grace_s=0.1)
    port = first.port
    client = Client("127.0.0.1", port, reconnect_timeout_s=30)
    tx = await client.submit("retry-once", {"Marker": str(tmp_path / "marker")})
    seen = [await tx.__anext__(), await tx.__anext__()]
    assert seen[-1].text == "first run"

    async def read_rest() -> None:
        seen.extend([line async for line in tx])

    reading = asyncio.create_task(read_rest())
    first.close()
    await first.wait_closed()
    assert not reading.done()
    await make_server(store=db_url, port=port)
    await reading
    assert "second run" in [line.text for line in seen]
    assert (await tx.result()).outcome is Outcome.SUCCESS
    assert seen == [line async for line in await client.watch(tx.transaction_id)]


def test_watch_survives_a_server_crash_and_restart(tmp_path):
    """SIGKILL the real server mid-job; the restarted one fails the job; no line is lost."""
    db_url = f"sqlite:///{tmp_path / 'crash.db'}"
    server = ServerProcess("--jobs", "tests/support/jobs.py", "--store", db_url)
    port = server.port
    seen: list[StreamLine] = []
    restarted: list[ServerProcess] = []
    try:
        with SyncClient("127.0.0.1", port, reconnect_timeout_s=30) as client:
            tx = client.submit("wait", {"Key": "never"})
            for line in tx:
                seen.append(line)
                if line.text == "waiting":
                    # An acknowledged submit is durable, and so is everything recorded
                    # before it: the running job's state and lines are now stored.
                    client.submit("echo", monitor=False)
                    server.proc.send_signal(signal.SIGKILL)
                    server.proc.communicate(timeout=10)
                    restarted.append(ServerProcess("--jobs", "tests/support/jobs.py",
                                                   "--store", db_url, "--port", str(port)))
            result = tx.result()
            replay = list(client.watch(tx.transaction_id))
        assert [line.text for line in seen[-3:]] == [
            "Job interrupted by a server restart", "Job failed.",
            f"Transaction {tx.transaction_id} ended"]
        assert seen == replay
        assert result.outcome is Outcome.FAILED
        assert restarted[0].stop() == 0
    finally:
        server.kill()
        for process in restarted:
            process.kill()


# -- the blocking facade ------------------------------------------------------------------


def test_sync_client_closes_inside_a_running_loop():
    from jobmonitor import Controller

    with Controller(jobs.app, port=0, machine_name=MACHINE, linger_s=1.0) as controller:
        client = SyncClient("127.0.0.1", controller.port)
        assert client.build_string().startswith("jobmonitor")

        async def close_it() -> None:
            client.close()  # from a coroutine: our loop cannot run in this thread now

        asyncio.run(close_it())
        with pytest.raises(RuntimeError, match="closed"):
            client.build_string()
        client.close()  # again: nothing to do


def test_sync_client_against_a_threaded_server(unused_port):
    from jobmonitor import Controller

    with Controller(jobs.app, port=0, machine_name=MACHINE, linger_s=1.0) as controller:
        with SyncClient("127.0.0.1", controller.port) as client:
            assert client.build_string().startswith("jobmonitor")
            tx = client.submit("lines", {"Count": "3"})
            assert [line.text for line in tx][1:4] == ["line 1", "line 2", "line 3"]
            assert tx.result().outcome is Outcome.SUCCESS
            assert client.status(tx.transaction_id).status is JobState.COMPLETED
            assert client.queue_length() == QueueLength(0, 0)
            assert "lines" in client.projects()
            assert [e.event for e in client.task_log()] == ["queued", "start", "complete"]
            with pytest.raises(ReplyError):
                client.cancel(tx.transaction_id)
            watching = client.submit("lines", {"Count": "3"})
        with watching:  # its client closed (and dropped it) first: nothing to do
            pass
    with SyncClient("127.0.0.1", unused_port) as client, pytest.raises(ConnectionRefusedError):
        client.build_string()


async def test_sync_client_refuses_to_run_inside_an_event_loop(server):
    with SyncClient("127.0.0.1", server.port) as client, pytest.raises(RuntimeError):
        client.build_string()


def test_many_sync_clients_in_threads(unused_port):
    from jobmonitor import Controller

    outcomes: list[Outcome] = []
    with Controller(jobs.app, port=0, machine_name=MACHINE, linger_s=1.0) as controller:
        def work() -> None:
            with SyncClient("127.0.0.1", controller.port) as client:
                outcomes.append(client.submit("echo").result().outcome)

        threads = [threading.Thread(target=work) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert outcomes == [Outcome.SUCCESS] * 4


async def test_request_answers_any_command(server):
    lines = await Client("127.0.0.1", server.port).request("GetJobQueueLen")
    assert lines == ["Queued: 0", "Running: 0"]
    assert await exchange(server.port, xml_packet("GetJobQueueLen")) == [
        "R0000000- Queued: 0", "R0000000: Running: 0"]


# -- users and TLS ---------------------------------------------------------------------------


async def test_user_and_password_go_with_every_command(make_server):
    from .test_security import USERS

    server = await make_server(users=USERS)
    ann = Client("127.0.0.1", server.port, user="ann", password="ann-pw")
    assert "ann-pw" not in repr(ann)
    tx = await ann.submit("stepper", {"Key": "auth", "Count": "1"})
    await tx.__anext__()
    tx._writer.transport.abort()  # re-attaching must authenticate too
    await release("auth")
    assert (await tx.result()).outcome is Outcome.SUCCESS
    assert (await ann.status(tx.transaction_id)).identity == "ann"
    with pytest.raises(ReplyError) as caught:
        await Client("127.0.0.1", server.port, user="ann", password="nope").list_jobs()
    assert caught.value.reply is Reply.NOT_AUTHENTICATED
    with pytest.raises(ReplyError) as caught:  # bob cannot see ann's job
        await Client("127.0.0.1", server.port, user="bob", password="bob-pw").status(
            tx.transaction_id)
    assert caught.value.reply is Reply.UNKNOWN_TRANSACTION
    for call in (ann.task_log(), ann.restart_server()):  # for administrators only
        with pytest.raises(ReplyError) as caught:
            await call
        assert caught.value.reply is Reply.PERMISSION_DENIED
    root = Client("127.0.0.1", server.port, user="root", password="root-pw")
    assert [e.event for e in await root.task_log()][-1] == "complete"


async def test_tls(make_server, certificate):
    import ssl

    server = await make_server(tls_cert=str(certificate / "cert.pem"),
                               tls_key=str(certificate / "key.pem"))
    context = ssl.create_default_context(cafile=str(certificate / "ca.pem"))
    async with await connect("127.0.0.1", server.port, tls=context) as client:
        tx = await client.submit("partial")
        assert (await tx.result()).outcome is Outcome.PARTIAL
    with pytest.raises(ssl.SSLError):  # the system's authorities do not know the test CA
        await connect("127.0.0.1", server.port, tls=True)
    with pytest.raises((OSError, ProtocolError)):  # plain text to a TLS server
        await connect("127.0.0.1", server.port, connect_timeout_s=5, reply_timeout_s=5)
