"""RerunJob: a finished job runs again as a new job, whatever way it ended."""

from __future__ import annotations

import json
import sqlite3

import pytest

from jobmonitor import JobState

from ..conftest import finished, release
from ..support.helpers import exchange, submit, xml_packet


def tid_of(lines: list[str]) -> str:
    assert lines[0].startswith("R0000000: T"), lines
    return lines[0].removeprefix("R0000000: ")


def rerun(tid: str, monitor: bool = False) -> bytes:
    variables = {"_sys_TransactionID": tid}
    if monitor:
        variables["_sys_ClientJobMonitor"] = "true"
    return xml_packet("RerunJob", variables)


async def information(port: int, tid: str) -> dict:
    lines = await exchange(port, xml_packet("GetJobInformation", {"_sys_TransactionID": tid,
                                                                  "_sys_Format": "json"}))
    return json.loads(lines[0][10:])


async def ended(server, project: str, **variables: str) -> str:
    tid = tid_of(await exchange(server.port, submit(project, monitor=False, **variables)))
    await finished(server, tid)
    return tid


@pytest.mark.parametrize("project, final", [("echo", "Completed"),
                                            ("partial", "CompletedWithErrors"),
                                            ("fail", "Failed")])
async def test_a_finished_job_runs_again_as_a_new_job(server, project, final):
    tid = await ended(server, project, JobName="again", Colour="blue", _sys_QueueName="q2",
                      _sys_Priority="3")
    assert server.engine.jobs.find(tid).state.value == final
    lines = await exchange(server.port, rerun(tid, monitor=True))
    new = tid_of(lines)
    assert new != tid
    assert lines[1:3] == ["J0000100: Machine name: testhost", f"J0000134: Job runs {tid} again."]
    assert lines[-1] == f"J0000001: Transaction {new} ended"
    first, second = await information(server.port, tid), await information(server.port, new)
    for key in ("Type", "JobName", "Parameters", "Queue", "Priority"):
        assert second[key] == first[key], key
    assert (second["Queue"], second["Priority"]) == ("q2", 3)
    assert second["Status"] == first["Status"]
    assert second["History"][0]["Status"] == "rerun" and second["History"][0]["Info"] == tid
    assert [e["Status"] for e in second["History"][1:3]] == ["queued", "start"]


async def test_a_cancelled_job_runs_again(server):
    tid = tid_of(await exchange(server.port, submit("wait", monitor=False, Key="never")))
    await exchange(server.port, xml_packet("CancelJob", {"_sys_TransactionID": tid}))
    await finished(server, tid)
    new = tid_of(await exchange(server.port, rerun(tid)))
    assert server.engine.jobs.find(new).state is JobState.PROCESSING
    await release("never")
    await finished(server, new)
    assert server.engine.jobs.find(new).state is JobState.COMPLETED


async def test_a_scheduled_job_runs_again_now_with_its_doc_variables(make_server):
    from ..support.clock import ManualClock

    clock = ManualClock()
    server = await make_server(clock=clock)
    packet = xml_packet("SubmitJob", {"ProjectName": "echo", "_sys_DelaySeconds": "5"},
                        {"Doc": "d1"})
    tid = tid_of(await exchange(server.port, packet))
    clock.advance(5)
    await finished(server, tid)
    lines = await exchange(server.port, rerun(tid, monitor=True))
    assert "J0000100: doc Doc=d1" in lines
    assert (await information(server.port, tid_of(lines)))["Due"] is None


async def test_only_a_finished_job_runs_again(server):
    tid = tid_of(await exchange(server.port, submit("wait", monitor=False, Key="busy")))
    assert await exchange(server.port, rerun(tid)) == [
        f"R0005010: Invalid state for this request: {tid} is Processing; only a job that "
        f"has ended runs again"]
    assert await exchange(server.port, rerun("T0999999")) == [
        "R0005009: Unknown transaction: T0999999"]
    assert await exchange(server.port, xml_packet("RerunJob")) == [
        "R0005006: Missing required variable: _sys_TransactionID (or _sys_JobToken)"]
    await release("busy")
    await finished(server, tid)


async def test_a_stored_job_runs_again_after_a_restart(make_server, tmp_path):
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    server = await make_server(store=url)
    tid = await ended(server, "echo", _sys_QueueName="keep", _sys_Priority="2")
    server.close()
    await server.wait_closed()
    server = await make_server(store=url)
    new = tid_of(await exchange(server.port, rerun(tid)))
    await finished(server, new)
    record = await server.engine.jobs.record(new)
    assert (record.queue, record.priority, record.history[0].info) == ("keep", 2, tid)
    server.close()
    await server.wait_closed()
    with sqlite3.connect(tmp_path / "jobs.db") as db:
        assert db.execute("SELECT queue, priority FROM jobs WHERE number = 2").fetchone() == (
            "keep", 2)
