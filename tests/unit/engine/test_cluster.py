"""The engine as a cluster's node: several engines on the test's loop sharing one
fake database (``FakeSharedStore``), each the way a server on PostgreSQL is."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest

from jobmonitor import JobState, RequestError
from jobmonitor.config import Config
from jobmonitor.engine.engine import Engine
from jobmonitor.engine.job import Job
from jobmonitor.engine.queues import Placement
from jobmonitor.engine.registry import HandlerRegistry
from jobmonitor.errors import StoreUnavailable
from jobmonitor.queueing import QueueSettings, ScheduleSettings
from jobmonitor.wire.codes import Reply

from ...support.clock import ManualClock
from ...support.engine_harness import WAIT_S, Lines
from ...support.fake_shared_store import FakeDatabase, FakeSharedStore

S = JobState
FAILED = "J0000022: Job failed."
CANCELLED = "J0000023: Job cancelled by user."


@pytest.fixture
def gate() -> asyncio.Event:
    return asyncio.Event()


@pytest.fixture
def registry(gate: asyncio.Event) -> HandlerRegistry:
    app = HandlerRegistry()

    @app.job("quick")
    async def quick(job: Job) -> None:
        job.info("done")

    @app.job("gate")
    async def gated(job: Job) -> None:
        job.info("waiting")
        await gate.wait()
        job.info("through")

    @app.job("steps")
    async def steps(job: Job) -> None:
        for step in range(3):
            job.info(f"step {step}")
            await job.checkpoint()
            await gate.wait()

    return app


class Cluster:
    """Nodes on one fake database."""

    def __init__(self, registry: HandlerRegistry) -> None:
        self.db = FakeDatabase()
        self.registry = registry
        self.engines: dict[str, Engine] = {}
        self.stores: dict[str, FakeSharedStore] = {}

    async def node(self, name: str, clock: ManualClock | None = None,
                   **settings: object) -> Engine:
        store = FakeSharedStore(self.db, name, f"127.0.0.1:{len(self.stores) + 7400}")
        config = Config(**{"keep_days": 0, **settings})  # type: ignore[arg-type]
        engine = Engine(self.registry.handlers, config, store, clock=clock)
        await engine.start()
        self.engines[name], self.stores[name] = engine, store
        return engine

    async def stop(self) -> None:
        for name, engine in self.engines.items():
            if not self.stores[name].closed:
                await engine.stop(0.0)


@contextlib.asynccontextmanager
async def cluster(registry: HandlerRegistry) -> AsyncIterator[Cluster]:
    nodes = Cluster(registry)
    try:
        yield nodes
    finally:
        await nodes.stop()


async def follow(engine: Engine, transaction_id: str, from_line: int = 1,
                 until: str | None = None) -> list[str]:
    """What a monitor on ``engine`` is sent of a job held elsewhere (stored lines,
    then each line once stored), to the end or until the line ``until``."""
    texts: list[str] = []
    line = from_line

    async def read() -> None:
        nonlocal line
        while True:
            page = await engine.jobs.read_lines(transaction_id, line, 100)
            if page:
                texts.extend(raw.decode().rstrip("\r\n") for raw in page)
                line += len(page)
                if until is not None and until in texts:
                    return
                continue
            if not await engine.jobs.more_stored(transaction_id, line, 1.0):
                return

    await asyncio.wait_for(read(), WAIT_S)
    return texts


async def until_state(engine: Engine, transaction_id: str, state: JobState) -> None:
    for _ in range(200):
        if (await engine.jobs.record(transaction_id)).status is state:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{transaction_id} never became {state.value}")


async def test_a_node_runs_its_own_submit_when_it_has_a_slot(registry):
    async with cluster(registry) as nodes:
        a = await nodes.node("a")
        tid, job = await a.submit("quick", {}, {})
        assert job is not None  # held and run here
        assert await Lines(job).end() == [
            "J0000100: Machine name: a", "J0000100: done",
            "J0000020: Job completed successfully.", f"J0000001: Transaction {tid} ended"]
        assert (await a.jobs.record(tid)).status is S.COMPLETED


async def test_a_busy_node_stores_the_job_and_a_free_node_claims_it(registry, gate):
    async with cluster(registry) as nodes:
        a = await nodes.node("a", max_running=1)
        await a.submit("gate", {}, {})  # a's one slot
        b = await nodes.node("b")
        tid, job = await a.submit("quick", {}, {})
        assert job is None and a.jobs.live(tid) is None  # only in the store
        lines = await follow(nodes.engines["a"], tid)
        assert lines == ["J0000100: Machine name: a", "J0000100: Machine name: b",
                         "J0000100: done", "J0000020: Job completed successfully.",
                         f"J0000001: Transaction {tid} ended"]
        record = await b.jobs.record(tid)
        assert (record.status, record.worker) == (S.COMPLETED, "b")
        gate.set()


async def test_a_node_started_later_claims_what_waits(registry, gate):
    async with cluster(registry) as nodes:
        a = await nodes.node("a", max_running=1)
        await a.submit("gate", {}, {})
        # (seven: more than one block of numbers)
        waiting = [(await a.submit("quick", {}, {}))[0] for _ in range(7)]
        assert len(set(waiting)) == 7
        await nodes.node("b", max_running=2)
        for tid in waiting:
            await until_state(a, tid, S.COMPLETED)
        assert {(await a.jobs.record(tid)).worker for tid in waiting} == {"b"}
        gate.set()


async def test_a_monitor_on_another_node_gets_every_line_once_in_order(registry, gate):
    async with cluster(registry) as nodes:
        b = await nodes.node("b")
        c = await nodes.node("c", max_running=1)
        tid, job = await b.submit("steps", {}, {})
        assert job is not None
        watched = asyncio.ensure_future(follow(c, tid))
        partial = await follow(c, tid, until="J0000100: step 0")
        gate.set()
        lines = await watched
        assert lines == ["J0000100: Machine name: b", "J0000100: step 0", "J0000100: step 1",
                         "J0000100: step 2", "J0000020: Job completed successfully.",
                         f"J0000001: Transaction {tid} ended"]
        assert partial == lines[:2]
        assert await follow(c, tid, from_line=3) == lines[2:]  # re-attach: exact
        assert await follow(c, tid, from_line=7) == []  # (past the end)


async def test_two_nodes_racing_one_job_token_make_one_job(registry, gate):
    async with cluster(registry) as nodes:
        a, b = await nodes.node("a"), await nodes.node("b")
        first, second = await asyncio.gather(
            a.submit("gate", {}, {}, identity="ann", job_token="once"),
            b.submit("gate", {}, {}, identity="ann", job_token="once"))
        assert first[0] == second[0]
        assert len([row for row in nodes.db.rows.values()
                    if row.record.job_token == "once"]) == 1
        gate.set()


async def test_cancel_suspend_resume_reach_the_node_that_holds_the_job(registry, gate):
    async with cluster(registry) as nodes:
        b = await nodes.node("b")
        c = await nodes.node("c")
        tid, job = await b.submit("steps", {}, {})
        assert job is not None
        lines = Lines(job)
        await lines.until("J0000100: step 0")
        assert await c.act_elsewhere(tid, "suspend") == f"{tid} suspend requested"
        gate.set()
        await lines.until("J0000130: Job suspended.")
        await until_state(c, tid, S.SUSPENDED)
        with pytest.raises(RequestError) as caught:
            await c.act_elsewhere(tid, "suspend")
        assert caught.value.code is Reply.INVALID_STATE
        gate.clear()
        assert await c.act_elsewhere(tid, "resume") == f"{tid} resumed"
        await lines.until("J0000131: Job resumed.")
        assert await c.act_elsewhere(tid, "cancel") == tid
        assert (await lines.end())[-2:] == [CANCELLED, f"J0000001: Transaction {tid} ended"]
        with pytest.raises(RequestError) as caught:
            await c.act_elsewhere(tid, "cancel")
        assert caught.value.code is Reply.INVALID_STATE


async def test_a_queued_job_nobody_holds_is_taken_to_be_cancelled(registry, gate):
    async with cluster(registry) as nodes:
        a = await nodes.node("a", max_running=1)
        await a.submit("gate", {}, {})
        tid, job = await a.submit("quick", {}, {})
        assert job is None
        assert await a.act_elsewhere(tid, "cancel") is None  # held here now
        held = a.jobs.live(tid)
        assert held is not None
        a.cancel(held)
        await until_state(a, tid, S.CANCELLED)
        gate.set()


async def test_a_dead_nodes_running_job_ends_naming_it_and_its_woken_copy_writes_nothing(
        registry, gate):
    async with cluster(registry) as nodes:
        a = await nodes.node("a")
        b = await nodes.node("b")
        tid, job = await a.submit("steps", {}, {})
        assert job is not None
        await Lines(job).until("J0000100: step 0")
        await follow(b, tid, until="J0000100: step 0")
        nodes.db.declare_dead(nodes.stores["a"], heir=nodes.stores["b"])
        lines = await follow(b, tid)
        assert lines[-3:] == ["J0005002: Job interrupted: node a stopped", FAILED,
                              f"J0000001: Transaction {tid} ended"]
        gate.set()  # a's copy goes on, and is fenced at its next commit
        for _ in range(100):
            if a.jobs.live(tid) is None:
                break
            await asyncio.sleep(0.01)
        assert a.jobs.live(tid) is None  # lost: stopped and forgotten
        assert await follow(b, tid) == lines  # nothing more was written
        assert a.running_count == 0


async def test_a_node_declared_dead_hears_lost_at_its_heartbeat(registry, gate):
    async with cluster(registry) as nodes:
        a = await nodes.node("a")
        await nodes.node("b")
        tid, job = await a.submit("gate", {}, {})
        assert job is not None
        await Lines(job).until("J0000100: waiting")
        nodes.db.declare_dead(nodes.stores["a"])
        nodes.stores["a"].heartbeat()
        for _ in range(100):
            if a.running_count == 0:
                break
            await asyncio.sleep(0.01)
        assert (a.running_count, a.jobs.live(tid)) == (0, None)
        record = await a.jobs.record(tid)
        assert (record.status, record.worker) == (S.FAILED, "a")
        gate.set()


async def test_a_stopping_node_lets_go_of_its_waiting_jobs(registry, gate):
    async with cluster(registry) as nodes:
        a = await nodes.node("a", max_running=1)
        await a.submit("gate", {}, {})
        tid, _ = await a.submit("quick", {}, {})
        assert await a.act_elsewhere(tid, "suspend") is None
        held = a.jobs.live(tid)
        assert held is not None
        a.suspend(held)
        await a.stop(0.0)
        assert nodes.db.rows[tid].node_id is None
        b = await nodes.node("b")
        assert await b.act_elsewhere(tid, "resume") is None  # taken, resumed, run here
        resumed = b.jobs.live(tid)
        assert resumed is not None
        b.resume(resumed)
        await until_state(b, tid, S.COMPLETED)
        gate.set()


async def test_list_nodes_and_the_clusters_task_log(registry):
    async with cluster(registry) as nodes:
        a = await nodes.node("a")
        await nodes.node("b")
        tid, job = await a.submit("quick", {}, {})
        assert job is not None
        await Lines(job).end()
        assert [node.name for node in await nodes.engines["b"].nodes()] == ["a", "b"]
        events = await nodes.engines["b"].task_log()
        assert [(e.transaction_id, e.event.status) for e in events] == [
            (tid, "queued"), (tid, "start"), (tid, "complete")]
        page = await nodes.engines["b"].jobs.list_page(True, None, after=None, limit=10)
        assert page.records == []


async def test_every_node_runs_the_schedules_and_each_due_time_makes_one_job(registry):
    clock = ManualClock()
    schedules = (ScheduleSettings("tick", "*/5 * * * *", "quick"),)
    async with cluster(registry) as nodes:
        engines = [await nodes.node(name, clock, schedules=schedules) for name in "abc"]
        for _ in range(2):
            clock.advance(300)
            for engine in engines:
                await engine.schedules_settled()
        made = sorted(row.record.job_token or "" for row in nodes.db.rows.values())
        due = clock.time() - 300
        assert made == [f"schedule:tick:{due:.0f}", f"schedule:tick:{due + 300:.0f}"]


async def test_a_submit_while_the_database_is_down_is_refused_and_leaves_nothing(registry):
    async with cluster(registry) as nodes:
        a = await nodes.node("a")
        nodes.db.down = True
        for _ in range(7):  # (past the numbers at hand)
            with pytest.raises(StoreUnavailable):
                await a.submit("quick", {}, {})
        assert (a.jobs.live_jobs(), nodes.db.rows) == ([], {})
        nodes.db.down = False
        tid, job = await a.submit("quick", {}, {})
        assert job is not None
        await Lines(job).end()
        assert list(nodes.db.rows) == [tid]


async def test_a_claimed_jobs_interruption_names_the_node_that_ran_it(registry, gate):
    async with cluster(registry) as nodes:
        a = await nodes.node("a", max_running=1)
        await a.submit("gate", {}, {})
        b = await nodes.node("b", max_running=1)
        tid, job = await a.submit("steps", {}, {})
        assert job is None  # b claims it
        await follow(a, tid, until="J0000100: step 0")
        nodes.db.declare_dead(nodes.stores["b"], heir=nodes.stores["a"])
        lines = await follow(a, tid)
        assert lines[-3] == "J0005002: Job interrupted: node b stopped"
        assert (await a.jobs.record(tid)).worker == "b"
        assert b.jobs.live(tid) is not None  # (b hears it lost the job at its heartbeat)
        gate.set()


async def test_a_queued_job_taken_to_be_suspended_is_not_started_first(registry, gate):
    async with cluster(registry) as nodes:
        a = await nodes.node("a", max_running=1)
        await a.submit("gate", {}, {})
        tid, job = await a.submit("quick", {}, {})
        assert job is None  # nobody holds it
        c = await nodes.node("c")  # (free: it would claim the job at its next turn)
        assert await c.act_elsewhere(tid, "suspend") is None  # taken, before that claim
        held = c.jobs.live(tid)
        assert held is not None
        assert c.suspend(held) == f"{tid} suspended"  # not started: suspended at once
        await c.settle(held)
        assert (await a.jobs.record(tid)).status is S.SUSPENDED
        assert "J0000100: done" not in await follow(a, tid, until="J0000130: Job suspended.")
        gate.set()


async def test_a_node_whose_claim_found_nothing_claims_no_more_as_its_jobs_end(registry):
    # (Each job's end frees a slot: a claim each would cost a statement per job.)
    async with cluster(registry) as nodes:
        a = await nodes.node("a")
        store = nodes.stores["a"]
        claims: list[int] = []
        claim = store.claim

        async def counted(limit, queues=None):
            claims.append(limit)
            return await claim(limit, queues)

        store.claim = counted  # type: ignore[method-assign]
        await a.submit("quick", {}, {})  # (a claim at the first end finds none left)
        for _ in range(100):
            if claims and (a._claiming is None or a._claiming.done()):
                break
            await asyncio.sleep(0.01)
        before = len(claims)
        for _ in range(5):
            _, job = await a.submit("quick", {}, {})
            assert job is not None
            await Lines(job).end()
        assert len(claims) == before


async def test_a_busy_node_claims_its_own_stored_job_when_its_slot_frees(registry, gate):
    async with cluster(registry) as nodes:
        a = await nodes.node("a", max_running=1)
        await a.submit("gate", {}, {})
        tid, job = await a.submit("quick", {}, {})
        assert job is None  # stored for anyone: only a has a slot, once the gate opens
        gate.set()
        await until_state(a, tid, S.COMPLETED)
        assert (await a.jobs.record(tid)).worker == "a"


async def test_a_request_a_stopping_node_had_not_read_is_kept_for_the_next_holder(registry,
                                                                                 gate):
    @registry.job("flaky", retries=1, retry_delay_s=0.2)
    async def flaky(job: Job) -> None:
        if job.attempt == 1:
            raise RuntimeError("first try")
        await gate.wait()

    async with cluster(registry) as nodes:
        b = await nodes.node("b")
        tid, job = await b.submit("flaky", {}, {})
        assert job is not None
        await Lines(job).until("J0000132: Job queued to run again (attempt 2 of 2, in 0.2 s).")
        a = await nodes.node("a")
        # Asked while b held the job, waiting out its retry's delay, and stored
        # before b read it: b stops, and lets go of the job with the cancel unread.
        nodes.db.rows[tid].requested.append("cancel")
        await b.stop(0.0)
        for _ in range(100):  # (a's heartbeats: it claims the job once it is due)
            a.work_available()
            if (await a.jobs.record(tid)).status.is_final:
                break
            await asyncio.sleep(0.05)
        # a held it next, and read the cancel
        assert (await a.jobs.record(tid)).status is S.CANCELLED
        gate.set()


async def test_a_released_job_waiting_out_a_retry_is_not_claimed_before_it_is_due(registry):
    @registry.job("flaky", retries=1, retry_delay_s=30.0)
    async def flaky(job: Job) -> None:
        raise RuntimeError("fails")

    async with cluster(registry) as nodes:
        b = await nodes.node("b")
        tid, job = await b.submit("flaky", {}, {})
        assert job is not None
        await Lines(job).until("J0000132: Job queued to run again (attempt 2 of 2, in 30 s).")
        a = await nodes.node("a")
        await b.stop(0.0)  # (lets go of the job, which is due in 30 s)
        a.work_available()
        claiming = a._claiming
        assert claiming is not None
        await asyncio.wait_for(claiming, WAIT_S)
        row = nodes.db.rows[tid]
        assert row.node_id is None  # not due yet: nobody holds it
        assert row.record.retry_at == pytest.approx(time.time() + 30.0, abs=5.0)


async def test_a_reload_that_unpauses_a_queue_leaves_the_clusters_pause(registry):
    async with cluster(registry) as nodes:
        paused = (QueueSettings("night", paused=True),)
        a = await nodes.node("a", queues=paused)
        await a.pause_queue("night")  # (paused by its configuration too, so far)
        a.configure(Config(keep_days=0, queues=(QueueSettings("night"),)))
        assert {row.name: row.paused for row in a.queue_rows()}["night"]
        await a.resume_queue("night")
        assert not {row.name: row.paused for row in a.queue_rows()}["night"]


async def test_a_queue_paused_on_one_node_starts_no_job_on_any(registry):
    async with cluster(registry) as nodes:
        a = await nodes.node("a", allow_new_queues=True)
        b = await nodes.node("b", allow_new_queues=True)
        await a.pause_queue("night")
        rows = {row.name: row for row in b.queue_rows()}
        assert rows["night"].paused  # (ListQueues on b shows it)
        tid, job = await b.submit("quick", {}, {}, placement=Placement(queue="night"))
        assert job is None  # stored for any node, and none starts it
        for engine in (a, b):
            engine.work_available()
            if engine._claiming is not None:
                await asyncio.wait_for(engine._claiming, WAIT_S)
        assert nodes.db.rows[tid].node_id is None
        await b.resume_queue("night")
        assert not any(row.paused for row in a.queue_rows())
        await until_state(a, tid, S.COMPLETED)
