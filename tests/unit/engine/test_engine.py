"""The engine driven without sockets: real handlers on the test's loop, a fake
store, and the jobs' streams read as text."""

from __future__ import annotations

import asyncio
import time

import pytest

from jobmonitor import JobFailed, JobState, RequestError
from jobmonitor.engine import lifecycle
from jobmonitor.engine.job import Job
from jobmonitor.engine.registry import HandlerRegistry
from jobmonitor.store.base import Recovery
from jobmonitor.wire.codes import Reply
from jobmonitor.wire.records import HistoryEvent, JobRecord

from ...support.engine_harness import MACHINE, Lines, events, running_engine, submit
from ...support.fake_store import FakeStore

S = JobState
FIRST = f"J0000100: Machine name: {MACHINE}"
SUSPENDED, RESUMED = "J0000130: Job suspended.", "J0000131: Job resumed."
CANCELLED = "J0000023: Job cancelled by user."
SHUTDOWN = "J0005004: Job cancelled: the server is shutting down."


def ended(job: Job) -> str:
    return f"J0000001: Transaction {job.transaction_id} ended"


class Gates:
    """Events a test opens to let its handlers go on, by name."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}

    def __getitem__(self, name: str) -> asyncio.Event:
        return self._events.setdefault(name, asyncio.Event())


@pytest.fixture
def gates() -> Gates:
    return Gates()


@pytest.fixture
def registry(gates: Gates) -> HandlerRegistry:
    app = HandlerRegistry()

    @app.job("quick")
    async def quick(job: Job) -> None:
        job.info("done")

    @app.job("gate")
    async def gate(job: Job) -> None:
        job.info("waiting")
        await gates["open"].wait()
        job.info("through")

    @app.job("checkpoints")
    async def checkpoints(job: Job) -> None:
        for step in (1, 2):
            job.info(f"step {step}")
            await gates[f"step {step}"].wait()
            await job.checkpoint()
        job.info("done")

    @app.job("pausable")
    async def pausable(job: Job) -> None:
        said = job.info
        with job.pausable(lambda: said("paused"), lambda: said("going on")):
            job.info("working")
            await gates["open"].wait()
        job.info("done")

    @app.job("flaky", retries=1)
    async def flaky(job: Job) -> None:
        job.info(f"attempt {job.attempt}")
        if job.attempt == 1:
            raise JobFailed("first run fails")

    @app.job("overdue", timeout_s=0.2)
    async def overdue(job: Job) -> None:
        job.info("working")
        with job.pausable(lambda: None, lambda: None):
            await gates["never"].wait()

    @app.job("thread")
    def in_thread(job: Job) -> None:
        job.info("in a thread")
        while True:
            job.checkpoint()
            time.sleep(0.001)

    @app.job("survivor", retry_on_restart=True)
    async def survivor(job: Job) -> None:
        job.info("ran again")

    return app


# -- suspend and resume --------------------------------------------------------------


async def test_a_queued_job_suspended_leaves_the_queue_and_resumed_goes_back(registry, gates):
    async with running_engine(registry, max_running=1) as engine:
        holder, _ = await submit(engine, "gate")
        job, lines = await submit(engine, "quick")
        assert (job.state, engine.queued_count) == (S.QUEUED, 1)
        assert engine.suspend(job) == f"{job.transaction_id} suspended"
        assert (job.state, engine.queued_count) == (S.SUSPENDED, 0)
        gates["open"].set()
        await Lines(holder).end()
        assert job.state is S.SUSPENDED  # the free slot did not start it
        assert engine.resume(job) == f"{job.transaction_id} resumed"
        assert await lines.end() == [FIRST, SUSPENDED, RESUMED, "J0000100: done",
                                     "J0000020: Job completed successfully.", ended(job)]
        assert events(job) == ["queued", "suspended", "resumed", "start", "complete"]


async def test_a_running_job_pauses_at_its_checkpoint_and_goes_on_when_resumed(registry, gates):
    async with running_engine(registry) as engine:
        job, lines = await submit(engine, "checkpoints")
        await lines.until("J0000100: step 1")
        assert engine.suspend(job) == f"{job.transaction_id} suspend requested"
        assert (job.state, job.suspend_requested) == (S.PROCESSING, True)
        gates["step 1"].set()
        await lines.until(SUSPENDED)
        assert (job.state, job.suspend_requested) == (S.SUSPENDED, False)
        gates["step 2"].set()  # it stays at its checkpoint
        with pytest.raises(RequestError) as caught:
            engine.suspend(job)
        assert caught.value.code is Reply.INVALID_STATE
        assert engine.resume(job) == f"{job.transaction_id} resumed"
        assert (await lines.end())[2:] == [SUSPENDED, RESUMED, "J0000100: step 2",
                                           "J0000100: done",
                                           "J0000020: Job completed successfully.", ended(job)]
        assert events(job) == ["queued", "start", "suspended", "resumed", "complete"]


async def test_a_pausable_job_pauses_at_once(registry, gates):
    async with running_engine(registry) as engine:
        job, lines = await submit(engine, "pausable")
        await lines.until("J0000100: working")
        assert engine.suspend(job) == f"{job.transaction_id} suspended"
        assert job.state is S.SUSPENDED
        assert engine.resume(job) == f"{job.transaction_id} resumed"
        gates["open"].set()
        assert (await lines.end())[1:] == [
            "J0000100: working", "J0000100: paused", SUSPENDED, RESUMED, "J0000100: going on",
            "J0000100: done", "J0000020: Job completed successfully.", ended(job)]


async def test_a_job_in_a_thread_pauses_at_its_checkpoint(registry):
    async with running_engine(registry) as engine:
        job, lines = await submit(engine, "thread")
        await lines.until("J0000100: in a thread")
        engine.suspend(job)
        await lines.until(SUSPENDED)
        engine.resume(job)
        await lines.until(RESUMED)
        engine.cancel(job)
        assert (await lines.end())[-2:] == [CANCELLED, ended(job)]
        assert job.state is S.CANCELLED


async def test_resuming_a_job_that_is_not_suspended_is_refused(registry):
    async with running_engine(registry) as engine:
        job, _ = await submit(engine, "gate")
        with pytest.raises(RequestError) as caught:
            engine.resume(job)
        assert (caught.value.code, caught.value.detail) == (
            Reply.INVALID_STATE, f"{job.transaction_id} is Processing, not Suspended")


# -- cancel, retry, time limit -------------------------------------------------------


async def test_cancel_ends_a_running_and_a_queued_job(registry):
    async with running_engine(registry, max_running=1) as engine:
        running, running_lines = await submit(engine, "gate")
        queued, queued_lines = await submit(engine, "quick")
        await running_lines.until("J0000100: waiting")
        engine.cancel(queued)
        engine.cancel(running)
        assert await queued_lines.end() == [FIRST, CANCELLED, ended(queued)]
        assert await running_lines.end() == [FIRST, "J0000100: waiting", CANCELLED,
                                             ended(running)]
        assert (running.state, running.cancel_requested, queued.cancel_requested) == (
            S.CANCELLED, True, True)
        with pytest.raises(RequestError):
            engine.cancel(running)
        assert events(queued) == ["queued", "cancelled"]


async def test_a_job_cancelled_as_it_starts_ends_without_its_handler(registry):
    # Its task, cancelled before its first step, never ran: the job stayed
    # running until the engine gave up on it (CANCEL_WAIT_S, 5 s, at a stop).
    async with running_engine(registry) as engine:
        job, lines = await submit(engine, "gate")  # started, its task not yet run
        engine.cancel(job)
        assert await lines.end() == [FIRST, CANCELLED, ended(job)]
        assert engine.running_count == 0


async def test_a_failed_job_runs_again_in_the_same_stream(registry):
    async with running_engine(registry) as engine:
        job, lines = await submit(engine, "flaky")
        assert (await lines.end())[1:] == [
            "J0000100: attempt 1", "J0005000: first run fails",
            "J0000132: Job queued to run again (attempt 2 of 2).", "J0000100: attempt 2",
            "J0000020: Job completed successfully.", ended(job)]
        assert events(job) == ["queued", "start", "retry", "start", "complete"]
        assert job.attempt == 2


async def test_a_job_past_its_time_limit_fails(registry):
    async with running_engine(registry) as engine:
        job, lines = await submit(engine, "overdue")
        assert (await lines.end())[1:] == [
            "J0000100: working", "J0005000: Job timed out after 0.2 s", "J0000022: Job failed.",
            ended(job)]


async def test_time_suspended_does_not_count_against_the_limit(registry):
    loop = asyncio.get_running_loop()
    async with running_engine(registry) as engine:
        job, lines = await submit(engine, "overdue")  # 0.2 s of running time
        await lines.until("J0000100: working")
        started = loop.time()
        engine.suspend(job)
        await asyncio.sleep(0.3)  # suspended for longer than the limit
        assert job.state is S.SUSPENDED
        engine.resume(job)
        assert (await lines.end())[-3:] == [
            "J0005000: Job timed out after 0.2 s", "J0000022: Job failed.", ended(job)]
        assert loop.time() - started >= 0.45


async def test_a_cancel_while_a_timed_out_job_stops_ends_it_cancelled(registry, monkeypatch):
    from jobmonitor.engine.run import Run

    time_out = Run._time_out

    def time_out_then_cancel_and_suspend(run: Run) -> None:
        time_out(run)  # the run is being stopped; before it has stopped:
        answers.append(engine.suspend(run.job))
        engine.cancel(run.job)

    answers: list[str] = []
    monkeypatch.setattr(Run, "_time_out", time_out_then_cancel_and_suspend)
    async with running_engine(registry) as engine:
        job, lines = await submit(engine, "overdue")
        assert (await lines.end())[1:] == [
            "J0000100: working", "J0005000: Job timed out after 0.2 s", CANCELLED, ended(job)]
    # a run being stopped does not pause (its pausable work must take the stop)
    assert answers == [f"{job.transaction_id} suspend requested"]
    assert events(job) == ["queued", "start", "cancelled"]


# -- stopping and starting again -----------------------------------------------------------


async def test_a_shutdown_cancels_with_its_own_line(registry):
    async with running_engine(registry, max_running=1) as engine:
        running, running_lines = await submit(engine, "gate")
        queued, queued_lines = await submit(engine, "quick")
        await running_lines.until("J0000100: waiting")
        await engine.stop(0.0)
        notice = "J0000190: Server stopping: running jobs have 0 s to finish"
        assert await queued_lines.end() == [FIRST, notice, SHUTDOWN, CANCELLED, ended(queued)]
        assert (await running_lines.end())[2:] == [notice, SHUTDOWN, CANCELLED, ended(running)]
        for job in (running, queued):
            last = job.record.history[-1]
            assert (last.status, last.info) == ("cancelled", "server shutdown")


async def test_a_restart_recovers_queued_interrupted_and_delayed_jobs(registry):
    now = time.time()

    def record(number: int, project: str, status: JobState, *, started: bool = False,
               retry_at: float | None = None) -> JobRecord:
        history = [HistoryEvent("job", "queued", now - 10)]
        if started:
            history.append(HistoryEvent("job", "start", now - 5))
        if retry_at is not None:
            history.append(HistoryEvent("job", "retry", retry_at))
        return JobRecord(f"T000000{number}", project, {}, {}, status=status,
                         started=now - 5 if started else None, history=history)

    recovery = Recovery(last_number=4, unfinished=[
        record(1, "quick", S.QUEUED),
        record(2, "survivor", S.PROCESSING, started=True),
        record(3, "quick", S.PROCESSING, started=True),
        record(4, "flaky", S.QUEUED, retry_at=now),  # retry_delay_s 0: due now
    ])
    store = FakeStore(durable=True, recovery=recovery)
    async with running_engine(registry, store=store) as engine:
        jobs = [engine.jobs.live(f"T000000{n}") for n in range(1, 5)]
        assert all(jobs)
        queued, survivor, interrupted, delayed = [Lines(job) for job in jobs if job]
        assert (await queued.end())[-2:] == ["J0000020: Job completed successfully.",
                                             "J0000001: Transaction T0000001 ended"]
        assert await survivor.end() == [
            "J0005002: Job interrupted by a server restart", "J0000132: Job queued to run again.",
            "J0000100: ran again", "J0000020: Job completed successfully.",
            "J0000001: Transaction T0000002 ended"]
        assert await interrupted.end() == [
            "J0005002: Job interrupted by a server restart", "J0000022: Job failed.",
            "J0000001: Transaction T0000003 ended"]
        assert (await delayed.end())[0] == "J0000100: attempt 2"
        assert [events(job) for job in jobs if job] == [
            ["queued", "start", "complete"],
            ["queued", "start", "requeued", "start", "complete"],
            ["queued", "start", "failed"],
            ["queued", "retry", "start", "complete"]]
        submitted, _ = await submit(engine, "quick")
        assert submitted.transaction_id == "T0000005"
    assert store.called("open") == [None] and store.called("close") == [True]


async def test_a_durable_store_keeps_queued_jobs_and_gets_every_change(registry):
    store = FakeStore(durable=True)
    async with running_engine(registry, store=store, max_running=1) as engine:
        holder, _ = await submit(engine, "gate")
        queued, _ = await submit(engine, "quick")
        await engine.stop(0.0)
    assert store.called("add") == [holder.transaction_id, queued.transaction_id]
    assert store.records[queued.transaction_id].status is S.QUEUED  # kept for the next start
    assert store.records[holder.transaction_id].status is S.CANCELLED
    assert queued.state is S.QUEUED and not queued.stream.closed


async def test_a_queued_job_whose_handler_is_gone_after_a_restart_fails(registry, gates):
    async with running_engine(registry, max_running=1, shutdown_grace_s=0.1) as engine:
        holder, _ = await submit(engine, "gate")
        job, lines = await submit(engine, "quick")
        gates["open"].set()
        without = {name: h for name, h in registry.handlers.items() if name != "quick"}
        await engine.restart(0.5, without)
        assert (await lines.end())[-3:] == [
            "J0005000: No handler for project 'quick' after the job modules were reloaded",
            "J0000022: Job failed.", ended(job)]
        assert holder.state is S.COMPLETED


async def test_an_engine_bug_moving_a_finished_job_raises(registry):
    async with running_engine(registry) as engine:
        job, lines = await submit(engine, "quick")
        await lines.end()
        with pytest.raises(lifecycle.IllegalTransition):
            lifecycle.start(job)
        assert job.state is S.COMPLETED



async def test_a_job_submitted_while_none_waits_starts_without_entering_a_line(
        registry, gates, monkeypatch):
    # The usual submit skips the waiting line (it would be taken straight back);
    # one that must wait (no free slot) still goes into it, and starts in turn.
    from jobmonitor.engine.queues import WaitingLines

    pushed: list[str] = []
    push = WaitingLines.push

    def counting_push(self: WaitingLines, job: Job) -> None:
        pushed.append(job.transaction_id)
        push(self, job)

    monkeypatch.setattr(WaitingLines, "push", counting_push)
    async with running_engine(registry, max_running=1) as engine:
        first, first_lines = await submit(engine, "gate")
        assert first.state is S.PROCESSING and pushed == []
        second, second_lines = await submit(engine, "quick")
        assert second.state is S.QUEUED and pushed == [second.transaction_id]
        gates["open"].set()
        await first_lines.end()
        await second_lines.end()
        assert second.state is S.COMPLETED
