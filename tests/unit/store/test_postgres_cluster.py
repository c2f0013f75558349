"""Several nodes on one PostgreSQL: the shared half of the store (``SharedStore``).

Each test opens two or three stores on one schema of the session's real
PostgreSQL, as the nodes of a cluster would, in one process; each records what
its store tells the engine (``ClusterHooks``).  Short timings (heartbeat 0.2 s,
lease 1 s) keep the takeovers quick.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence

import asyncpg
import pytest

from jobmonitor.errors import StoreUnavailable
from jobmonitor.store.postgres import commit as commit_module
from jobmonitor.store.postgres import holding
from jobmonitor.store.postgres import node as node_module
from jobmonitor.store.postgres.connect import parse_url
from jobmonitor.store.postgres.store import PostgresStore
from jobmonitor.store.shared import Action, TokenTaken
from jobmonitor.wire.records import HistoryEvent, JobRecord
from jobmonitor.wire.states import JobState

from .test_conformance import FakeJob, job

HEARTBEAT_S = 0.2
LEASE_S = 1.0


class Hooks:
    """What one node's store told its engine."""

    def __init__(self) -> None:
        self.work = 0
        self.requests: list[tuple[str, Action]] = []
        self.lost_jobs: list[str] = []
        self.taken: list[JobRecord] = []
        self.paused: frozenset[str] | None = None
        self.changed = asyncio.Event()

    def work_available(self) -> None:
        self.work += 1
        self.changed.set()

    def requested(self, transaction_id: str, action: Action) -> None:
        self.requests.append((transaction_id, action))
        self.changed.set()

    def lost(self, transaction_ids: Sequence[str]) -> None:
        self.lost_jobs.extend(transaction_ids)
        self.changed.set()

    def taken_over(self, records: Sequence[JobRecord]) -> None:
        self.taken.extend(records)
        self.changed.set()

    def queues_paused(self, names: frozenset[str]) -> None:
        self.paused = names
        self.changed.set()

    async def until(self, condition: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait (on the hooks, not by polling) until ``condition`` holds."""
        async with asyncio.timeout(timeout):
            while not condition():
                self.changed.clear()
                await self.changed.wait()


Node = tuple[PostgresStore, Hooks]


@pytest.fixture
async def cluster(pg_url) -> AsyncIterator[Callable[..., asyncio.Future[Node]]]:
    """Open nodes on one schema; closed (or already crashed) after the test."""
    nodes: list[PostgresStore] = []
    settings = parse_url(pg_url)

    async def open_node(name: str = "node", **options) -> Node:
        options = {"heartbeat_s": HEARTBEAT_S, "lease_s": LEASE_S, **options}
        store = PostgresStore(settings, commit_interval_s=0.01, node_name=name, **options)
        hooks = Hooks()
        store.attach(hooks)
        await store.open()
        nodes.append(store)
        return store, hooks

    yield open_node  # type: ignore[misc]
    for store in nodes:
        with contextlib.suppress(StoreUnavailable):
            await store.close()


async def crash(store: PostgresStore) -> None:
    """Stop a node as a killed process stops: no goodbye, nothing more written."""
    await store.node.stop()
    if store._committer is not None:
        store._committer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await store._committer
        store._committer = None
    store._drop_writer()
    if store._pool is not None:
        store._pool.terminate()
        store._pool = None


async def sql(store: PostgresStore, query: str, *args) -> list[asyncpg.Record]:
    db = await asyncpg.connect(**store.settings.connect_kwargs())
    try:
        return await db.fetch(query, *args)
    finally:
        await db.close()


def running(number: int) -> FakeJob:
    item = job(number)
    item.record.status = JobState.PROCESSING
    item.record.history.append(HistoryEvent("job", "started", float(number)))
    return item


async def test_numbers_are_unique_across_nodes(cluster):
    (first, _), (second, _) = await cluster("a"), await cluster("b")
    taken: list[int] = []
    for store in (first, second, first, second):
        for _ in range(120):
            number = store.take_number()
            while number is None:
                await store.more_numbers()
                number = store.take_number()
            taken.append(number)
    assert len(set(taken)) == len(taken) == 480
    assert all(1 <= number <= 9999999 for number in taken)


async def test_a_job_token_goes_to_one_job_across_nodes(cluster):
    (first, _), (second, _) = await cluster("a"), await cluster("b")
    results = await asyncpg_gather(
        first.add(job(1, job_token="key")), second.add(job(2, job_token="key")))
    won = [r for r in results if r is None]
    lost = [r for r in results if isinstance(r, TokenTaken)]
    assert len(won) == 1 and len(lost) == 1
    winner = "T0000001" if results[0] is None else "T0000002"
    assert lost[0].transaction_id == winner
    assert await first.find_token("ann", "key") == winner
    listed = await second.list_records(None, 0, 10)
    assert [r.transaction_id for r in listed] == [winner]
    # The loser's node keeps nothing of it: a later commit writes nothing for it.
    await first.add(job(3, job_token="other"))
    assert [r.transaction_id for r in await first.list_records(None, 0, 10)] == [
        winner, "T0000003"]


async def asyncpg_gather(*calls) -> list:
    return list(await asyncio.gather(*calls, return_exceptions=True))


async def test_claims_never_hold_a_job_twice_and_take_the_best_first(cluster):
    nodes = [await cluster(name) for name in ("a", "b", "c")]
    adder = nodes[0][0]
    for number in range(1, 31):
        item = job(number)
        item.record.priority = 9 if number % 10 == 0 else 5
        await adder.add(item)
    first = await adder.claim(4)
    assert [r.transaction_id for r in first] == ["T0000010", "T0000020", "T0000030",
                                                 "T0000001"]

    async def claim_all(store: PostgresStore) -> list[str]:
        got: list[str] = []
        while claimed := await store.claim(3):
            got.extend(r.transaction_id for r in claimed)
        return got

    results = await asyncio.gather(*(claim_all(store) for store, _ in nodes))
    every = [r.transaction_id for r in first] + [tid for got in results for tid in got]
    assert sorted(every) == [f"T{n:07d}" for n in range(1, 31)]
    held = await sql(adder, "SELECT count(DISTINCT node_id) FROM jobs WHERE node_id IS NULL")
    assert held[0][0] == 0


async def test_claim_takes_created_jobs_once_due_and_only_from_the_queues_asked(cluster):
    (store, _), = [await cluster("a")]
    due, later, other = job(1), job(2), job(3)
    due.record.status = later.record.status = JobState.CREATED
    due.record.run_at, later.record.run_at = 1.0, 4e9
    other.record.queue = "night"
    for item in (due, later, other):
        await store.add(item)
    assert [r.transaction_id for r in await store.claim(10, ["default"])] == ["T0000001"]
    assert [r.transaction_id for r in await store.claim(10)] == ["T0000003"]
    assert await store.claim(10) == []


async def test_take_and_request_go_to_the_live_holder(cluster):
    (first, first_hooks), (second, _) = await cluster("a"), await cluster("b")
    await first.add_held(running(1))
    await first.add(job(2))
    assert await second.take("T0000001") is None  # a live node holds it
    assert await second.request("T0000001", "suspend") is True
    await first_hooks.until(lambda: bool(first_hooks.requests))
    assert first_hooks.requests == [("T0000001", "suspend")]
    assert await second.request("T0000002", "cancel") is False  # nobody holds it
    taken = await second.take("T0000002")
    assert taken is not None and taken.transaction_id == "T0000002"
    assert await first.take("T0000002") is None


async def test_a_node_fenced_off_writes_nothing_more_and_is_told(cluster):
    (first, first_hooks), (second, _) = await cluster("a"), await cluster("b")
    item = running(1)
    await first.add_held(item)
    # The other node takes the job over by force (as if the first were dead).
    await sql(second, "UPDATE jobs SET node_id = $1, epoch = epoch + 1 WHERE number = 1",
              second.node.node_id)
    item.say("written after the takeover")
    item.finish(50.0)
    first.changed(item)
    await first.flush()
    await first_hooks.until(lambda: first_hooks.lost_jobs == ["T0000001"])
    stored = await second.load("T0000001")
    assert stored is not None and stored.status is JobState.PROCESSING
    assert await second.read_lines("T0000001", 1, 10) == []
    # Nothing of it is pending any more.
    item.say("and more")
    first.changed(item)
    await first.flush()
    assert await second.read_lines("T0000001", 1, 10) == []


async def test_the_reaper_takes_a_stopped_nodes_jobs(cluster):
    (first, _), (second, second_hooks) = await cluster("a"), await cluster("b")
    await first.add_held(running(1))
    await first.add_held(job(2))
    await crash(first)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await second_hooks.until(lambda: bool(second_hooks.taken), timeout=LEASE_S * 5 + 2)
    took = loop.time() - started
    assert [r.transaction_id for r in second_hooks.taken] == ["T0000001"]
    assert second_hooks.taken[0].status is JobState.PROCESSING
    assert took < LEASE_S * 2 + HEARTBEAT_S * 2 + 1.5  # (lease + heartbeat, with a margin)
    rows = await sql(second, "SELECT number, node_id FROM jobs ORDER BY number")
    assert [(r[0], r[1]) for r in rows] == [(1, second.node.node_id), (2, None)]
    assert [r.transaction_id for r in await second.claim(5)] == ["T0000002"]
    assert [n.name for n in await second.nodes()] == ["b"]


async def test_a_node_declared_dead_loses_its_jobs_and_joins_again(cluster):
    (store, hooks), = [await cluster("a")]
    await store.add_held(running(1))
    old = store.node.node_id
    await sql(store, "DELETE FROM nodes WHERE node_id = $1", old)
    await hooks.until(lambda: hooks.lost_jobs == ["T0000001"])
    assert store.node.node_id != old
    names = await sql(store, "SELECT node_id FROM nodes")
    assert [r[0] for r in names] == [store.node.node_id]


async def test_a_commit_with_one_job_fenced_writes_the_others_and_a_new_job(cluster):
    # (A commit of updates goes in one statement only when nothing is left out.)
    (first, first_hooks), (second, _) = await cluster("a"), await cluster("b")
    fenced, kept = running(1), running(2)
    await first.add_held(fenced)
    await first.add_held(kept)
    await sql(second, "UPDATE jobs SET node_id = $1, epoch = epoch + 1 WHERE number = 1",
              second.node.node_id)
    fenced.say("written after the takeover")
    kept.say("still ours")
    first.changed(fenced)
    first.changed(kept)
    adding = asyncio.create_task(first.add_held(running(3)))  # (rides the same commit)
    await asyncio.wait_for(adding, 5.0)
    await first.flush()
    await first_hooks.until(lambda: first_hooks.lost_jobs == ["T0000001"])
    assert await second.read_lines("T0000001", 1, 10) == []
    assert await second.read_lines("T0000002", 1, 10) == kept.stream.lines
    assert await second.load("T0000003") is not None


async def test_wait_lines_wakes_on_another_nodes_commit(cluster, monkeypatch):
    # Only the notification can wake the wait: no time limit, no look at the count.
    monkeypatch.setattr(node_module, "LONGEST_LINE_WAIT_S", 30.0)

    async def no_count(db, number):
        return None

    monkeypatch.setattr(node_module, "_line_count", no_count)
    (first, _), (second, _) = await cluster("a"), await cluster("b")
    item = running(1)
    await first.add_held(item)
    waiting = asyncio.create_task(second.wait_lines("T0000001", 0, 30.0))
    for _ in range(100):  # (the wait registers before its first await)
        if 1 in second.node._line_waiters:
            break
        await asyncio.sleep(0)
    assert 1 in second.node._line_waiters
    item.say("one")
    first.changed(item)
    await first.flush()
    await asyncio.wait_for(waiting, 5.0)
    assert await second.read_lines("T0000001", 1, 10) == item.stream.lines


async def test_wait_lines_reads_no_count_of_a_job_it_heard_of(cluster, monkeypatch):
    # A node that heard a commit of a job's lines knows how many are stored: a wait
    # for those it has not read returns at once, with no statement per waiter.
    counted: list[int] = []

    async def count(db, number):
        counted.append(number)
        return None

    monkeypatch.setattr(node_module, "_line_count", count)
    (first, _), (second, _) = await cluster("a"), await cluster("b")
    item = running(1)
    await first.add_held(item)
    item.say("one", "two")
    first.changed(item)
    await first.flush()
    async with asyncio.timeout(5):
        while second.node.heard.get(1) != 2:
            await asyncio.sleep(0.01)
    await asyncio.wait_for(second.wait_lines("T0000001", 1, 30.0), 1.0)
    assert counted == []


async def test_nodes_lists_the_live_nodes(cluster):
    (first, _), (second, _) = await cluster("a", address="h:1"), await cluster("b")
    await first.add_held(running(1))
    listed = await second.nodes()
    assert [(n.name, n.address) for n in listed] == [("a", "h:1"), ("b", "")]
    assert all(0 <= n.heartbeat_age_s < LEASE_S for n in listed)


async def test_a_postgres_restart_loses_no_acknowledged_job(cluster, postgres_server):
    (store, _), = [await cluster("a")]
    acknowledged = []
    for number in range(1, 6):
        await store.add_held(running(number))
        acknowledged.append(f"T{number:07d}")
    pending = running(6)
    await store.add_held(pending)
    acknowledged.append("T0000006")
    postgres_server.stop()
    try:
        pending.say("said while the database was down")
        store.changed(pending)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(StoreUnavailable):
            await store.add(job(7))
        assert loop.time() - started < 5.0
    finally:
        postgres_server.start()
    # The pending write goes through once the database is back (the commit
    # retries; a flush may first meet a connection the restart broke).
    for _ in range(10):
        with contextlib.suppress(StoreUnavailable):
            await store.flush()
            break
    assert await store.read_lines("T0000006", 1, 10) == pending.stream.lines
    listed = [r.transaction_id for r in await store.list_records(None, 0, 100)]
    assert listed == acknowledged



async def test_a_released_job_is_anyones_to_claim(cluster):
    (first, _), (second, _) = await cluster("a"), await cluster("b")
    await first.add(job(1))
    assert [r.transaction_id for r in await first.claim(5)] == ["T0000001"]
    assert await second.claim(5) == []
    first.release("T0000001")
    await first.flush()
    assert [r.transaction_id for r in await second.claim(5)] == ["T0000001"]


async def test_after_a_database_outage_longer_than_the_lease_no_live_node_is_reaped(
        cluster, postgres_server):
    # The second node heartbeats less often: after the outage the first is back
    # well before it, and would reap it at once without the guard.
    (first, first_hooks), (second, second_hooks) = (
        await cluster("a"), await cluster("b", heartbeat_s=LEASE_S * 0.6))
    await first.add_held(running(1))
    await second.add_held(running(2))
    postgres_server.stop()
    try:
        await asyncio.sleep(LEASE_S * 1.5)  # (every heartbeat is older than the lease now)
    finally:
        postgres_server.start()
    # Both nodes heartbeat again; neither may declare the other dead meanwhile.
    await asyncio.sleep(LEASE_S * 2 + HEARTBEAT_S * 3)
    assert (first_hooks.lost_jobs, first_hooks.taken) == ([], [])
    assert (second_hooks.lost_jobs, second_hooks.taken) == ([], [])
    rows = await sql(first, "SELECT number, node_id FROM jobs ORDER BY number")
    assert [(r[0], r[1]) for r in rows] == [(1, first.node.node_id), (2, second.node.node_id)]


async def test_a_request_reaches_the_holder_by_its_heartbeat_without_the_listener(cluster):
    (first, first_hooks), (second, _) = await cluster("a"), await cluster("b")
    await first.add_held(running(1))
    await first.node.listener.stop()  # (no notification reaches it now)
    assert await second.request("T0000001", "cancel") is True
    await first_hooks.until(lambda: bool(first_hooks.requests), timeout=HEARTBEAT_S * 10)
    assert first_hooks.requests == [("T0000001", "cancel")]


async def test_the_listener_reconnects_after_a_postgres_restart(
        cluster, postgres_server, monkeypatch):
    monkeypatch.setattr(node_module, "LONGEST_LINE_WAIT_S", 30.0)  # only a notice wakes it

    async def no_count(db, number):
        return None

    monkeypatch.setattr(node_module, "_line_count", no_count)
    (first, _), (second, _) = await cluster("a"), await cluster("b")
    item = running(1)
    await first.add_held(item)
    listener = second.node.listener
    before = listener._connection
    postgres_server.restart()
    async with asyncio.timeout(10):  # (reconnects within its longest pause, 2 s)
        while listener._connection is None or listener._connection is before:
            await asyncio.sleep(0.05)
    waiting = asyncio.create_task(second.wait_lines("T0000001", 0, 30.0))
    for _ in range(100):
        if 1 in second.node._line_waiters:
            break
        await asyncio.sleep(0)
    item.say("one")
    first.changed(item)
    for _ in range(10):  # (the first commit may meet a connection the restart broke)
        with contextlib.suppress(StoreUnavailable):
            await first.flush()
            break
    await asyncio.wait_for(waiting, 5.0)


async def test_a_node_that_closes_leaves_at_once_and_its_running_job_is_taken_over(cluster):
    (first, _), (second, second_hooks) = await cluster("a"), await cluster("b")
    await first.add_held(running(1))
    await first.close()
    assert [n.name for n in await second.nodes()] == ["b"]
    await second_hooks.until(lambda: bool(second_hooks.taken), timeout=LEASE_S * 3 + 2)
    assert [r.transaction_id for r in second_hooks.taken] == ["T0000001"]


async def test_jobs_held_unknowingly_are_let_go_or_recovered(cluster):
    """A claim or take whose answer was lost with its connection left jobs held
    by a node that does not know it: its heartbeats find them."""
    (first, first_hooks), (second, _) = await cluster("a"), await cluster("b")
    await second.add(job(1))
    await second.add(running(2))
    await sql(first, "UPDATE jobs SET node_id = $1, epoch = epoch + 1", first.node.node_id)
    await first_hooks.until(lambda: bool(first_hooks.taken), timeout=HEARTBEAT_S * 20)
    assert [r.transaction_id for r in first_hooks.taken] == ["T0000002"]
    assert first.held() == [2]
    assert [r.transaction_id for r in await second.claim(5)] == ["T0000001"]


async def test_a_node_closing_while_a_handler_still_runs_stays_until_its_lease_ends(cluster):
    (first, _), (second, _) = await cluster("a"), await cluster("b")
    await first.add_held(running(1))
    await first.close(keep_lock=True)
    assert [n.name for n in await second.nodes()] == ["a", "b"]
    assert await second.take("T0000001") is None


async def test_a_node_whose_pool_is_all_busy_still_heartbeats(cluster):
    (first, first_hooks), (second, second_hooks) = await cluster("a"), await cluster("b")
    await first.add_held(running(1))
    pool = first._pool
    assert pool is not None
    held = [await pool.acquire() for _ in range(pool.get_max_size())]
    try:
        # Long enough for the other node to reap this one, were it silent.
        await asyncio.sleep(LEASE_S * 2.5)
    finally:
        for connection in held:
            await pool.release(connection)
    assert (first_hooks.lost_jobs, second_hooks.taken) == ([], [])
    assert [n.name for n in await second.nodes()] == ["a", "b"]


async def test_a_submit_does_not_wait_for_a_busy_pool(cluster):
    (store, _), = [await cluster("a")]
    pool = store._pool
    assert pool is not None
    held = [await pool.acquire() for _ in range(pool.get_max_size())]
    try:
        await asyncio.wait_for(store.add_held(running(1)), 2.0)  # (a pool wait: 3 s)
    finally:
        for connection in held:
            await pool.release(connection)
    assert await store.load("T0000001") is not None


async def test_a_dead_nodes_job_cannot_be_asked_for_but_can_be_taken(cluster):
    (first, _), (second, second_hooks) = await cluster("a"), await cluster("b")
    await first.add_held(running(1))
    await crash(first)
    # Its lease has run out (before any reaper came by: the other node is new).
    await sql(second, "UPDATE nodes SET heartbeat = now() - interval '1 hour' "
                      "WHERE node_id = $1", first.node.node_id)
    assert await second.request("T0000001", "cancel") is False
    taken = await second.take("T0000001")
    assert taken is not None and taken.status is JobState.PROCESSING
    assert second.held() == [1]
    assert second_hooks.taken == []  # (taken to act on it, not taken over)


async def test_a_running_job_is_not_let_go(cluster):
    """Nobody claims a running job: released, it would never run again."""
    (first, _), (second, _) = await cluster("a"), await cluster("b")
    await first.add_held(running(1))
    first.release("T0000001")
    await first.flush()
    assert first.held() == [1]
    rows = await sql(first, "SELECT node_id FROM jobs WHERE number = 1")
    assert rows[0][0] == first.node.node_id
    assert await second.take("T0000001") is None


@pytest.mark.parametrize("hold", ["claim", "take"])
async def test_a_request_made_just_before_a_release_goes_back_to_the_releasing_node(
        cluster, monkeypatch, hold):
    (first, first_hooks), (second, second_hooks) = await cluster("a"), await cluster("b")
    await first.add_held(job(1))

    async def not_yet() -> None:  # (the holder lets go before it reads its requests)
        pass

    monkeypatch.setattr(first.node, "_take_requests", not_yet)
    assert await second.request("T0000001", "suspend") is True
    assert await second.request("T0000001", "cancel") is True
    first.release("T0000001")
    await first.flush()
    # Told by the release's commit (before the flush returns), to pass them on.
    assert first_hooks.requests == [("T0000001", "suspend"), ("T0000001", "cancel")]
    rows = await sql(first, "SELECT node_id, requested FROM jobs WHERE number = 1")
    assert [tuple(row) for row in rows] == [(None, None)]
    if hold == "claim":
        assert [r.transaction_id for r in await second.claim(5)] == ["T0000001"]
    else:
        assert (await second.take("T0000001")) is not None
    assert second_hooks.requests == []


async def test_a_request_left_on_a_job_nobody_holds_reaches_the_next_holder(cluster):
    (first, _), (second, second_hooks) = await cluster("a"), await cluster("b")
    await first.add(job(1))
    # (as a node older than this fix would leave it: released with a request unread)
    await sql(first, "UPDATE jobs SET requested = 'cancel' WHERE number = 1")
    assert [r.transaction_id for r in await second.claim(5)] == ["T0000001"]
    await second_hooks.until(lambda: bool(second_hooks.requests))
    assert second_hooks.requests == [("T0000001", "cancel")]


async def test_a_job_token_freed_by_a_delete_during_the_race_goes_to_the_new_job(
        cluster, monkeypatch):
    (first, _), (second, _) = await cluster("a"), await cluster("b")
    await first.add(job(1, job_token="key"))
    looked_up = commit_module.sql.token_owners

    async def deleted_first(db, keys):  # (the winner is deleted just as the loser looks)
        await first.delete("T0000001")
        return await looked_up(db, keys)

    monkeypatch.setattr(commit_module.sql, "token_owners", deleted_first)
    await second.add(job(2, job_token="key"))  # (no TokenTaken: the token is free)
    monkeypatch.undo()
    assert await first.find_token("ann", "key") == "T0000002"
    stored = await first.load("T0000002")
    assert stored is not None and stored.job_token == "key"
    assert [event.status for event in stored.history] == ["queued"]  # (all of it stored)


async def test_two_requests_before_the_holder_reads_them_both_reach_it_in_order(
        cluster, monkeypatch):
    (first, first_hooks), (second, _) = await cluster("a"), await cluster("b")
    item = job(1)
    item.record.status = JobState.SUSPENDED
    await first.add_held(item)
    read_requests = first.node._take_requests

    async def not_yet() -> None:  # (both are asked before the holder reads)
        pass

    monkeypatch.setattr(first.node, "_take_requests", not_yet)
    assert await second.request("T0000001", "resume") is True
    assert await second.request("T0000001", "cancel") is True
    await read_requests()
    assert first_hooks.requests == [("T0000001", "resume"), ("T0000001", "cancel")]


async def test_a_release_that_keeps_requests_leaves_them_for_the_next_holder(
        cluster, monkeypatch):
    """A node that stops cannot pass an unread request on: its release leaves it
    with the job, even when the node's read of its requests races the release."""
    first, first_hooks = await cluster("a")
    read_requests = first.node._take_requests

    async def not_yet() -> None:  # (the holder lets go before it reads its requests)
        pass

    monkeypatch.setattr(first.node, "_take_requests", not_yet)
    second, second_hooks = await cluster("b")
    await first.add_held(job(1))
    assert await second.request("T0000001", "cancel") is True
    first.release("T0000001", keep_requests=True)
    await read_requests()  # (a read before the release is written leaves it alone)
    await first.flush()
    assert first_hooks.requests == []
    rows = await sql(first, "SELECT node_id, requested FROM jobs WHERE number = 1")
    assert [tuple(row) for row in rows] == [(None, "cancel")]
    assert [r.transaction_id for r in await second.claim(5)] == ["T0000001"]
    await second_hooks.until(lambda: bool(second_hooks.requests))
    assert second_hooks.requests == [("T0000001", "cancel")]


async def test_a_job_waiting_out_a_retry_is_claimed_once_due_with_its_due_time(cluster):
    (first, _), (second, _) = await cluster("a"), await cluster("b")
    waiting, due = job(1), job(2)
    for item in (waiting, due):
        await first.add_held(item)
    now = time.time()
    waiting.record.retry_at, due.record.retry_at = now + 3600.0, now - 1.0
    for item in (waiting, due):  # (failed, and let go as its node stops)
        first.changed(item)
        first.release(item.transaction_id)
    await first.flush()
    claimed = await second.claim(10)
    assert [(r.transaction_id, r.retry_at) for r in claimed] == [("T0000002", now - 1.0)]
    assert await second.claim(10) == []


async def test_a_schema_of_version_1_is_brought_up_to_date_as_a_node_opens_it(cluster):
    (first, _), = [await cluster("a")]
    await sql(first, "ALTER TABLE jobs DROP COLUMN IF EXISTS retry_at")
    await sql(first, "UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    await cluster("b")
    version = await sql(first, "SELECT value FROM meta WHERE key = 'schema_version'")
    assert version[0][0] == "2"
    columns = await sql(first, "SELECT column_name FROM information_schema.columns WHERE "
                               "table_schema = current_schema() AND table_name = 'jobs' "
                               "AND column_name = 'retry_at'")
    assert len(columns) == 1


async def test_a_queue_paused_on_one_node_is_paused_for_all(cluster):
    (first, _), (second, second_hooks) = await cluster("a"), await cluster("b")
    night = job(1)
    night.record.queue = "night"
    await first.add(night)
    await first.set_paused("night", True)
    await second_hooks.until(lambda: second_hooks.paused == frozenset({"night"}))
    assert await second.claim(10) == []  # (none of a paused queue, whatever b knows)
    (third, third_hooks) = await cluster("c")
    assert third_hooks.paused == frozenset({"night"})  # (told as it joins)
    await second.set_paused("night", False)
    await third_hooks.until(lambda: third_hooks.paused == frozenset())
    assert [r.transaction_id for r in await third.claim(10)] == ["T0000001"]


async def _cancel_read_as_released(cluster, monkeypatch, let_go):
    """Nodes a and b; a holds T0000001 and b asks it to cancel; a's read of its
    requests answers just after ``let_go(a)`` let go of the job.  Returns
    (a, a's hooks, b, b's hooks) once a's writes are done."""
    first, first_hooks = await cluster("a")
    read_requests = first.node._take_requests

    async def not_yet() -> None:
        pass

    monkeypatch.setattr(first.node, "_take_requests", not_yet)
    second, second_hooks = await cluster("b")
    await first.add_held(job(1))
    assert await second.request("T0000001", "cancel") is True
    call = first.call

    async def released_meanwhile(func, *args, **options):
        answer = await call(func, *args, **options)
        if func is holding.take_requests:  # (let go as the read's answer comes)
            await let_go(first)
        return answer

    monkeypatch.setattr(first, "call", released_meanwhile)
    await read_requests()
    monkeypatch.setattr(first, "call", call)
    await first.flush()
    return first, first_hooks, second, second_hooks


async def test_requests_read_as_their_job_is_let_go_stay_with_the_job(cluster, monkeypatch):
    async def stopping(node) -> None:
        node.release("T0000001", keep_requests=True)

    first, first_hooks, second, second_hooks = await _cancel_read_as_released(
        cluster, monkeypatch, stopping)
    assert first_hooks.requests == []
    rows = await sql(first, "SELECT node_id, requested FROM jobs WHERE number = 1")
    assert [tuple(row) for row in rows] == [(None, "cancel")]
    assert [r.transaction_id for r in await second.claim(5)] == ["T0000001"]
    await second_hooks.until(lambda: bool(second_hooks.requests))
    assert second_hooks.requests == [("T0000001", "cancel")]


async def test_requests_read_as_a_going_node_lets_go_of_the_job_go_to_its_engine(
        cluster, monkeypatch):
    # A node that goes on (a resume let go of on a busy node) hands them to its
    # engine, which passes them on: left on the row of a job nobody holds, a
    # cancel would wait for a claim that may never come.
    async def going_on(node) -> None:
        node.release("T0000001")
        await node.flush()  # (the release written before the read's answer)

    first, first_hooks, _second, _hooks = await _cancel_read_as_released(
        cluster, monkeypatch, going_on)
    assert first_hooks.requests == [("T0000001", "cancel")]
    rows = await sql(first, "SELECT node_id, requested FROM jobs WHERE number = 1")
    assert [tuple(row) for row in rows] == [(None, None)]
