"""The lifecycle on its own: each move records its state, event, line and hooks
together; a move the table does not allow raises and records nothing."""

from __future__ import annotations

import asyncio

import pytest

from jobmonitor import JobState, Outcome
from jobmonitor.engine import lifecycle
from jobmonitor.engine.job import Job
from jobmonitor.engine.lifecycle import (
    MOVES,
    TRANSITIONS,
    CancelReason,
    IllegalTransition,
    Move,
    can_transition,
)
from jobmonitor.engine.time_limit import TimeLimit
from jobmonitor.wire.records import JobRecord

from ...support.engine_harness import Lines, events

S = JobState
ENDED = "J0000001: Transaction T0000001 ended"


def new_job() -> Job:
    record = JobRecord("T0000001", "p", {}, {})
    lifecycle.queue(record, 0.0)
    return Job(record, asyncio.get_running_loop())


def test_the_table_of_states_is_made_from_the_moves():
    assert TRANSITIONS[S.QUEUED] == {S.PROCESSING, S.SUSPENDED, S.CANCELLED, S.FAILED}
    # (a job waiting for its due time may be suspended, and waits again when
    # resumed before that time)
    assert TRANSITIONS[S.CREATED] == {S.QUEUED, S.SUSPENDED, S.CANCELLED, S.FAILED}
    assert TRANSITIONS[S.SUSPENDED] == {S.QUEUED, S.PROCESSING, S.CANCELLED, S.FAILED,
                                        S.COMPLETED, S.COMPLETED_WITH_ERRORS, S.CREATED}
    assert all(not TRANSITIONS[state] for state in JobState if state.is_final)
    assert can_transition(S.PROCESSING, S.CANCELLED) and not can_transition(S.QUEUED, S.QUEUED)
    assert set(MOVES) == set(Move)


async def test_each_move_records_its_state_event_line_and_tells_the_hooks():
    job = new_job()
    told: list[tuple[str, object]] = []
    job.on_event = lambda _, event: told.append(("event", event.status))
    job.on_change = lambda changed, watched: told.append(("change", changed.state))
    lines = Lines(job)
    lifecycle.start(job)
    lifecycle.suspend(job)
    lifecycle.resume(job, running=True)
    lifecycle.retry(job, "Job queued to run again (attempt 2 of 2).")
    lifecycle.start(job)
    lifecycle.finish(job, Outcome.SUCCESS)
    assert events(job) == ["queued", "start", "suspended", "resumed", "retry", "start",
                           "complete"]
    assert told == [("event", "start"), ("change", S.PROCESSING),
                    ("event", "suspended"), ("change", S.SUSPENDED),
                    ("event", "resumed"), ("change", S.PROCESSING),
                    ("event", "retry"), ("change", S.QUEUED),
                    ("event", "start"), ("change", S.PROCESSING),
                    ("event", "complete"), ("change", S.COMPLETED),
                    ("change", S.COMPLETED)]  # (the closing stream's last flush)
    assert await lines.end() == [
        "J0000130: Job suspended.", "J0000131: Job resumed.",
        "J0000132: Job queued to run again (attempt 2 of 2).",
        "J0000020: Job completed successfully.", ENDED]
    assert (job.record.outcome, job.stream.closed) == (Outcome.SUCCESS, True)


async def test_a_job_interrupted_by_a_restart_is_queued_again_or_fails():
    again, failed = new_job(), new_job()
    for job in (again, failed):
        lifecycle.start(job)
        lifecycle.interrupt(job)
    lifecycle.requeue(again)
    lifecycle.finish(failed, Outcome.FAILED)
    assert (again.state, again.record.started, events(again)[-1]) == (S.QUEUED, None, "requeued")
    assert failed.state is S.FAILED
    assert [line.decode() for line in again.stream.lines] == [
        "J0005002: Job interrupted by a server restart\r\n",
        "J0000132: Job queued to run again.\r\n"]


@pytest.mark.parametrize(("moves", "illegal", "message"), [
    ([], lambda job: lifecycle.resume(job, running=False),
     "a Queued job cannot resume to the queue"),
    ([], lambda job: lifecycle.retry(job, "again"), "a Queued job cannot retry"),
    ([], lambda job: lifecycle.finish(job, Outcome.SUCCESS), "a Queued job cannot complete"),
    ([lifecycle.start], lifecycle.start, "a Processing job cannot start"),
    ([lifecycle.start, lifecycle.suspend], lifecycle.start, "a Suspended job cannot start"),
    ([lambda job: lifecycle.finish(job, Outcome.CANCELLED)], lifecycle.suspend,
     "a Cancelled job cannot suspend"),
    ([lambda job: lifecycle.finish(job, Outcome.CANCELLED)],
     lambda job: lifecycle.finish(job, Outcome.FAILED), "a Cancelled job cannot fail"),
])
async def test_an_illegal_move_raises_and_records_nothing(moves, illegal, message):
    job = new_job()
    for move in moves:
        move(job)
    record = job.record
    before = (record.status, record.outcome, list(record.history), len(job.stream),
              record.updated, record.started)
    with pytest.raises(IllegalTransition) as caught:
        illegal(job)
    assert str(caught.value) == f"T0000001: {message}"
    assert (record.status, record.outcome, list(record.history), len(job.stream),
            record.updated, record.started) == before


async def test_a_shutdown_cancel_says_so_in_its_lines_history_and_last_message():
    user, shutdown = new_job(), new_job()
    for job in (user, shutdown):
        lifecycle.start(job)
        job.info("working")
    lines = Lines(shutdown)
    lifecycle.finish(user, Outcome.CANCELLED)
    lifecycle.finish(shutdown, Outcome.CANCELLED, CancelReason.SHUTDOWN)
    assert await lines.end() == ["J0000100: working",
                                 "J0005004: Job cancelled: the server is shutting down.",
                                 "J0000023: Job cancelled by user.", ENDED]
    last = shutdown.record.history[-1]
    assert (last.status, last.info) == ("cancelled", "server shutdown")
    assert shutdown.snapshot().status_message == "Job cancelled: the server is shutting down."
    last = user.record.history[-1]
    assert (last.status, last.info, user.snapshot().status_message) == (
        "cancelled", None, "working")
    with pytest.raises(ValueError):
        user.error("spoofed", code=5004)  # only the server may say it


async def test_a_time_limit_counts_only_while_started():
    loop = asyncio.get_running_loop()
    expired = loop.create_future()
    limit = TimeLimit(loop, 0.2, lambda: expired.set_result(loop.time()))
    limit.start()
    limit.stop()
    left = limit.left_s
    assert 0.15 < left <= 0.2 and not limit.running
    await asyncio.sleep(0.25)  # longer than the limit: standing still, it does not expire
    assert (limit.left_s, expired.done()) == (left, False)
    started = loop.time()
    limit.start()
    assert await asyncio.wait_for(expired, 2) - started >= left - 0.01
    assert (limit.left_s, limit.running) == (0.0, False)
    limit.start()  # expired: it does not run again
    assert not limit.running
