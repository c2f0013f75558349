"""What every store backend does, checked the same way for each.

``ALL_STORES`` are every backend; ``DURABLE_STORES`` those whose jobs outlive
the process.  A new backend (a server database, say) is one more entry in each list,
with a way to make a fresh store and to make it again on the same data.  The
jobs here are plain stand-ins for the engine's (``Recordable``): a record and a
stream of encoded lines, nothing that runs.

A store several nodes share (``SharedStore``: PostgreSQL, each test on a schema of
its own) writes changes only of the jobs its node holds, so the jobs a test goes on
changing are added held (``add``), and a job a closed node held is ``take``n by the
next one rather than recovered.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from jobmonitor.store.base import Recovery, Store
from jobmonitor.store.memory import MemoryStore
from jobmonitor.store.postgres.connect import parse_url
from jobmonitor.store.postgres.store import PostgresStore
from jobmonitor.store.shared import SharedStore
from jobmonitor.store.sqlite.store import SqliteStore
from jobmonitor.wire.codes import Status
from jobmonitor.wire.lines import format_line
from jobmonitor.wire.records import HistoryEvent, JobRecord, Output
from jobmonitor.wire.states import JobState, Outcome

from ...support.postgres import pg_schema_url

#: A backend: given a folder of its own (and the test's request, for fixtures
#: such as a database server), what makes its store (each call makes it anew on
#: the same data).
Backend = Callable[[Path, pytest.FixtureRequest], Callable[[], Store]]


def _memory(folder: Path, request: pytest.FixtureRequest) -> Callable[[], Store]:
    return MemoryStore


def _sqlite(folder: Path, request: pytest.FixtureRequest) -> Callable[[], Store]:
    return lambda: SqliteStore(str(folder / "jobs.db"), commit_interval_s=0.01)


def _postgres(folder: Path, request: pytest.FixtureRequest) -> Callable[[], Store]:
    settings = parse_url(pg_schema_url(request.getfixturevalue("postgres_server")))
    return lambda: PostgresStore(settings, commit_interval_s=0.01, node_name="test")


DURABLE_STORES = [pytest.param(_sqlite, id="sqlite"), pytest.param(_postgres, id="postgres")]
ALL_STORES = [pytest.param(_memory, id="memory"), *DURABLE_STORES]


@dataclass
class FakeStream:
    lines: list[bytes] = field(default_factory=list)
    base: int = 0
    flushed: int = 0

    def __len__(self) -> int:
        return self.base + len(self.lines)

    def pieces(self, start: int, stop: int, most: int) -> list[tuple[int, bytes]]:
        first = start - self.base
        return [(len(part), b"".join(part))
                for part in (self.lines[at:min(at + most, stop - self.base)]
                             for at in range(first, stop - self.base, most))]


@dataclass
class FakeJob:
    """What a store reads of a live job (``Recordable``)."""

    record: JobRecord
    stream: FakeStream = field(default_factory=FakeStream)

    @property
    def transaction_id(self) -> str:
        return self.record.transaction_id

    def say(self, *texts: str) -> None:
        """Record lines and announce them, as a job's stream flush does."""
        self.stream.lines.extend(format_line("J", Status.INFO, text) for text in texts)
        self.stream.flushed = len(self.stream)
        self.record.line_count = len(self.stream)

    def finish(self, when: float) -> None:
        self.record.status, self.record.outcome = JobState.COMPLETED, Outcome.SUCCESS
        self.record.completed = self.record.updated = when
        self.record.history.append(HistoryEvent("job", "completed", when))


def job(number: int, *, identity: str = "ann", job_token: str | None = None) -> FakeJob:
    record = JobRecord(f"T{number:07d}", "echo", {"Text": "hi"}, {}, identity=identity,
                       job_token=job_token, status=JobState.QUEUED, created=float(number),
                       updated=float(number),
                       history=[HistoryEvent("job", "queued", float(number))])
    return FakeJob(record)


@pytest.fixture
def make(request, tmp_path) -> Callable[[], Store]:
    return request.param(tmp_path, request)


async def add(store: Store, item: FakeJob) -> None:
    """Store a new job; on a shared store, held by its node (which goes on changing it)."""
    if isinstance(store, SharedStore):
        await store.add_held(item)
    else:
        await store.add(item)


@pytest.fixture
async def opened() -> AsyncIterator[Callable[[Store], Awaitable[Recovery]]]:
    """Open stores, and close whichever are still open after the test."""
    stores: list[Store] = []

    async def open_store(store: Store) -> Recovery:
        stores.append(store)
        return await store.open()

    yield open_store
    for store in stores:
        await store.close()


# -- every store ---------------------------------------------------------------------


@pytest.mark.parametrize("make", ALL_STORES, indirect=True)
async def test_a_new_store_has_nothing_to_recover_or_find(make, opened):
    store = make()
    recovery = await opened(store)
    assert (recovery.last_number, recovery.unfinished, recovery.recent_events) == (0, [], [])
    assert await store.load("T0000001") is None
    assert await store.find_token("ann", "key") is None
    assert await store.read_lines("T0000001", 1, 10) == []
    assert list(await store.list_records(None, 0, 1000)) == []
    assert await store.purge(1e12) == 0
    await store.delete("T0000001")  # nothing to delete: no error either
    await store.flush()


@pytest.mark.parametrize("make", ALL_STORES, indirect=True)
async def test_call_when_stored_calls_back_when_nothing_waits(make, opened):
    store = make()
    await opened(store)
    called = asyncio.get_running_loop().create_future()
    store.call_when_stored(lambda: called.set_result(None))
    await asyncio.wait_for(called, 2.0)


@pytest.mark.parametrize("make", ALL_STORES, indirect=True)
async def test_a_closed_store_checks_clean(make, opened):
    store = make()
    await opened(store)
    if store.durable:
        await add(store, job(1))
    await store.close()
    assert await make().check() == []


# -- durable stores: writing and reading back -----------------------------------------


@pytest.mark.parametrize("make", DURABLE_STORES, indirect=True)
async def test_an_added_job_is_stored_whole(make, opened):
    store = make()
    await opened(store)
    added = job(1, job_token="key")
    added.say("one", "two")
    await add(store, added)
    loaded = await store.load("T0000001")
    assert loaded is not None
    assert (loaded.project, loaded.params, loaded.identity, loaded.status, loaded.line_count,
            loaded.history) == ("echo", {"Text": "hi"}, "ann", JobState.QUEUED, 2,
                                added.record.history)
    assert await store.read_lines("T0000001", 1, 10) == added.stream.lines
    assert await store.find_token("ann", "key") == "T0000001"
    assert await store.find_token("bob", "key") is None


@pytest.mark.parametrize("make", DURABLE_STORES, indirect=True)
async def test_changes_are_stored_by_flush_and_told_to_on_persisted(make, opened):
    store = make()
    told: list[tuple[str, int]] = []
    store.on_persisted = lambda item, lines: told.append((item.transaction_id, lines))
    await opened(store)
    changing = job(1)
    await add(store, changing)
    changing.say("one", "two", "three")
    changing.record.outputs.append(Output("report", "file:///out/report.pdf", "application/pdf"))
    changing.finish(50.0)
    store.changed(changing)
    await store.flush()
    loaded = await store.load("T0000001")
    assert loaded is not None
    assert (loaded.status, loaded.outcome, loaded.completed, loaded.line_count) == (
        JobState.COMPLETED, Outcome.SUCCESS, 50.0, 3)
    assert loaded.outputs == [Output("report", "file:///out/report.pdf", "application/pdf")]
    assert [event.status for event in loaded.history] == ["queued", "completed"]
    assert await store.read_lines("T0000001", 2, 1) == changing.stream.lines[1:2]
    assert await store.read_lines("T0000001", 2, 10) == changing.stream.lines[1:]
    assert told[0] == ("T0000001", 0) and told[-1] == ("T0000001", 3)


@pytest.mark.parametrize("make", DURABLE_STORES, indirect=True)
async def test_a_page_of_lines_is_read_from_the_blocks_that_hold_it(make, opened):
    store = make()
    await opened(store)
    chatty = job(1)
    await add(store, chatty)
    for size in (3, 1, 4, 2):  # one block per commit: lines 1-3, 4, 5-8, 9-10
        chatty.say(*(f"line {len(chatty.stream.lines) + i + 1}" for i in range(size)))
        store.changed(chatty)
        await store.flush()
    lines = chatty.stream.lines
    for from_line in range(1, 12):
        for limit in (1, 2, 3, 5, 20):
            assert await store.read_lines("T0000001", from_line, limit) == \
                lines[from_line - 1:from_line - 1 + limit], (from_line, limit)


@pytest.mark.parametrize("make", DURABLE_STORES, indirect=True)
async def test_lines_stored_after_a_read_are_in_the_next_read(make, opened):
    store = make()
    await opened(store)
    growing = job(1)
    await add(store, growing)
    growing.say("one", "two", "three")
    store.changed(growing)
    await store.flush()
    assert await store.read_lines("T0000001", 2, 1) == growing.stream.lines[1:2]
    assert await store.read_lines("T0000001", 1, 10) == growing.stream.lines
    growing.say("four", "five")
    store.changed(growing)
    await store.flush()
    assert await store.read_lines("T0000001", 1, 10) == growing.stream.lines
    assert await store.read_lines("T0000001", 3, 2) == growing.stream.lines[2:4]
    await store.delete("T0000001")
    assert await store.read_lines("T0000001", 1, 10) == []


@pytest.mark.parametrize("make", DURABLE_STORES, indirect=True)
async def test_lines_said_but_not_yet_announced_wait_for_their_own_notice(make, opened):
    store = make()
    await opened(store)
    quiet = job(1)
    await add(store, quiet)
    quiet.stream.lines.append(format_line("J", Status.INFO, "not flushed"))
    store.changed(quiet)
    await store.flush()
    assert await store.read_lines("T0000001", 1, 10) == []
    quiet.stream.flushed = 1
    store.changed(quiet)
    await store.flush()
    assert await store.read_lines("T0000001", 1, 10) == quiet.stream.lines


@pytest.mark.parametrize("make", DURABLE_STORES, indirect=True)
async def test_list_records_oldest_first_and_by_submitter(make, opened):
    store = make()
    await opened(store)
    for number, identity in [(1, "ann"), (2, "bob"), (3, "ann")]:
        await add(store, job(number, identity=identity))
    assert [r.transaction_id for r in await store.list_records(None, 0, 1000)] == [
        "T0000001", "T0000002", "T0000003"]
    assert [r.transaction_id for r in await store.list_records("ann", 0, 1000)] == [
        "T0000001", "T0000003"]
    assert list(await store.list_records("carol", 0, 1000)) == []


@pytest.mark.parametrize("make", DURABLE_STORES, indirect=True)
async def test_list_records_pages_by_number(make, opened):
    store = make()
    await opened(store)
    for number in range(1, 6):
        await add(store, job(number))
    await store.flush()
    assert [r.transaction_id for r in await store.list_records(None, 0, 2)] == [
        "T0000001", "T0000002"]
    assert [r.transaction_id for r in await store.list_records(None, 2, 2)] == [
        "T0000003", "T0000004"]
    assert [r.transaction_id for r in await store.list_records(None, 4, 2)] == ["T0000005"]
    assert list(await store.list_records(None, 5, 2)) == []


@pytest.mark.parametrize("make", DURABLE_STORES, indirect=True)
async def test_delete_removes_a_job_and_its_lines_but_not_its_number(make, opened):
    store = make()
    await opened(store)
    for number in (1, 2):
        stored = job(number, job_token=f"key{number}")
        stored.say("line")
        await add(store, stored)
    await store.delete("T0000002")
    assert await store.load("T0000002") is None
    assert await store.read_lines("T0000002", 1, 10) == []
    assert await store.find_token("ann", "key2") is None
    assert [r.transaction_id for r in await store.list_records(None, 0, 1000)] == ["T0000001"]


@pytest.mark.parametrize("make", DURABLE_STORES, indirect=True)
async def test_purge_deletes_only_jobs_finished_before_the_cutoff(make, opened):
    store = make()
    await opened(store)
    old, recent, running = job(1), job(2), job(3)
    for item in (old, recent, running):
        await add(store, item)
    old.finish(100.0)
    recent.finish(300.0)
    for item in (old, recent):
        store.changed(item)
    await store.flush()
    assert await store.purge(200.0) == 1
    listed = await store.list_records(None, 0, 1000)
    assert [r.transaction_id for r in listed] == ["T0000002", "T0000003"]


@pytest.mark.parametrize("make", DURABLE_STORES, indirect=True)
async def test_a_store_made_again_recovers_unfinished_jobs_and_numbers(make, opened):
    store = make()
    await opened(store)
    finished, unfinished, deleted = job(1), job(2), job(3)
    for item in (finished, unfinished, deleted):
        await add(store, item)
    finished.finish(10.0)
    unfinished.say("one", "two")
    unfinished.record.status = JobState.PROCESSING
    unfinished.record.history.append(HistoryEvent("job", "started", 5.0))
    for item in (finished, unfinished):
        store.changed(item)
    await store.flush()
    await store.delete("T0000003")
    await store.close()
    again = make()
    recovery = await opened(again)
    assert recovery.last_number == 3  # the deleted newest job's number stays used
    if isinstance(again, SharedStore):
        # A new node holds nothing: the job the closed one ran is there to take.
        assert recovery.unfinished == []
        assert [r.transaction_id for r in await again.list_active(None, 0, 10)] == ["T0000002"]
        taken = await again.take("T0000002")
        assert taken is not None
        recovery.unfinished.append(taken)
    assert [(r.transaction_id, r.status, r.line_count) for r in recovery.unfinished] == [
        ("T0000002", JobState.PROCESSING, 2)]
    assert [(e.transaction_id, e.event.status) for e in recovery.recent_events] == [
        ("T0000001", "queued"), ("T0000002", "queued"), ("T0000002", "started"),
        ("T0000001", "completed")]
    # The recovered job goes on from where it was stored: only what is new is added.
    unfinished.say("three")
    again.changed(unfinished)
    await again.flush()
    assert await again.read_lines("T0000002", 1, 10) == unfinished.stream.lines
