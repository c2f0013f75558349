"""The waiting lines without a server: order, limits, pauses, and the settings' checks."""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3

import pytest

from jobmonitor import Config, ConfigError
from jobmonitor.engine.job import Job
from jobmonitor.engine.queues import WaitingLines
from jobmonitor.queueing import QueueSettings, ScheduleSettings, cron_times
from jobmonitor.store.sqlite.store import SqliteStore
from jobmonitor.wire.records import JobRecord


@pytest.fixture(scope="module")
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture
def job(loop):
    def make(number: int, queue: str = "default", priority: int = 5) -> Job:
        record = JobRecord(f"T{number:07d}", "echo", {}, {}, queue=queue, priority=priority)
        return Job(record, loop)

    return make


def drain(lines: WaitingLines) -> list[int]:
    taken = []
    while (next_job := lines.pop_next()) is not None:
        taken.append(next_job.record.number)
    return taken


def test_priority_first_then_first_come_first_served(job):
    lines = WaitingLines(Config())
    for number, priority in enumerate((5, 9, 5, 1, 9, 5), 1):
        lines.push(job(number, priority=priority))
    assert lines.count == 6
    assert drain(lines) == [2, 5, 1, 3, 6, 4]
    assert lines.count == 0


def test_a_paused_queue_or_one_at_its_limit_is_passed_over(job):
    config = Config(queues=(QueueSettings("one", max_running=1), QueueSettings("held")))
    lines = WaitingLines(config)
    lines.pause("held")
    for number, queue in enumerate(("one", "one", "held", "default"), 1):
        lines.push(job(number, queue))
    first = lines.pop_next()
    assert first is not None and first.record.number == 1
    lines.started(first)
    assert drain(lines) == [4]
    lines.stopped(first)
    assert drain(lines) == [2]
    lines.resume("held")
    assert drain(lines) == [3]


def test_a_withdrawn_job_leaves_its_line(job):
    lines = WaitingLines(Config())
    held = [job(n, priority=n) for n in (3, 4, 5)]
    for each in held:
        lines.push(each)
    assert held[1] in lines and lines.remove(held[1]) and held[1] not in lines
    assert not lines.remove(held[1])
    assert drain(lines) == [5, 3]


def test_a_reload_keeps_a_pause_the_file_did_not_change():
    lines = WaitingLines(Config(queues=(QueueSettings("q"),)))
    lines.pause("q")
    lines.configure(Config(queues=(QueueSettings("q", max_running=3),)))
    assert [row.paused for row in lines.rows([], []) if row.name == "q"] == [True]
    lines.configure(Config(queues=(QueueSettings("q", paused=True),)))
    lines.configure(Config(queues=(QueueSettings("q", paused=False),)))
    assert [(row.paused, row.max_running) for row in lines.rows([], []) if row.name == "q"] == [
        (False, 8)]


@pytest.mark.parametrize("settings, message", [
    ({"cron": "* * * *"}, "cron: must have five fields"),
    ({"cron": "0 0 0 * * *"}, "cron: must have five fields"),
    ({"cron": "61 * * * *"}, "cron: '61 * * * *' is not a cron expression"),
    ({"timezone": "Mars/Olympus"}, "timezone: unknown time zone 'Mars/Olympus'"),
    ({"priority": 0}, "priority: must be a whole number 1 to 9, got 0"),
    ({"catch_up": "all"}, "catch_up: must be once or skip, got 'all'"),
    ({"queue": "a b"}, "queue: must be 1 to 64 letters"),
])
def test_bad_schedule_settings_are_refused(settings, message):
    values = {"cron": "0 6 * * *", "project": "echo", **settings}
    with pytest.raises(ConfigError, match=message.replace("*", r"\*")):
        ScheduleSettings("s", **values)


def test_bad_queue_settings_are_refused():
    with pytest.raises(ConfigError, match="max_running: must be a whole number of 1 or more"):
        QueueSettings("q", max_running=0)
    with pytest.raises(ConfigError, match="queues: 'q' is configured twice"):
        Config(queues=(QueueSettings("q"), QueueSettings("q")))
    with pytest.raises(ConfigError, match=r"schedules\.s\.queue: unknown queue 'x'"):
        Config(allow_new_queues=False,
               schedules=(ScheduleSettings("s", "0 6 * * *", "echo", queue="x"),))


def test_cron_times_follow_the_time_zone_across_a_dst_change():
    settings = ScheduleSettings("s", "30 6 * * *", "echo", timezone="Europe/Paris")
    start = dt.datetime(2026, 3, 28, 12, tzinfo=dt.UTC).timestamp()
    times = [dt.datetime.fromtimestamp(t, dt.UTC).strftime("%d %H:%M")
             for t, _ in zip(cron_times(settings, start), range(2), strict=False)]
    assert times == ["29 04:30", "30 04:30"]  # 06:30 in Paris: UTC+1 before, UTC+2 after
    latest = next(cron_times(settings, start, reverse=True))
    assert dt.datetime.fromtimestamp(latest, dt.UTC).strftime("%d %H:%M") == "28 05:30"


async def test_an_older_database_gets_the_new_columns(tmp_path):
    path = tmp_path / "old.db"
    store = SqliteStore(str(path))
    await store.open()
    await store.close()
    with sqlite3.connect(path) as db:  # as an earlier version left it
        db.execute("INSERT INTO jobs (number, project, params, doc_variables, identity, "
                   "status, progress_done, progress_total, progress_message, status_message, "
                   "worker, created, updated, line_count) VALUES (1, 'echo', '{}', '{}', "
                   "'anonymous', 'Queued', 0, 0, '', '', 'w', 1.0, 1.0, 0)")
        for column in ("queue", "priority", "run_at", "schedule"):
            db.execute(f"ALTER TABLE jobs DROP COLUMN {column}")
        db.execute("DROP TABLE schedule_marks")
    store = SqliteStore(str(path))
    recovery = await store.open()
    await store.close()
    [record] = recovery.unfinished
    assert (record.queue, record.priority, record.run_at, record.schedule) == (
        "default", 5, None, None)
    assert recovery.schedule_marks == {}
