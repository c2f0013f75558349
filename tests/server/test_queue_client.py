"""The client library's queue options and commands, typed, against a real server."""

from __future__ import annotations

import datetime as dt

import pytest

from jobmonitor import JobState, Outcome, Reply, ReplyError
from jobmonitor.client import Client, QueueInfo, SyncClient
from jobmonitor.queueing import QueueSettings

from ..conftest import finished, release
from ..support.clock import ManualClock


async def test_submit_with_queue_priority_and_due_time(make_server):
    clock = ManualClock()
    server = await make_server(clock=clock, queues=(QueueSettings("reports", max_running=2),))
    client = Client("127.0.0.1", server.port)
    due = dt.datetime(2026, 1, 1, 2, 0, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    later = await client.submit("echo", queue="reports", priority=8, run_at=due, monitor=False)
    status = await client.status(later.transaction_id)
    assert (status.status, status.queue, status.priority, status.due, status.schedule) == (
        JobState.CREATED, "reports", 8, dt.datetime(2026, 1, 1, 1, tzinfo=dt.UTC), None)
    delayed = await client.submit("echo", delay_s=1.5, monitor=False)
    assert (await client.status(delayed.transaction_id)).due == dt.datetime(
        2026, 1, 1, 0, 0, 1, tzinfo=dt.UTC)  # (shown to the second)
    assert await client.queues() == [QueueInfo("default", 0, 0, 8, False, 1),
                                     QueueInfo("reports", 0, 0, 2, False, 1)]
    clock.advance(2)
    assert (await delayed.result()).outcome is Outcome.SUCCESS
    assert await client.pause_queue("reports") == "Queue reports paused"
    assert [q.paused for q in await client.queues()] == [False, True]
    assert await client.resume_queue("reports") == "Queue reports resumed"
    with pytest.raises(ReplyError) as refused:
        await client.submit("echo", priority=10)
    assert refused.value.reply is Reply.INVALID_VALUE


async def test_rerun_follows_the_new_job(server):
    client = Client("127.0.0.1", server.port)
    first = await client.submit("fail", monitor=False)
    await finished(server, first.transaction_id)
    again = await client.rerun(first.transaction_id)
    assert again.transaction_id != first.transaction_id
    assert (await again.result()).outcome is Outcome.FAILED
    info = await client.info(again.transaction_id)
    assert (info.history[0].status, info.history[0].info) == ("rerun", first.transaction_id)
    quiet = await client.rerun(first.transaction_id, monitor=False)
    await finished(server, quiet.transaction_id)
    running = await client.submit("wait", {"Key": "rerun-busy"}, monitor=False)
    with pytest.raises(ReplyError) as refused:
        await client.rerun(running.transaction_id)
    assert refused.value.reply is Reply.INVALID_STATE
    await release("rerun-busy")
    await finished(server, running.transaction_id)


async def test_a_due_time_needs_a_time_zone():
    client = Client("127.0.0.1", 1)  # (nothing is sent: the checks come first)
    with pytest.raises(ValueError, match="run_at must have a time zone"):
        await client.submit("echo", run_at=dt.datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="give run_at or delay_s, not both"):
        await client.submit("echo", run_at=dt.datetime.now(dt.UTC), delay_s=1)


async def test_the_sync_client_has_the_same_commands(make_server):
    import asyncio

    server = await make_server()

    def use() -> tuple[list[QueueInfo], str, str]:
        with SyncClient("127.0.0.1", server.port) as client:
            done = client.submit("echo", queue="side", priority=2)
            done.result()
            again = client.rerun(done.transaction_id)
            again.result()
            return client.queues(), client.pause_queue("side"), client.resume_queue("side")

    queues, paused, resumed = await asyncio.to_thread(use)
    assert [q.name for q in queues] == ["default"]
    assert (paused, resumed) == ("Queue side paused", "Queue side resumed")
