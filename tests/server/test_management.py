"""Job management over real sockets: monitor, tokens, list, suspend/resume, delete,
status formats, history, outputs, task log, restart."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest
from lxml import etree

from jobmonitor import JobState
from jobmonitor.engine import runner as runner_module
from jobmonitor.wire.formats import split_parameters

from ..conftest import MACHINE, finished, release
from ..support import jobs
from ..support.helpers import Session, exchange, submit, xml_packet

ENDED = "J0000001: Transaction {} ended"


def tid_of(reply: str) -> str:
    assert reply.startswith("R0000000: T"), reply
    return reply.removeprefix("R0000000: ")


def command(name: str, tid: str | None = None, **variables: str) -> bytes:
    if tid is not None:
        variables["_sys_TransactionID"] = tid
    return xml_packet(name, variables)


def fields(lines: list[str]) -> dict[str, str]:
    """``Key: value`` reply lines as a dict (keys may repeat: last wins)."""
    out = {}
    for line in lines:
        key, _, value = line[10:].partition(":")
        out[key] = value.removeprefix(" ")
    return out


# -- MonitorJob ---------------------------------------------------------------------


async def test_monitor_running_job_from_line_one_then_live(server):
    tid = tid_of((await exchange(server.port, submit("wait", monitor=False, Key="m")))[0])
    watchers = [await Session.open(server.port, command("MonitorJob", tid)) for _ in range(3)]
    for watcher in watchers:
        assert await watcher.line() == f"R0000000: {tid}"
        assert await watcher.line() == f"J0000100: Machine name: {MACHINE}"
        assert await watcher.line() == "J0000100: waiting"
    await release("m")
    for watcher in watchers:
        assert await watcher.rest() == ["J0000100: released",
                                        "J0000020: Job completed successfully.",
                                        ENDED.format(tid)]
        await watcher.close()


async def test_monitor_finished_job_replays_and_closes(server):
    full = await exchange(server.port, submit("partial"))
    tid = tid_of(full[0])
    assert await exchange(server.port, command("MonitorJob", tid)) == full
    assert await exchange(server.port, command("MonitorJob", tid, _sys_FromLine="3")) == \
        [full[0], *full[3:]]
    assert await exchange(server.port, command("MonitorJob", tid, _sys_FromLine="99")) == [full[0]]


async def test_reattach_from_the_next_line_misses_nothing(server):
    session = await Session.open(server.port, submit("stepper", Key="r", Count="3"))
    tid = tid_of(await session.line())
    seen = [await session.line(), await session.line()]  # machine name, before step 1
    await session.close()
    await release("r")
    watcher = await Session.open(server.port,
                                 command("MonitorJob", tid, _sys_FromLine=str(len(seen) + 1)))
    assert await watcher.line() == f"R0000000: {tid}"
    assert await watcher.line() == "J0000100: step 1 done"
    assert await watcher.line() == "J0000100: before step 2"
    await release("r")
    assert await watcher.line() == "J0000100: step 2 done"
    assert await watcher.line() == "J0000100: before step 3"
    await release("r")
    rest = ["J0000100: step 2 done", "J0000100: before step 3"] + await watcher.rest()
    await watcher.close()
    full = await exchange(server.port, command("MonitorJob", tid))
    assert [*seen, "J0000100: step 1 done", "J0000100: before step 2", *rest] == full[1:]


@pytest.mark.parametrize(("variables", "expected"), [
    ({"_sys_TransactionID": "T9999999"}, "R0005009: Unknown transaction: T9999999"),
    ({"_sys_TransactionID": "T0000001", "_sys_FromLine": "0"},
     "R0005007: Invalid variable value: _sys_FromLine must be a line number from 1, got '0'"),
    ({"_sys_TransactionID": "T0000001", "_sys_FromLine": "x"},
     "R0005007: Invalid variable value: _sys_FromLine must be a line number from 1, got 'x'"),
    ({}, "R0005006: Missing required variable: _sys_TransactionID (or _sys_JobToken)"),
])
async def test_monitor_refusals(server, variables, expected):
    assert await exchange(server.port, xml_packet("MonitorJob", variables)) == [expected]


@pytest.mark.parametrize(("from_line", "shown"), [(" 3", "3"), ("3 ", "3"), ("\t3\n", "3"),
                                                  (" ", "")])
@pytest.mark.parametrize("command_name", ["MonitorJob", "GetTaskLog"])
async def test_a_line_number_with_white_space_around_it_is_refused(server, command_name,
                                                                    from_line, shown):
    # docs/protocol.md: 1 to 10 ASCII digits; any other value is refused.
    tid = tid_of((await exchange(server.port, submit("partial")))[0])
    packet = command(command_name, tid, _sys_FromLine=from_line)
    assert await exchange(server.port, packet) == [
        "R0005007: Invalid variable value: _sys_FromLine must be a line number from 1, "
        f"got {shown!r} with white space around it"]
    # An empty value is the default, line 1, as if it were not given.
    reply = await exchange(server.port, command(command_name, tid, _sys_FromLine=""))
    assert ("R0000000- Lines: 1-6 of 6" if command_name == "GetTaskLog"
            else "J0000100: Machine name: testhost") in reply[:2]


@pytest.mark.parametrize("store", ["memory", "sqlite"])
async def test_only_t_and_seven_ascii_digits_name_a_job(make_server, tmp_path, store):
    """Digits of other scripts read as the same number by int(): they named real jobs
    (from the SQLite store: a running job's stored row, with misleading answers)."""
    server = await make_server(store=f"sqlite:///{tmp_path / 'tid.db'}" if store == "sqlite"
                               else "memory://")
    running = tid_of((await exchange(server.port, submit("wait", monitor=False, Key="t")))[0])
    done = tid_of((await exchange(server.port, submit("echo", monitor=False)))[0])
    await finished(server, done)
    for tid in (running, done):
        digits = tid[1:]
        for other in (
            "T" + digits.translate(str.maketrans("0123456789", "\u0660\u0661\u0662\u0663"
                                                 "\u0664\u0665\u0666\u0667\u0668\u0669")),
            "T" + digits.translate(str.maketrans("0123456789", "\uff10\uff11\uff12\uff13"
                                                 "\uff14\uff15\uff16\uff17\uff18\uff19")),
            "T" + digits[:-1] + "\u00b9", tid + "0", tid[:-1], "T+" + digits[1:],
        ):
            for name in ("GetJobStatus", "CancelJob", "MonitorJob", "DeleteJob"):
                assert await exchange(server.port, command(name, other)) == [
                    f"R0005009: Unknown transaction: {other}"], (name, other)
    # what names a job still does: T (or t) and seven ASCII digits, space around them
    assert (await exchange(server.port, command("GetJobStatus", f" t{running[1:]}\n")))[0] \
        == f"R0000000- Transaction: {running}"
    await release("t")


# -- identity and job tokens ------------------------------------------------------------------


async def test_same_user_and_job_token_gives_the_same_job(server):
    first = await exchange(server.port, submit("echo", monitor=False, _sys_UserToken="ann",
                                               _sys_JobToken="order-17"))
    again = await exchange(server.port, submit("echo", _sys_UserToken="ann",
                                               _sys_JobToken="order-17"))
    assert again[0] == first[0]
    assert again[-1] == ENDED.format(tid_of(first[0]))  # monitoring attached to that job
    other = await exchange(server.port, submit("echo", monitor=False, _sys_UserToken="bob",
                                               _sys_JobToken="order-17"))
    assert other[0] != first[0]
    by_token = await exchange(server.port, xml_packet("GetJobStatus", {
        "_sys_UserToken": "ann", "_sys_JobToken": "order-17"}))
    assert fields(by_token)["Transaction"] == tid_of(first[0])
    assert fields(by_token)["Identity"] == "ann"
    unknown = await exchange(server.port, xml_packet("GetJobStatus", {
        "_sys_UserToken": "bob", "_sys_JobToken": "nope"}))
    assert unknown == ["R0005009: Unknown transaction: no job with job token 'nope'"]


# -- ListJobs ---------------------------------------------------------------------------------


async def test_list_jobs_active_all_and_by_user(server):
    done = tid_of((await exchange(server.port, submit("echo", monitor=False)))[0])
    await finished(server, done)
    running = tid_of((await exchange(server.port, submit(
        "wait", monitor=False, Key="l", JobName="Big\tjob", _sys_UserToken="ann")))[0])
    assert await exchange(server.port, xml_packet("ListJobs")) == [
        "R0000000- 1 jobs", f"R0000000: {running}\tProcessing\twait\tBig\\tjob"]
    assert await exchange(server.port, xml_packet("ListJobs", {"_sys_Filter": "ALL"})) == [
        "R0000000- 2 jobs", f"R0000000- {done}\tCompleted\techo\t",
        f"R0000000: {running}\tProcessing\twait\tBig\\tjob"]
    assert await exchange(server.port, xml_packet("ListJobs", {
        "_sys_Filter": "all", "_sys_UserToken": "bob"})) == ["R0000000: 0 jobs"]
    as_json = await exchange(server.port, xml_packet("ListJobs", {"_sys_Format": "json"}))
    assert len(as_json) == 1
    listed = json.loads(as_json[0].removeprefix("R0000000: "))
    assert [(j["Id"], j["Status"], j["Identity"]) for j in listed["Jobs"]] == [(running, 2, "ann")]
    assert listed["Next"] is None
    assert await exchange(server.port, xml_packet("ListJobs", {"_sys_Filter": "some"})) == [
        "R0005007: Invalid variable value: _sys_Filter must be one of active, all, got 'some'"]
    await release("l")


async def test_a_value_cannot_add_a_field_or_forge_a_row_of_a_list(server):
    forged = "x\nT0000099\tCompleted\techo\tforged"
    tid = tid_of((await exchange(server.port, submit("output", JobName=forged, Name=forged,
                                                     Uri="file:///a\r\nb", MediaType="c\td")))[0])
    assert await exchange(server.port, xml_packet("ListJobs", {"_sys_Filter": "all"})) == [
        "R0000000- 1 jobs",
        f"R0000000: {tid}\tCompleted\toutput\tx\\nT0000099\\tCompleted\\techo\\tforged"]
    row = "x\\nT0000099\\tCompleted\\techo\\tforged\tfile:///a\\nb\tc\\td"
    assert await exchange(server.port, command("RetrieveJob", tid)) == [
        "R0000000- 1 outputs", f"R0000000: {row}"]
    assert f"R0000000- Output: {row}" in await exchange(server.port,
                                                         command("GetJobInformation", tid))


# -- status formats, history, outputs -------------------------------------------------------------


async def test_status_json_follows_the_jobstatus_representation(server):
    lines = await exchange(server.port, submit("history", JobName="Flyer", Size="a;b=c"))
    tid = tid_of(lines[0])
    reply = await exchange(server.port, command("GetJobStatus", tid, _sys_Format="json"))
    assert len(reply) == 1 and reply[0].startswith("R0000000: {")
    status = json.loads(reply[0].removeprefix("R0000000: "))
    assert status["Id"] == tid
    assert status["Type"] == "history"
    assert status["Status"] == 3
    assert status["Identity"] == "anonymous"
    assert status["WorkerId"] == MACHINE
    assert status["Created"].endswith("Z") and status["Completed"].endswith("Z")
    assert status["Estimated"] == "2030-01-02T03:04:05Z"
    assert status["Progress"] == {"Done": 0, "Total": 0, "Percent": None, "Message": ""}
    assert status["JobData"] == [
        {"Name": "report", "Uri": "file:///out/report.pdf", "MediaType": "application/pdf",
         "Partial": False},
        {"Name": "log", "Uri": "file:///out/job.log", "MediaType": None, "Partial": False}]
    assert split_parameters(status["Parameters"]) == {
        "JobName": "Flyer", "ProjectName": "history", "Size": "a;b=c"}
    assert status["PollAfter"] is None  # it has ended: nothing to poll for
    assert "History" not in status


async def test_job_information_xml_has_history_and_words_for_status(server):
    tid = tid_of((await exchange(server.port, submit("history")))[0])
    reply = await exchange(server.port, command("GetJobInformation", tid, _sys_Format="xml"))
    assert all(line.startswith("R0000000- ") for line in reply[:-1])
    assert reply[-1].startswith("R0000000: ")
    document = etree.fromstring("\n".join(line[10:] for line in reply).encode())
    assert document.tag == "JobStatus"
    assert document.findtext("Status") == "Completed"
    assert document.findtext("Id") == tid
    events = [(e.findtext("Stage"), e.findtext("Status"), e.findtext("Info") or None)
              for e in document.find("History")]
    assert events == [("job", "queued", None), ("job", "start", None),
                      ("evaluation", "start", None), ("job", "estimate", None),
                      ("evaluation", "complete", "3 records"), ("job", "complete", None)]
    estimate = document.find("History")[3]
    assert estimate.findtext("Date") == "2030-01-02T03:04:05Z"
    assert [o.findtext("Name") for o in document.find("JobData")] == ["report", "log"]


async def test_job_information_text_and_stage_lines(server):
    lines = await exchange(server.port, submit("history"))
    assert lines[2] == "J0000120: Stage evaluation: start"
    assert lines[3] == "J0000120: Stage evaluation: complete (3 records)"
    tid = tid_of(lines[0])
    info = await exchange(server.port, command("GetJobInformation", tid))
    history = [line for line in info if line.startswith("R0000000- History: ")]
    assert [h.split(" ", 3)[3] for h in history] == [
        "job queued", "job start", "evaluation start", "job estimate 2030-01-02T03:04:05Z",
        "evaluation complete 3 records", "job complete"]
    assert "R0000000- Output: report\tfile:///out/report.pdf\tapplication/pdf" in info


async def poll_after(port: int, tid: str) -> tuple[str | None, object, str]:
    """What the text, JSON and XML status say of polling again."""
    text = fields(await exchange(port, command("GetJobStatus", tid))).get("Poll after")
    as_json = json.loads((await exchange(port, command("GetJobStatus", tid,
                                                       _sys_Format="json")))[0][10:])
    xml = etree.fromstring("\n".join(line[10:] for line in await exchange(
        port, command("GetJobInformation", tid, _sys_Format="xml"))).encode())
    poll_after = etree.tostring(xml.find("PollAfter"), with_tail=False).decode()
    return text, as_json["PollAfter"], poll_after


async def test_poll_after_only_while_the_job_can_change(server):
    session = await Session.open(server.port, submit("wait", Key="poll"))
    tid = tid_of(await session.line())
    assert [await session.line(), await session.line()][1] == "J0000100: waiting"
    assert await poll_after(server.port, tid) == ("2", 2, "<PollAfter>2</PollAfter>")
    await release("poll")
    assert (await session.rest())[-1] == ENDED.format(tid)
    await session.close()
    # Ended: it will not change, and nothing suggests asking again.
    assert await poll_after(server.port, tid) == (None, None, "<PollAfter/>")
    status = await exchange(server.port, command("GetJobStatus", tid))
    assert status[-1] == "R0000000: Last message: released"


async def test_bad_format_is_refused(server):
    tid = tid_of((await exchange(server.port, submit("echo", monitor=False)))[0])
    assert await exchange(server.port, command("GetJobStatus", tid, _sys_Format="yaml")) == [
        "R0005007: Invalid variable value: _sys_Format must be one of text, json, xml, got 'yaml'"]


async def test_retrieve_job_lists_outputs(server):
    tid = tid_of((await exchange(server.port, submit("history")))[0])
    assert await exchange(server.port, command("RetrieveJob", tid)) == [
        "R0000000- 2 outputs", "R0000000- report\tfile:///out/report.pdf\tapplication/pdf",
        "R0000000: log\tfile:///out/job.log\t"]
    reply = await exchange(server.port, command("RetrieveJob", tid, _sys_Format="json"))
    assert json.loads(reply[0][10:])[1] == {"Name": "log", "Uri": "file:///out/job.log",
                                            "MediaType": None, "Partial": False}


# -- suspend and resume ---------------------------------------------------------------------------


async def test_suspend_running_job_pauses_at_checkpoint_then_resumes(server):
    session = await Session.open(server.port, submit("stepper", Key="s", Count="2"))
    tid = tid_of(await session.line())
    await session.line()
    assert await session.line() == "J0000100: before step 1"
    assert await exchange(server.port, command("SuspendJob", tid)) == [
        f"R0000000: {tid} suspend requested"]
    await release("s")
    assert await session.line() == "J0000130: Job suspended."
    assert server.engine.jobs.find(tid).state is JobState.SUSPENDED
    assert await exchange(server.port, command("SuspendJob", tid)) == [
        f"R0005010: Invalid state for this request: {tid} is Suspended"]
    assert await exchange(server.port, command("ResumeJob", tid)) == [f"R0000000: {tid} resumed"]
    assert await session.line() == "J0000131: Job resumed."
    assert await session.line() == "J0000100: step 1 done"
    assert await session.line() == "J0000100: before step 2"
    await release("s")
    assert await session.rest() == ["J0000100: step 2 done",
                                    "J0000020: Job completed successfully.", ENDED.format(tid)]
    await session.close()


async def test_inside_job_pausable_a_suspend_pauses_at_once(server):
    session = await Session.open(server.port, submit("pausable", Key="p1"))
    tid = tid_of(await session.line())
    await session.line()
    assert await session.line() == "J0000100: inside"
    assert await session.line() == "J0000100: Job.pausable blocks cannot be nested"
    assert await exchange(server.port, command("SuspendJob", tid)) == [
        f"R0000000: {tid} suspended"]
    assert await session.line() == "J0000130: Job suspended."
    assert jobs.pauses["p1"] == ["pause"]
    assert await exchange(server.port, command("ResumeJob", tid)) == [f"R0000000: {tid} resumed"]
    assert await session.line() == "J0000131: Job resumed."
    assert jobs.pauses["p1"] == ["pause", "resume"]
    # paused again and cancelled: resumed on the way out
    await exchange(server.port, command("SuspendJob", tid))
    assert await exchange(server.port, command("CancelJob", tid)) == [f"R0000000: {tid}"]
    assert await session.rest() == ["J0000130: Job suspended.", "J0000023: Job cancelled by user.",
                                    ENDED.format(tid)]
    assert jobs.pauses["p1"] == ["pause", "resume", "pause", "resume"]
    await session.close()


async def test_a_suspend_requested_before_job_pausable_takes_effect_on_entering_it(make_server):
    server = await make_server(max_running=2)
    session = await Session.open(server.port, submit("stepper", Key="early", Count="1"))
    tid = tid_of(await session.line())
    await session.line()
    assert await session.line() == "J0000100: before step 1"
    job = server.engine.jobs.find(tid)
    assert await exchange(server.port, command("SuspendJob", tid)) == [
        f"R0000000: {tid} suspend requested"]
    told = []
    with job.pausable(lambda: told.append("pause"), lambda: told.append("resume")):
        assert told == ["pause"] and job.state is JobState.SUSPENDED
    assert told == ["pause", "resume"]  # left while paused
    await exchange(server.port, command("CancelJob", tid))
    await session.close()


async def test_suspended_queued_job_is_not_started_until_resumed(make_server):
    server = await make_server(max_running=1)
    blocker = tid_of((await exchange(server.port, submit("wait", monitor=False, Key="b")))[0])
    queued = tid_of((await exchange(server.port, submit("echo", monitor=False)))[0])
    assert await exchange(server.port, command("SuspendJob", queued)) == [
        f"R0000000: {queued} suspended"]
    await release("b")
    await finished(server, blocker)
    assert server.engine.jobs.find(queued).state is JobState.SUSPENDED
    assert server.engine.running_count == 0
    assert await exchange(server.port, command("ResumeJob", queued)) == [
        f"R0000000: {queued} resumed"]
    job = await finished(server, queued)
    assert job.state is JobState.COMPLETED


async def test_cancel_a_suspended_job_and_resume_refusals(server):
    session = await Session.open(server.port, submit("stepper", Key="c", Count="2"))
    tid = tid_of(await session.line())
    assert await exchange(server.port, command("ResumeJob", tid)) == [
        f"R0005010: Invalid state for this request: {tid} is Processing, not Suspended"]
    await exchange(server.port, command("SuspendJob", tid))
    await release("c")
    await session.line()
    await session.line()
    assert await session.line() == "J0000130: Job suspended."
    assert await exchange(server.port, command("CancelJob", tid)) == [f"R0000000: {tid}"]
    assert await session.rest() == ["J0000023: Job cancelled by user.", ENDED.format(tid)]
    await session.close()
    assert await exchange(server.port, command("SuspendJob", tid)) == [
        f"R0005010: Invalid state for this request: {tid} has already ended (Cancelled)"]


async def test_thread_job_suspends_at_its_checkpoint(server):
    import threading

    session = await Session.open(server.port, submit("thread-stepper", Key="ts"))
    tid = tid_of(await session.line())
    await session.line()
    assert await session.line() == "J0000100: before step 1"
    await exchange(server.port, command("SuspendJob", tid))
    jobs.thread_releases.setdefault("ts", threading.Event()).set()
    assert await session.line() == "J0000130: Job suspended."
    await exchange(server.port, command("ResumeJob", tid))
    assert await session.rest() == ["J0000131: Job resumed.", "J0000100: step 1 done",
                                    "J0000020: Job completed successfully.", ENDED.format(tid)]
    await session.close()


# -- delete, task log -----------------------------------------------------------------------------


async def test_delete_finished_job_but_not_an_active_one(server):
    done = tid_of((await exchange(server.port, submit("echo")))[0])
    active = tid_of((await exchange(server.port, submit("wait", monitor=False, Key="d")))[0])
    assert await exchange(server.port, command("DeleteJob", active)) == [
        f"R0005010: Invalid state for this request: {active} is Processing; cancel it first"]
    assert await exchange(server.port, command("DeleteJob", done)) == [f"R0000000: {done} deleted"]
    assert await exchange(server.port, command("GetJobStatus", done)) == [
        f"R0005009: Unknown transaction: {done}"]
    await release("d")


async def test_task_log_of_a_job_and_of_the_server(server):
    lines = await exchange(server.port, submit("partial"))
    tid = tid_of(lines[0])
    log = await exchange(server.port, command("GetTaskLog", tid))
    assert log == ["R0000000- Lines: 1-6 of 6"] + [f"R0000000- {line}" for line in lines[1:-1]] \
        + [f"R0000000: {lines[-1]}"]
    tail = await exchange(server.port, command("GetTaskLog", tid, _sys_FromLine="5"))
    assert tail == ["R0000000- Lines: 5-6 of 6", f"R0000000- {lines[5]}", f"R0000000: {lines[6]}"]
    server_log = await exchange(server.port, xml_packet("GetTaskLog"))
    assert server_log[0] == "R0000000- 3 events"
    assert [line.split("\t")[1:] for line in server_log[1:]] == [
        [tid, "partial", "queued"], [tid, "partial", "start"], [tid, "partial", "complete"]]


# -- RestartServer --------------------------------------------------------------------------------


async def test_restart_server_cancels_stragglers_and_keeps_the_queue(make_server):
    server = await make_server(max_running=1, shutdown_grace_s=0.2)
    running = await Session.open(server.port, submit("wait", Key="never"))
    running_tid = tid_of(await running.line())
    queued = [tid_of((await exchange(server.port, submit("echo", monitor=False)))[0])
              for _ in range(2)]
    assert await exchange(server.port, xml_packet("RestartServer")) == [
        "R0000000: Job engine restarted"]
    assert (await running.rest())[-2:] == ["J0000023: Job cancelled by user.",
                                           ENDED.format(running_tid)]
    await running.close()
    for tid in queued:
        assert (await finished(server, tid)).state is JobState.COMPLETED
    first, second = (server.engine.jobs.find(tid).record.started for tid in queued)
    assert first <= second


# -- time limits ------------------------------------------------------------------------------


@pytest.mark.parametrize("project", ["overdue", "thread-overdue"])
async def test_a_job_past_its_time_limit_is_stopped_and_fails(server, project):
    started = time.monotonic()
    lines = await exchange(server.port, submit(project))
    assert time.monotonic() - started < 5
    tid = tid_of(lines[0])
    assert lines[-3:] == ["J0005000: Job timed out after 0.3 s", "J0000022: Job failed.",
                          ENDED.format(tid)]
    assert fields(await exchange(server.port, command("GetJobStatus", tid)))["Status"] == "Failed"


async def test_time_suspended_does_not_count_toward_the_limit(server):
    session = await Session.open(server.port, submit("paced"))
    tid = tid_of(await session.line())
    assert await session.line() == f"J0000100: Machine name: {MACHINE}"
    assert await session.line() == "J0000100: step 1"
    assert await exchange(server.port, command("SuspendJob", tid)) == [
        f"R0000000: {tid} suspend requested"]
    assert await session.line() == "J0000130: Job suspended."
    await asyncio.sleep(1.0)  # longer than the job's 0.6 s
    assert await exchange(server.port, command("ResumeJob", tid)) == [f"R0000000: {tid} resumed"]
    assert await session.rest() == [
        "J0000131: Job resumed.", "J0000100: step 2", "J0000100: step 3", "J0000100: step 4",
        "J0000020: Job completed successfully.", ENDED.format(tid)]
    await session.close()


async def test_a_cancel_before_the_limit_stays_a_cancel(server):
    session = await Session.open(server.port, submit("overdue"))
    tid = tid_of(await session.line())
    await session.line()
    assert await session.line() == "J0000100: starting"
    await exchange(server.port, command("CancelJob", tid))
    await asyncio.sleep(0.4)  # past the limit: the timer must not turn it into a failure
    assert await session.rest() == ["J0000023: Job cancelled by user.", ENDED.format(tid)]
    await session.close()


async def test_a_cancel_while_a_job_past_its_limit_stops_ends_it_cancelled(server):
    session = await Session.open(server.port, submit("thread-overdue-slow-stop", Key="slow"))
    tid = tid_of(await session.line())
    await session.line()
    assert await session.line() == "J0000100: attempt 1"
    await asyncio.to_thread(jobs.job_stopping.wait, 10)  # its time limit has stopped it
    assert await exchange(server.port, command("CancelJob", tid)) == [f"R0000000: {tid}"]
    jobs.thread_releases["slow"].set()
    assert await session.rest() == ["J0005000: Job timed out after 0.2 s",
                                    "J0000023: Job cancelled by user.", ENDED.format(tid)]
    await session.close()


@pytest.mark.parametrize("bad", [0, -1, float("inf"), float("nan"), "5", True])
def test_a_bad_time_limit_is_refused(bad):
    from jobmonitor import ConfigError, JobMonitor

    with pytest.raises(ConfigError, match=r"^job 'x': timeout_s: must be a finite number greater "
                                          r"than 0, got "):
        JobMonitor().add_job("x", lambda job: None, timeout_s=bad)


# -- retries ------------------------------------------------------------------------------


async def test_a_failed_job_runs_again_until_it_succeeds(server):
    lines = await exchange(server.port, submit("flaky", Fail="2"))
    tid = tid_of(lines[0])
    assert lines[1:] == [
        f"J0000100: Machine name: {MACHINE}",
        "J0000100: attempt 1", "J0005000: attempt 1 failed",
        "J0000132: Job queued to run again (attempt 2 of 3).",
        "J0000100: attempt 2", "J0005000: attempt 2 failed",
        "J0000132: Job queued to run again (attempt 3 of 3).",
        "J0000100: attempt 3", "J0000020: Job completed successfully.", ENDED.format(tid)]
    info = await exchange(server.port, command("GetJobInformation", tid, _sys_Format="json"))
    events = [event["Status"] for event in json.loads(info[0][10:])["History"]
              if event["Stage"] == "job"]
    assert events == ["queued", "start", "retry", "start", "retry", "start", "complete"]


async def test_a_job_that_keeps_failing_fails_after_its_retries(server):
    lines = await exchange(server.port, submit("flaky", Fail="5"))
    assert lines[-4:] == ["J0000100: attempt 3", "J0005000: attempt 3 failed",
                          "J0000022: Job failed.", ENDED.format(tid_of(lines[0]))]
    assert sum(line.startswith("J0000132") for line in lines) == 2


async def test_a_job_with_more_than_1024_retries_runs_them_all(server):
    # Its 1 025th failure must not overflow the delay (2 ** 1024 is no float): the
    # job hung there, never ending.
    lines = await exchange(server.port, submit("flaky-often"))
    assert lines[-4:] == ["J0000132: Job queued to run again (attempt 1101 of 1101).",
                          "J0005000: attempt 1101 failed", "J0000022: Job failed.",
                          ENDED.format(tid_of(lines[0]))]


async def test_a_job_waiting_to_run_again_can_be_cancelled(server):
    session = await Session.open(server.port, submit("flaky-later"))
    tid = tid_of(await session.line())
    await session.line()
    assert await session.line() == "J0000100: attempt 1"
    assert await session.line() == "J0005000: first attempt failed"
    assert await session.line() == "J0000132: Job queued to run again (attempt 2 of 2, in 0.3 s)."
    # Waiting out its delay, it is queued: its status says so, and so does the queue's length.
    assert await exchange(server.port, command("GetJobQueueLen")) == [
        "R0000000- Queued: 1", "R0000000: Running: 0"]
    assert await exchange(server.port, command("CancelJob", tid)) == [f"R0000000: {tid}"]
    assert not server.engine._runner._delayed  # its timer is stopped, not left to hold the job
    assert await session.rest() == ["J0000023: Job cancelled by user.", ENDED.format(tid)]
    await session.close()
    await asyncio.sleep(0.5)  # past the delay: it must not run again
    status = fields(await exchange(server.port, command("GetJobStatus", tid)))
    assert (status["Status"], status["Lines"]) == ("Cancelled", "6")


async def test_a_job_resumed_while_waiting_to_run_again_keeps_its_next_delay(server):
    session = await Session.open(server.port, submit("flaky-twice-later"))
    tid = tid_of(await session.line())
    while await session.line() != "J0000132: Job queued to run again (attempt 2 of 3, in 0.5 s).":
        pass
    for name in ("SuspendJob", "ResumeJob"):  # resumed: it runs again at once
        await exchange(server.port, command(name, tid))
    assert [await session.line() for _ in range(5)] == [
        "J0000130: Job suspended.", "J0000131: Job resumed.", "J0000100: attempt 2",
        "J0005000: attempt 2 failed",
        "J0000132: Job queued to run again (attempt 3 of 3, in 1 s)."]
    failed = time.monotonic()
    assert await session.line() == "J0000100: attempt 3"
    assert time.monotonic() - failed > 0.8  # not when the first delay's timer was due
    await session.close()


async def test_a_job_cancelled_while_it_runs_is_not_run_again_when_it_fails(server):
    session = await Session.open(server.port, submit("thread-flaky", Key="cancelled"))
    tid = tid_of(await session.line())
    await session.line()
    assert await session.line() == "J0000100: attempt 1"
    assert await exchange(server.port, command("CancelJob", tid)) == [f"R0000000: {tid}"]
    jobs.thread_releases.setdefault("cancelled", threading.Event()).set()
    assert await session.rest() == ["J0005000: attempt 1 failed", "J0000022: Job failed.",
                                    ENDED.format(tid)]
    await session.close()


async def test_a_job_that_fails_while_a_memory_store_server_stops_is_not_run_again(
        make_server):
    # Nothing would run it again: it fails (with SQLite it stays queued, see test_durable).
    server = await make_server(shutdown_grace_s=10)
    session = await Session.open(server.port, submit("thread-flaky", Key="fails-at-stop-memory"))
    tid = tid_of(await session.line())
    await session.line()
    assert await session.line() == "J0000100: attempt 1"
    server.close()
    assert await session.line() == "J0000190: Server stopping: running jobs have 10 s to finish"
    jobs.thread_releases.setdefault("fails-at-stop-memory", threading.Event()).set()
    assert await session.rest() == ["J0005000: attempt 1 failed", "J0000022: Job failed.",
                                    ENDED.format(tid)]
    await session.close()
    await server.wait_closed()


async def test_a_suspend_asked_for_during_a_failed_run_holds_the_next_one(server):
    session = await Session.open(server.port, submit("thread-flaky", Key="suspended"))
    tid = tid_of(await session.line())
    await session.line()
    assert await session.line() == "J0000100: attempt 1"
    assert await exchange(server.port, command("SuspendJob", tid)) == [
        f"R0000000: {tid} suspend requested"]
    jobs.thread_releases.setdefault("suspended", threading.Event()).set()
    assert [await session.line() for _ in range(3)] == [
        "J0005000: attempt 1 failed", "J0000132: Job queued to run again (attempt 2 of 2).",
        "J0000130: Job suspended."]
    assert fields(await exchange(server.port, command("GetJobStatus", tid)))["Status"] == \
        "Suspended"
    assert await exchange(server.port, command("ResumeJob", tid)) == [f"R0000000: {tid} resumed"]
    assert await session.rest() == ["J0000131: Job resumed.", "J0000100: attempt 2",
                                    "J0000020: Job completed successfully.", ENDED.format(tid)]
    await session.close()


async def test_a_job_abandoned_by_a_restart_is_not_run_again_when_it_fails(server, monkeypatch):
    monkeypatch.setattr(runner_module, "CANCEL_WAIT_S", 0.2)
    session = await Session.open(server.port, submit("thread-flaky", Key="abandoned"))
    tid = tid_of(await session.line())
    await session.line()
    assert await session.line() == "J0000100: attempt 1"
    job = server.engine.jobs.find(tid)
    run = job.run.task  # the task that waits for the handler's thread
    await server.engine.restart(0.1, jobs.app.handlers)
    assert (await session.rest())[-2:] == ["J0000023: Job cancelled by user.", ENDED.format(tid)]
    await session.close()
    jobs.thread_releases.setdefault("abandoned", threading.Event()).set()
    await asyncio.wait_for(run, 10)  # the abandoned thread failed at last
    assert (job.state, job.attempt) == (JobState.CANCELLED, 1)
    status = fields(await exchange(server.port, command("GetJobStatus", tid)))
    assert status["Status"] == "Cancelled"


async def test_a_job_past_its_time_limit_runs_again_with_a_new_limit(server):
    lines = await exchange(server.port, submit("overdue-once"))
    assert lines[2:] == ["J0000100: attempt 1", "J0005000: Job timed out after 0.2 s",
                         "J0000132: Job queued to run again (attempt 2 of 2).",
                         "J0000100: attempt 2", "J0000020: Job completed successfully.",
                         ENDED.format(tid_of(lines[0]))]


async def _restart_during_a_retry_delay(make_server, tmp_path) -> tuple[Any, str]:
    """A flaky-much-later job fails, and the server stops within its 30 s delay."""
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    server = await make_server(store=url)
    session = await Session.open(server.port, submit("flaky-much-later"))
    tid = tid_of(await session.line())
    while not (await session.line()).startswith("J0000132"):
        pass
    await session.close()
    server.close()
    await server.wait_closed()
    return url, tid


async def test_a_job_waiting_to_run_again_waits_out_its_delay_after_a_restart(
        make_server, tmp_path):
    url, tid = await _restart_during_a_retry_delay(make_server, tmp_path)
    again = await make_server(store=url)
    assert await exchange(again.port, command("GetJobQueueLen")) == [
        "R0000000- Queued: 1", "R0000000: Running: 0"]
    [timer] = again.engine._runner._delayed.values()
    assert 20 < timer.when() - asyncio.get_running_loop().time() <= 30
    assert fields(await exchange(again.port, command("GetJobStatus", tid)))["Status"] == "Queued"
    await exchange(again.port, command("CancelJob", tid))


async def test_a_job_whose_retry_delay_ended_while_the_server_was_down_runs_at_once(
        make_server, tmp_path, monkeypatch):
    url, tid = await _restart_during_a_retry_delay(make_server, tmp_path)
    later = time.time() + 31
    monkeypatch.setattr(runner_module, "time", SimpleNamespace(time=lambda: later))
    again = await make_server(store=url)
    monitor = await exchange(again.port, command("MonitorJob", tid))
    assert monitor[-3:] == ["J0000100: attempt 2", "J0000020: Job completed successfully.",
                            ENDED.format(tid)]
    assert "J0005002: Job interrupted by a server restart" not in monitor
    assert "J0000132: Job queued to run again (attempt 2 of 2, in 30 s)." in monitor


@pytest.mark.parametrize(("options", "message"), [
    ({"retries": -1}, "job 'x': retries: must be a whole number of 0 or more, got -1"),
    ({"retries": 1.5}, "job 'x': retries: must be a whole number of 0 or more, got 1.5"),
    ({"retry_delay_s": -1}, "job 'x': retry_delay_s: must be a finite number of 0 or more, "
                            "got -1"),
    ({"retry_delay_s": float("nan")}, "job 'x': retry_delay_s: must be a finite number of 0 "
                                      "or more, got nan")])
def test_bad_retry_options_are_refused(options, message):
    from jobmonitor import ConfigError, JobMonitor

    with pytest.raises(ConfigError) as caught:
        JobMonitor().add_job("x", lambda job: None, **options)
    assert str(caught.value) == message
