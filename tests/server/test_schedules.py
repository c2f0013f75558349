"""Due times and recurring schedules, on a clock the tests move: no real waiting."""

from __future__ import annotations

import json
import sqlite3

import pytest

from jobmonitor import JobState
from jobmonitor.queueing import ScheduleSettings

from ..conftest import finished
from ..support.clock import ManualClock
from ..support.helpers import Session, exchange, submit, xml_packet

START = "2026-01-01T00:00:00Z"


def tid_of(lines: list[str]) -> str:
    assert lines[0].startswith("R0000000: T"), lines
    return lines[0].removeprefix("R0000000: ")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def db_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'jobs.db'}"


async def status_json(port: int, tid: str) -> dict:
    lines = await exchange(port, xml_packet("GetJobStatus", {"_sys_TransactionID": tid,
                                                             "_sys_Format": "json"}))
    return json.loads(lines[0][10:])


async def restart(make_server, server, **settings):
    server.close()
    await server.wait_closed()
    return await make_server(**settings)


async def test_a_scheduled_job_is_created_then_queued_at_its_time(make_server, clock):
    server = await make_server(clock=clock)
    session = await Session.open(server.port, submit("echo", _sys_RunAt=clock.iso(3600)))
    tid = (await session.line()).removeprefix("R0000000: ")
    assert await session.line() == "J0000100: Machine name: testhost"
    assert await session.line() == "J0000133: Job scheduled to run at 2026-01-01T01:00:00Z."
    status = await status_json(server.port, tid)
    assert (status["Status"], status["Due"]) == (0, "2026-01-01T01:00:00Z")
    text = await exchange(server.port, xml_packet("GetJobStatus", {"_sys_TransactionID": tid}))
    assert "R0000000- Status: Created" in text and "R0000000- Due: 2026-01-01T01:00:00Z" in text
    rows = await exchange(server.port, xml_packet("ListQueues"))
    assert rows == ["R0000000- 1 queues", "R0000000: default\t0\t0\t8\tfalse\t1"]
    clock.advance(3599)
    assert server.engine.jobs.find(tid).state is JobState.CREATED
    clock.advance(1)
    assert (await session.rest())[-2:] == ["J0000020: Job completed successfully.",
                                           f"J0000001: Transaction {tid} ended"]
    await session.close()
    info = await exchange(server.port, xml_packet("GetJobInformation",
                                                  {"_sys_TransactionID": tid}))
    events = [line.split(" ", 3)[-1] for line in info if line[10:].startswith("History: ")]
    assert events[:3] == ["job scheduled 2026-01-01T01:00:00Z", "job queued", "job start"]


async def test_a_delay_counts_from_the_submit(make_server, clock):
    server = await make_server(clock=clock)
    tid = tid_of(await exchange(server.port, submit("echo", monitor=False,
                                                    _sys_DelaySeconds="90.5")))
    assert (await status_json(server.port, tid))["Due"] == "2026-01-01T00:01:30Z"
    clock.advance(90)
    assert server.engine.jobs.find(tid).state is JobState.CREATED
    clock.advance(0.5)
    await finished(server, tid)


async def test_a_time_already_past_queues_the_job_now(make_server, clock):
    server = await make_server(clock=clock)
    tid = tid_of(await exchange(server.port, submit("echo", monitor=False,
                                                    _sys_RunAt="2025-06-01T12:00:00+02:00")))
    await finished(server, tid)
    assert (await status_json(server.port, tid))["Due"] == "2025-06-01T10:00:00Z"


async def test_a_scheduled_job_survives_a_restart(make_server, clock, db_url):
    server = await make_server(clock=clock, store=db_url)
    tid = tid_of(await exchange(server.port, submit("echo", monitor=False,
                                                    _sys_RunAt=clock.iso(600),
                                                    _sys_QueueName="later",
                                                    _sys_Priority="7")))
    server = await restart(make_server, server, clock=clock, store=db_url)
    status = await status_json(server.port, tid)
    assert (status["Status"], status["Due"], status["Queue"], status["Priority"]) == (
        0, "2026-01-01T00:10:00Z", "later", 7)
    clock.advance(600)
    await finished(server, tid)
    assert (await status_json(server.port, tid))["Status"] == 3


async def test_a_job_due_while_the_server_was_down_runs_at_start(make_server, clock, db_url):
    server = await make_server(clock=clock, store=db_url)
    tid = tid_of(await exchange(server.port, submit("echo", monitor=False,
                                                    _sys_DelaySeconds="60")))
    server.close()
    await server.wait_closed()
    clock.advance(3600)
    server = await make_server(clock=clock, store=db_url)
    await finished(server, tid)


async def test_cancel_and_delete_a_scheduled_job(make_server, clock):
    server = await make_server(clock=clock)
    tid = tid_of(await exchange(server.port, submit("echo", monitor=False,
                                                    _sys_DelaySeconds="60")))
    assert await exchange(server.port, xml_packet("CancelJob", {"_sys_TransactionID": tid})
                          ) == [f"R0000000: {tid}"]
    assert server.engine.jobs.find(tid).state is JobState.CANCELLED
    clock.advance(120)
    assert server.engine.jobs.find(tid).state is JobState.CANCELLED
    assert server.engine.running_count == 0
    assert await exchange(server.port, xml_packet("DeleteJob", {"_sys_TransactionID": tid})
                          ) == [f"R0000000: {tid} deleted"]


async def test_a_suspended_scheduled_job_waits_past_its_time_until_resumed(make_server, clock):
    server = await make_server(clock=clock)
    late = tid_of(await exchange(server.port, submit("echo", monitor=False,
                                                     _sys_DelaySeconds="60")))
    early = tid_of(await exchange(server.port, submit("echo", monitor=False,
                                                      _sys_DelaySeconds="600")))
    for tid in (late, early):
        assert await exchange(server.port, xml_packet("SuspendJob", {"_sys_TransactionID": tid})
                              ) == [f"R0000000: {tid} suspended"]
    clock.advance(120)
    assert server.engine.jobs.find(late).state is JobState.SUSPENDED
    await exchange(server.port, xml_packet("ResumeJob", {"_sys_TransactionID": late}))
    await finished(server, late)  # its time has passed: it runs at once
    await exchange(server.port, xml_packet("ResumeJob", {"_sys_TransactionID": early}))
    assert server.engine.jobs.find(early).state is JobState.CREATED  # waits for its time
    clock.advance(480)
    await finished(server, early)


async def test_a_scheduled_job_named_by_its_job_token_is_found(make_server, clock):
    server = await make_server(clock=clock)
    tid = tid_of(await exchange(server.port, submit("echo", monitor=False, _sys_JobToken="k1",
                                                    _sys_DelaySeconds="60")))
    again = await exchange(server.port, submit("echo", monitor=False, _sys_JobToken="k1",
                                               _sys_DelaySeconds="60"))
    assert tid_of(again) == tid
    clock.advance(60)
    await finished(server, tid)


# -- recurring schedules -----------------------------------------------------------------


def every_five_minutes(**options) -> tuple[ScheduleSettings, ...]:
    return (ScheduleSettings("tick", "*/5 * * * *", "echo", variables={"Which": "tick"},
                             job_name="ticker", **options),)


async def scheduled_jobs(server) -> list[tuple[str, str | None]]:
    """(transaction ID, due time) of every job the schedule made, oldest first."""
    await server.engine.schedules_settled()
    lines = await exchange(server.port, xml_packet("ListJobs", {"_sys_Filter": "all",
                                                                "_sys_Format": "json"}))
    return [(job["Id"], job["Due"]) for job in json.loads(lines[0][10:])["Jobs"]
            if job["Schedule"] == "tick"]


async def all_finished(server) -> None:
    await server.engine.schedules_settled()
    for job in server.engine.jobs.live_jobs():
        await finished(server, job.transaction_id)


async def test_a_schedule_makes_one_job_per_due_time_across_restarts(make_server, clock,
                                                                   db_url):
    settings = {"clock": clock, "store": db_url, "schedules": every_five_minutes()}
    server = await make_server(**settings)
    assert await scheduled_jobs(server) == []  # (no catching up on a schedule never run)
    clock.advance(300)
    await all_finished(server)
    clock.advance(300)
    await all_finished(server)
    assert await scheduled_jobs(server) == [("T0000001", "2026-01-01T00:05:00Z"),
                                            ("T0000002", "2026-01-01T00:10:00Z")]
    server = await restart(make_server, server, **settings)
    clock.advance(299)
    assert len(await scheduled_jobs(server)) == 2
    clock.advance(1)
    await all_finished(server)
    assert (await scheduled_jobs(server))[2:] == [("T0000003", "2026-01-01T00:15:00Z")]
    record = await server.engine.jobs.record("T0000003")
    assert (record.project, record.params, record.identity) == (
        "echo", {"Which": "tick", "JobName": "ticker"}, "schedule:tick")
    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as db:
        assert db.execute("SELECT * FROM schedule_marks").fetchall() == [
            ("tick", record.run_at)]


async def test_a_time_missed_while_down_runs_once_at_start(make_server, clock, db_url):
    settings = {"clock": clock, "store": db_url, "schedules": every_five_minutes()}
    server = await make_server(**settings)
    clock.advance(300)
    await all_finished(server)
    server.close()
    await server.wait_closed()
    clock.advance(1000)  # 00:10, 00:15 and 00:20 pass while the server is down
    server = await make_server(**settings)
    await all_finished(server)
    assert await scheduled_jobs(server) == [("T0000001", "2026-01-01T00:05:00Z"),
                                            ("T0000002", "2026-01-01T00:20:00Z")]
    server = await restart(make_server, server, **settings)
    assert len(await scheduled_jobs(server)) == 2  # made once, not again at this start


async def test_a_time_missed_while_down_is_skipped_when_told(make_server, clock, db_url):
    settings = {"clock": clock, "store": db_url,
                "schedules": every_five_minutes(catch_up="skip")}
    server = await make_server(**settings)
    clock.advance(300)
    await all_finished(server)
    server.close()
    await server.wait_closed()
    clock.advance(1000)
    server = await make_server(**settings)
    assert len(await scheduled_jobs(server)) == 1
    clock.advance(200)  # to 00:25
    await all_finished(server)
    assert (await scheduled_jobs(server))[1:] == [("T0000002", "2026-01-01T00:25:00Z")]


async def test_a_schedule_can_name_its_queue_and_priority(make_server, clock):
    schedules = every_five_minutes(queue="nightly", priority=9)
    server = await make_server(clock=clock, schedules=schedules)
    clock.advance(300)
    await all_finished(server)
    record = await server.engine.jobs.record("T0000001")
    assert (record.queue, record.priority, record.schedule) == ("nightly", 9, "tick")


async def test_a_schedule_of_an_unknown_project_is_a_start_up_error(make_server, clock):
    from jobmonitor import ConfigError

    bad = (ScheduleSettings("typo", "0 * * * *", "no-such-project"),)
    with pytest.raises(ConfigError,
                       match=r"schedules\.typo\.project: no project 'no-such-project'"):
        await make_server(clock=clock, schedules=bad)


async def test_jobs_not_due_yet_count_against_max_queued_jobs(make_server, clock):
    server = await make_server(clock=clock, max_queued_jobs=2)
    for _ in range(2):
        tid_of(await exchange(server.port, submit("echo", monitor=False,
                                                  _sys_DelaySeconds="60")))
    assert await exchange(server.port, submit("echo", monitor=False, _sys_DelaySeconds="60")
                          ) == ["R0005011: Server busy: 2 jobs are already waiting"]
    clock.advance(60)
    await all_finished(server)


async def test_a_reload_adds_changes_and_removes_schedules(make_server, clock):
    server = await make_server(clock=clock, schedules=every_five_minutes())
    clock.advance(300)
    await all_finished(server)
    config = server.config
    server.engine.configure(config.replace(schedules=()))
    assert clock.pending == 0  # (no timer left for it)
    clock.advance(600)
    assert len(await scheduled_jobs(server)) == 1
    hourly = (ScheduleSettings("tick", "0 * * * *", "echo"),)
    server.engine.configure(config.replace(schedules=hourly))
    clock.advance(300)  # to 00:20: nothing is due on the hour's schedule
    assert len(await scheduled_jobs(server)) == 1
    clock.advance(2400)  # to 01:00
    await all_finished(server)
    assert [due for _, due in await scheduled_jobs(server)] == [
        "2026-01-01T00:05:00Z", "2026-01-01T01:00:00Z"]
