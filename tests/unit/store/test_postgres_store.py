"""The PostgreSQL store on its own: its URL, its driver, its schema's version,
and what it says when the database cannot be reached (a real PostgreSQL,
``tests/support/postgres.py``)."""

from __future__ import annotations

import asyncio
import sys

import asyncpg
import pytest

from jobmonitor.errors import ConfigError
from jobmonitor.store import open_store
from jobmonitor.store.postgres.connect import parse_url
from jobmonitor.store.postgres.store import PostgresStore
from jobmonitor.store.sqlite.store import SqliteStore

from .test_conformance import job


def test_open_store_makes_a_postgres_store_of_either_scheme():
    for scheme in ("postgresql", "postgres"):
        store = open_store(f"{scheme}://ann:se%40cret@db.example:6543/jobs?schema=prod",
                           node_name="n1", address="10.0.0.1:7400", heartbeat_s=0.5,
                           lease_s=2.0)
        assert isinstance(store, PostgresStore)
        settings = store.settings
        assert (settings.user, settings.password, settings.host, settings.port,
                settings.database, settings.schema) == (
            "ann", "se@cret", "db.example", 6543, "jobs", "prod")
        assert (store.node_name, store.node.address, store.node.heartbeat_s,
                store.node.lease_s) == ("n1", "10.0.0.1:7400", 0.5, 2.0)
    assert parse_url("postgresql://u@h/d").schema == "jobmonitor"
    assert parse_url("postgresql://u@h/d?host=/run/pg").host == "/run/pg"


def test_other_stores_ignore_the_node_settings(tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/jobs.db", node_name="n1", heartbeat_s=0.5)
    assert isinstance(store, SqliteStore)


@pytest.mark.parametrize("url, words", [
    ("postgresql://u@h/d?schema=bad-name", "bad schema name"),
    ("postgresql://u@h/d?sslmode=require", "unknown PostgreSQL URL parameter"),
    ("postgresql://u@h/", "names no database"),
    ("postgresql://u@h:port/d", "bad PostgreSQL URL"),
])
def test_a_bad_url_is_refused_in_one_line(url, words):
    with pytest.raises(ConfigError, match=words) as caught:
        open_store(url)
    assert "\n" not in str(caught.value)


def test_without_the_driver_the_url_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "asyncpg", None)  # (an import of it fails)
    with pytest.raises(ConfigError) as caught:
        open_store("postgresql://u@h/d")
    assert "install the PostgreSQL driver: pip install 'jobmonitor[postgres]'" in str(
        caught.value)
    assert "\n" not in str(caught.value)


async def test_a_database_that_cannot_be_reached_refuses_the_start_in_one_line():
    store = open_store("postgresql://u@127.0.0.1:1/d")
    with pytest.raises(ConfigError) as caught:
        await store.open()
    assert "cannot connect to PostgreSQL u@127.0.0.1:1/d" in str(caught.value)
    assert "\n" not in str(caught.value)


async def test_a_schema_of_a_newer_version_is_refused(pg_url):
    store = open_store(pg_url)
    await store.open()
    await store.close()
    settings = parse_url(pg_url)
    db = await asyncpg.connect(**settings.connect_kwargs())
    await db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    await db.close()
    with pytest.raises(ConfigError, match="made by a newer jobmonitor"):
        await open_store(pg_url).open()
    with pytest.raises(ConfigError, match="made by a newer jobmonitor"):
        await open_store(pg_url).check()


async def test_check_of_a_schema_never_opened_says_it_holds_no_tables(pg_url):
    with pytest.raises(ConfigError, match="holds no jobmonitor tables"):
        await open_store(pg_url).check()


async def test_check_names_a_job_that_does_not_decode(pg_url):
    store = open_store(pg_url)
    await store.open()
    await store.close()
    db = await asyncpg.connect(**parse_url(pg_url).connect_kwargs())
    await db.execute(
        "INSERT INTO jobs (number, project, params, doc_variables, identity, status, "
        "progress_done, progress_total, progress_message, status_message, worker, created, "
        "updated, line_count, queue, priority) VALUES (7, 'echo', 'not json', '{}', 'ann', "
        "'Queued', 0, 0, '', '', '', 1, 1, 0, 'default', 5)")
    await db.close()
    assert await open_store(pg_url).check() == [
        "job T0000007 does not decode: params is not JSON "
        "(Expecting value: line 1 column 1 (char 0))"]


async def test_a_commit_rolled_back_to_break_a_deadlock_is_written_again(pg_url, monkeypatch):
    store = open_store(pg_url)
    assert isinstance(store, PostgresStore)
    await store.open()
    try:
        real = PostgresStore._write_new  # (a commit of new jobs only)
        tries = []

        async def deadlocked_once(self, db, batch):
            tries.append(len(batch.rows))
            if len(tries) == 1:
                # (what PostgreSQL does to one of two transactions waiting on each other)
                await db.execute("SELECT 1")
                raise asyncpg.DeadlockDetectedError("deadlock detected")
            return await real(self, db, batch)

        monkeypatch.setattr(PostgresStore, "_write_new", deadlocked_once)
        await store.add_held(job(1))
        assert tries == [1, 1]
        loaded = await store.load("T0000001")
        assert loaded is not None and loaded.identity == "ann"
    finally:
        await store.close()


async def test_two_jobs_of_one_schedule_in_one_commit_keep_the_later_mark(pg_url):
    store = open_store(pg_url)
    await store.open()
    try:
        made = []
        for number, due in ((1, 100.0), (2, 200.0)):
            item = job(number, job_token=f"schedule:nightly:{due:.0f}")
            item.record.schedule, item.record.run_at = "nightly", due
            made.append(item)
        await asyncio.gather(*(store.add(item) for item in made))  # (one commit)
    finally:
        await store.close()
    again = open_store(pg_url)
    recovery = await again.open()
    await again.close()
    assert recovery.schedule_marks == {"nightly": 200.0}



async def test_a_schema_name_with_capitals_is_used_as_written(postgres_server):
    url = postgres_server.url("Jobs_Upper")
    store = open_store(url)
    await store.open()
    try:
        await store.add(job(1))
        assert await store.load("T0000001") is not None
    finally:
        await store.close()
    assert await open_store(url).check() == []
