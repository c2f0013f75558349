"""The PostgreSQL store's tables, and the SQL that fills, reads and deletes them.

No pool and no batching (``store`` does those): the schema, and each query as a
function given a connection (those of nodes, holding and requests are in
``holding``).  A job row is the SQLite store's (``sqlite.rows``:
the same columns, encoded and decoded the same way) plus who holds it:
``node_id`` (None: nobody), ``epoch`` (bumped at every claim, take and takeover)
and ``requested`` (the actions other nodes asked of the holder, comma-separated);
and ``retry_at``, when a job waiting out a retry's delay is due (schema 2).

Writes of many rows are one statement each: the rows go as one array per
column (``unnest``), so a commit costs a round trip per table, whatever its size.

Tables, in the store's own schema: ``meta`` (the schema's version), ``nodes``
(one row per live node, with its heartbeat), ``jobs``, ``line_blocks`` (a job's
lines as runs of CRLF-ended lines, as SQLite keeps them), ``history``,
``outputs``, ``schedule_marks`` and ``paused_queues`` (the queues paused in
the whole cluster); the sequence ``numbers`` hands out
transaction numbers (1..9999999, never twice).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ...wire.records import HistoryEvent, JobRecord, Output
from ..base import TaskEvent
from ..sqlite import rows
from ..sqlite.rows import FINAL, JOB_COLUMNS, UNFINISHED, job_record, transaction_id_of

if TYPE_CHECKING:
    import asyncpg
    from asyncpg.pool import PoolConnectionProxy

    Db = asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]

__all__ = ["SCHEMA_VERSION", "create_schema", "job_update", "INSERT_JOBS", "UPDATE_JOBS",
           "UPSERT_BLOCKS", "WRITE_ALL",
           "INSERT_HISTORY", "INSERT_OUTPUTS", "UPSERT_MARKS", "RELEASE", "NOTIFY",
           "columns", "select_records", "list_page", "read_blocks",
           "page_of", "recent_events",
           "take_numbers", "FINAL_STATES", "UNFINISHED_STATES", "RUNNING_STATES"]

#: The version of the tables this code makes and reads; a schema of a newer
#: version is refused.
SCHEMA_VERSION = 2
FINAL_STATES = sorted(FINAL)
UNFINISHED_STATES = list(UNFINISHED)
#: The states of a job a node is running (a takeover keeps them; the rest are
#: let go for any node to claim).
RUNNING_STATES = ["Processing", "Suspended"]

_TABLES = """
CREATE TABLE IF NOT EXISTS meta (key text PRIMARY KEY, value text NOT NULL);
CREATE SEQUENCE IF NOT EXISTS numbers AS integer MINVALUE 1 MAXVALUE 9999999 NO CYCLE;
CREATE TABLE IF NOT EXISTS nodes (
    node_id text PRIMARY KEY, name text NOT NULL, address text NOT NULL,
    started float8 NOT NULL, heartbeat timestamptz NOT NULL DEFAULT now(),
    running integer NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS jobs (
    number integer PRIMARY KEY, project text NOT NULL, params text NOT NULL,
    doc_variables text NOT NULL, identity text NOT NULL, job_token text,
    status text NOT NULL, outcome text, progress_done bigint NOT NULL,
    progress_total bigint NOT NULL, progress_message text NOT NULL,
    status_message text NOT NULL, worker text NOT NULL, created float8 NOT NULL,
    started float8, updated float8 NOT NULL, completed float8, estimated float8,
    line_count integer NOT NULL, queue text NOT NULL, priority integer NOT NULL,
    run_at float8, schedule text,
    node_id text, epoch bigint NOT NULL DEFAULT 0, requested text, retry_at float8);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_by_token ON jobs (identity, job_token)
    WHERE job_token IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_waiting ON jobs (priority DESC, created, number)
    WHERE node_id IS NULL AND status IN ('Queued', 'Created');
CREATE INDEX IF NOT EXISTS jobs_by_node ON jobs (node_id) WHERE node_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_unfinished ON jobs (number)
    WHERE status NOT IN ('Completed', 'CompletedWithErrors', 'Failed', 'Cancelled');
CREATE INDEX IF NOT EXISTS jobs_by_completion ON jobs (completed) WHERE completed IS NOT NULL;
CREATE TABLE IF NOT EXISTS line_blocks (
    number integer NOT NULL, first_line integer NOT NULL, count integer NOT NULL,
    data bytea NOT NULL, PRIMARY KEY (number, first_line));
CREATE TABLE IF NOT EXISTS history (
    number integer NOT NULL, seq integer NOT NULL, stage text NOT NULL,
    status text NOT NULL, timestamp float8 NOT NULL, date float8, info text,
    PRIMARY KEY (number, seq));
CREATE INDEX IF NOT EXISTS history_of_jobs ON history (timestamp) WHERE stage = 'job';
CREATE TABLE IF NOT EXISTS outputs (
    number integer NOT NULL, seq integer NOT NULL, name text NOT NULL,
    uri text NOT NULL, media_type text, PRIMARY KEY (number, seq));
CREATE TABLE IF NOT EXISTS schedule_marks (name text PRIMARY KEY, last_due float8 NOT NULL);
CREATE TABLE IF NOT EXISTS paused_queues (name text PRIMARY KEY);
"""

_JOB_TYPES = ("integer", "text", "text", "text", "text", "text", "text", "text", "bigint",
              "bigint", "text", "text", "text", "float8", "float8", "float8", "float8",
              "float8", "integer", "text", "integer", "float8", "text")
_HOLD_TYPES = ("text", "bigint")


def _unnest(types: Sequence[str], first: int = 1) -> str:
    return ", ".join(f"${first + i}::{kind}[]" for i, kind in enumerate(types))


#: New jobs (``job_row`` + node_id, epoch); a row whose number or job token is
#: taken is skipped (RETURNING names those stored).
INSERT_JOBS = (f"INSERT INTO jobs ({JOB_COLUMNS}, node_id, epoch) "
               f"SELECT * FROM unnest({_unnest(_JOB_TYPES + _HOLD_TYPES)}) "
               "ON CONFLICT DO NOTHING RETURNING number")
#: (``worker`` too, unlike SQLite's: a job claimed by another node runs there.)
#: (And ``retry_at``: a new job is never waiting out a retry, so it is only
#: updated.)
_UPDATED = ("status", "outcome", "progress_done", "progress_total", "progress_message",
            "status_message", "started", "updated", "completed", "estimated", "line_count",
            "worker", "retry_at")
_UPDATE_TYPES = ("integer", "text", "text", "bigint", "bigint", "text", "text", "float8",
                 "float8", "float8", "float8", "integer", "text", "float8", "text", "bigint")


def job_update(record: JobRecord, number: int, line_count: int) -> tuple[Any, ...]:
    """A stored job's update row: SQLite's (``rows.job_update``), its worker and
    when it is due again after a failure."""
    return (*rows.job_update(record, number, line_count), record.worker, record.retry_at)


#: Updates (``job_update`` + the holder and epoch the writer holds it by): only
#: the rows still held so are written (fencing); an ended job is let go.  ($17:
#: the final states.)
UPDATE_JOBS = (
    "UPDATE jobs AS j SET " + ", ".join(f"{c} = u.{c}" for c in _UPDATED)
    + ", node_id = CASE WHEN u.status = ANY($17::text[]) THEN NULL ELSE j.node_id END "
    f"FROM unnest({_unnest(_UPDATE_TYPES)}) AS u(number, {', '.join(_UPDATED)}, "
    "held_by, held_epoch) "
    "WHERE j.number = u.number AND j.node_id IS NOT DISTINCT FROM u.held_by "
    "AND j.epoch = u.held_epoch RETURNING j.number")
UPSERT_BLOCKS = ("INSERT INTO line_blocks SELECT * FROM unnest($1::integer[], $2::integer[], "
                 "$3::integer[], $4::bytea[]) ON CONFLICT (number, first_line) DO UPDATE "
                 "SET count = excluded.count, data = excluded.data")
INSERT_HISTORY = ("INSERT INTO history SELECT * FROM unnest($1::integer[], $2::integer[], "
                  "$3::text[], $4::text[], $5::float8[], $6::float8[], $7::text[]) "
                  "ON CONFLICT DO NOTHING")
INSERT_OUTPUTS = ("INSERT INTO outputs SELECT * FROM unnest($1::integer[], $2::integer[], "
                  "$3::text[], $4::text[], $5::text[]) ON CONFLICT DO NOTHING")
#: A schedule's mark moves only forward.
#: (One row per schedule: an upsert may not meet the same row twice.)
UPSERT_MARKS = ("INSERT INTO schedule_marks SELECT name, max(due) FROM "
                "unnest($1::text[], $2::float8[]) AS m(name, due) GROUP BY name "
                "ON CONFLICT (name) DO UPDATE SET "
                "last_due = greatest(schedule_marks.last_due, excluded.last_due)")
#: A commit of new jobs only (the usual one that acknowledges submits), in one
#: statement: the jobs, then the lines, history, outputs and schedule marks of
#: those inserted, and the ``work`` notification ($45) if one is for anyone to
#: claim.  One round trip, where a transaction takes five.
INSERT_NEW = (
    f"WITH ins AS (INSERT INTO jobs ({JOB_COLUMNS}, node_id, epoch) "
    f"SELECT * FROM unnest({_unnest(_JOB_TYPES + _HOLD_TYPES)}) "
    "ON CONFLICT DO NOTHING RETURNING number, node_id, status), "
    "b AS (INSERT INTO line_blocks SELECT * FROM unnest($26::integer[], $27::integer[], "
    "$28::integer[], $29::bytea[]) AS b(number, first_line, count, data) "
    "WHERE b.number IN (SELECT number FROM ins) ON CONFLICT (number, first_line) "
    "DO UPDATE SET count = excluded.count, data = excluded.data), "
    "h AS (INSERT INTO history SELECT * FROM unnest($30::integer[], $31::integer[], "
    "$32::text[], $33::text[], $34::float8[], $35::float8[], $36::text[]) "
    "AS h(number, seq, stage, status, timestamp, date, info) "
    "WHERE h.number IN (SELECT number FROM ins) ON CONFLICT DO NOTHING), "
    "o AS (INSERT INTO outputs SELECT * FROM unnest($37::integer[], $38::integer[], "
    "$39::text[], $40::text[], $41::text[]) AS o(number, seq, name, uri, media_type) "
    "WHERE o.number IN (SELECT number FROM ins) ON CONFLICT DO NOTHING), "
    "m AS (INSERT INTO schedule_marks SELECT name, max(due) FROM "
    "unnest($42::text[], $43::float8[], $44::integer[]) AS m(name, due, number) "
    "WHERE m.number IN (SELECT number FROM ins) GROUP BY name "
    "ON CONFLICT (name) DO UPDATE SET "
    "last_due = greatest(schedule_marks.last_due, excluded.last_due)), "
    "w AS (SELECT pg_notify($45, '') AS sent FROM (SELECT 1 FROM ins WHERE node_id IS NULL "
    "AND status IN ('Queued', 'Created') LIMIT 1) AS waiting) "
    "SELECT number FROM ins LEFT JOIN (SELECT count(*) FROM w) AS told ON true")
#: Let go of jobs this node holds (number, epoch, whether their requests stay),
#: for others to claim.  A running job is not let go (nobody would run it): it
#: stays this node's, and is taken over by another when this node leaves.  The
#: actions asked of a job let go that this node has not read yet (``requested``)
#: are cleared and returned, for it to pass on; or, for a job whose requests
#: stay (a node that stops cannot pass them on), kept for the next holder,
#: whom ``claim`` and ``take`` tell.  (number, whether let go, the actions)
RELEASE = ("UPDATE jobs AS j SET node_id = CASE WHEN j.status = ANY($4::text[]) "
           "THEN j.node_id END, requested = CASE WHEN j.status = ANY($4::text[]) "
           "OR r.keep THEN j.requested END "
           "FROM unnest($1::integer[], $2::bigint[], $5::boolean[]) "
           "AS r(number, epoch, keep), (SELECT number, requested FROM jobs "
           "WHERE number = ANY($1::integer[]) FOR UPDATE) AS old "
           "WHERE j.number = r.number AND old.number = j.number AND j.epoch = r.epoch "
           "AND j.node_id = $3 RETURNING j.number, j.node_id IS NULL, "
           "CASE WHEN j.node_id IS NULL AND NOT r.keep THEN old.requested END")
#: Several notifications in one round trip: (channel, payload) pairs.
NOTIFY = "SELECT pg_notify(c, p) FROM unnest($1::text[], $2::text[]) AS n(c, p)"


def _shifted(statement: str, by: int) -> str:
    """``statement`` with its parameters renumbered from ``$1 + by`` on."""
    return re.sub(r"\$(\d+)", lambda m: f"${int(m.group(1)) + by}", statement)


#: A commit of new jobs and updates, whole, in one statement (the usual one
#: when jobs end: a transaction takes six round trips).  It goes through only
#: if every new row was inserted ($63 of them) and every update found its row
#: still held so ($64): else a division by zero undoes all of it (the
#: ``DivisionByZeroError`` says so) and the commit is written by ``commit``'s
#: transaction, which sorts out the rows left out.  The notifications ($61,
#: $62) are those of a commit where nothing is left out.
WRITE_ALL = (
    f"WITH ins AS ({INSERT_JOBS}), "
    f"upd AS ({_shifted(UPDATE_JOBS, 25)}), "
    "ok AS (SELECT 1 / ((SELECT count(*) FROM ins) = $63::bigint "
    "AND (SELECT count(*) FROM upd) = $64::bigint)::integer AS whole), "
    f"b AS ({_shifted(UPSERT_BLOCKS, 42)}), "
    f"h AS ({_shifted(INSERT_HISTORY, 46)}), "
    f"o AS ({_shifted(INSERT_OUTPUTS, 53)}), "
    f"m AS ({_shifted(UPSERT_MARKS, 58)}), "
    f"n AS ({_shifted(NOTIFY, 60)}) "
    "SELECT (SELECT whole FROM ok), (SELECT count(*) FROM n)")


def columns(rows: Sequence[tuple[Any, ...]], width: int = 0) -> list[list[Any]]:
    """Rows as one list per column (``unnest``'s arguments); no rows: ``width``
    empty lists."""
    if not rows:
        return [[] for _ in range(width)]
    return [list(column) for column in zip(*rows, strict=True)]


#: What brings tables of each older version up to the next one.
_UPGRADES = {
    1: "ALTER TABLE jobs ADD COLUMN IF NOT EXISTS retry_at float8",
}


async def create_schema(db: Db, schema: str) -> int:
    """Make the schema's tables if they are missing, or bring older ones up to
    ``SCHEMA_VERSION`` (one node at a time); return the version of the tables
    found then (``SCHEMA_VERSION`` unless they are newer: then nothing changed)."""
    async with db.transaction():
        await db.execute("SELECT pg_advisory_xact_lock(hashtext('jobmonitor schema ' || $1))",
                         schema)
        await db.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        await db.execute("CREATE TABLE IF NOT EXISTS meta (key text PRIMARY KEY, "
                         "value text NOT NULL)")
        stored = await db.fetchval("SELECT value FROM meta WHERE key = 'schema_version'")
        version = SCHEMA_VERSION if stored is None else int(stored)
        if version > SCHEMA_VERSION:
            return version  # (refused by the caller: nothing is touched)
        while version < SCHEMA_VERSION:  # (older tables: each step in turn)
            await db.execute(_UPGRADES[version])
            version += 1
        await db.execute(_TABLES)
        await db.execute("INSERT INTO meta VALUES ('schema_version', $1) "
                         "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                         str(SCHEMA_VERSION))
    return version


async def take_numbers(db: Db, count: int) -> list[int]:
    """``count`` new transaction numbers (not necessarily consecutive)."""
    rows = await db.fetch("SELECT nextval('numbers') FROM generate_series(1, $1)", count)
    return sorted(row[0] for row in rows)


async def last_number(db: Db) -> int:
    """The highest transaction number handed out or stored."""
    value = await db.fetchval(
        "SELECT greatest((SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM numbers), "
        "(SELECT max(number) FROM jobs), "
        "(SELECT value::integer FROM meta WHERE key = 'last_number'))")
    return int(value or 0)


async def select_records(db: Db, where: str, *args: Any,
                         history: bool = True) -> list[JobRecord]:
    """The jobs ``WHERE where`` (which may end in ORDER BY/LIMIT), with their
    outputs and (``history``) history.  A row that does not decode raises
    ValueError (job_record's)."""
    rows = await db.fetch(f"SELECT {JOB_COLUMNS}, retry_at FROM jobs WHERE {where}", *args)
    records = [_with_retry_at(tuple(row)) for row in rows]
    if not records:
        return records
    by_number = {record.number: record for record in records}
    numbers = list(by_number)
    for row in await db.fetch("SELECT number, name, uri, media_type FROM outputs "
                              "WHERE number = ANY($1::integer[]) ORDER BY number, seq", numbers):
        by_number[row[0]].outputs.append(Output(row[1], row[2], row[3]))
    if history:
        for row in await db.fetch(
                "SELECT number, stage, status, timestamp, date, info FROM history "
                "WHERE number = ANY($1::integer[]) ORDER BY number, seq", numbers):
            by_number[row[0]].history.append(HistoryEvent(*tuple(row)[1:]))
    return records


def _with_retry_at(row: tuple[Any, ...]) -> JobRecord:
    """The record of a job row with its ``retry_at`` column last."""
    record = job_record(row[:-1])
    record.retry_at = row[-1]
    return record


async def list_page(db: Db, identity: str | None, after: int, limit: int, *,
                    active: bool = False) -> list[JobRecord]:
    """Up to ``limit`` jobs numbered above ``after`` (``identity``'s, if given;
    ``active``: only unfinished ones), in number order, without their history."""
    where = "number > $1"
    args: list[Any] = [after]
    if active:
        where += " AND status NOT IN ('Completed', 'CompletedWithErrors', 'Failed', 'Cancelled')"
    if identity is not None:
        args.append(identity)
        where += f" AND identity = ${len(args)}"
    args.append(limit)
    return await select_records(db, f"{where} ORDER BY number LIMIT ${len(args)}", *args,
                                history=False)


#: A job's stored blocks that hold lines $2 (1-based) up to before $3.
READ_BLOCKS = (
    "SELECT first_line, data FROM line_blocks WHERE number = $1 AND first_line >= "
    "(SELECT coalesce(max(first_line), 0) FROM line_blocks WHERE number = $1 "
    "AND first_line <= $2) AND first_line < $3 AND first_line + count > $2 "
    "ORDER BY first_line")


async def read_blocks(db: Db, number: int, from_line: int,
                      limit: int) -> list[tuple[int, list[bytes]]]:
    """The stored blocks (first line, lines) that hold job ``number``'s lines
    ``from_line`` to ``from_line + limit - 1``, in order."""
    # Only those blocks: from the one that holds from_line (a search of the key,
    # not a scan of the blocks before it) to the last that starts before
    # from_line + limit.  Not all the rest: a monitor far behind a long job would
    # fetch the whole tail for every page it reads.
    rows = await db.fetch(READ_BLOCKS, number, from_line, from_line + max(limit, 1))
    return [(first_line, [part + b"\r\n" for part in bytes(data).split(b"\r\n")[:-1]])
            for first_line, data in rows]


def page_of(blocks: list[tuple[int, list[bytes]]], from_line: int, limit: int) -> list[bytes]:
    """Up to ``limit`` of a job's lines from ``from_line`` (1-based) on, out of
    ``read_blocks``' blocks."""
    found: list[bytes] = []
    for first_line, lines in blocks:
        found.extend(lines[max(from_line - first_line, 0):])
        if len(found) >= limit:
            break
    return found[:limit]


async def recent_events(db: Db, limit: int) -> list[TaskEvent]:
    """The last ``limit`` job events of all jobs, oldest first."""
    rows = await db.fetch(
        "SELECT j.number, j.project, h.stage, h.status, h.timestamp, h.date, h.info "
        "FROM history h JOIN jobs j ON j.number = h.number WHERE h.stage = 'job' "
        "ORDER BY h.timestamp DESC LIMIT $1", limit)
    return [TaskEvent(transaction_id_of(r[0]), r[1], HistoryEvent(*tuple(r)[2:]))
            for r in reversed(rows)]


async def find_token(db: Db, identity: str, job_token: str) -> str | None:
    number = await db.fetchval("SELECT number FROM jobs WHERE identity = $1 AND job_token = $2",
                               identity, job_token)
    return transaction_id_of(number) if number is not None else None


async def token_owners(db: Db, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """The numbers of the jobs that have these (identity, job token) keys."""
    rows = await db.fetch(
        "SELECT j.identity, j.job_token, j.number FROM jobs j JOIN "
        "unnest($1::text[], $2::text[]) AS k(identity, job_token) "
        "ON j.identity = k.identity AND j.job_token = k.job_token",
        [key[0] for key in keys], [key[1] for key in keys])
    return {(row[0], row[1]): row[2] for row in rows}


async def delete_numbers(db: Db, numbers: list[int]) -> None:
    """Delete these jobs, their lines, history and outputs; their numbers stay used."""
    async with db.transaction():
        await db.execute(
            "INSERT INTO meta VALUES ('last_number', $1) ON CONFLICT (key) DO UPDATE SET "
            "value = greatest(meta.value::integer, excluded.value::integer)::text",
            str(max(numbers)))
        for table in ("jobs", "line_blocks", "history", "outputs"):
            await db.execute(f"DELETE FROM {table} WHERE number = ANY($1::integer[])", numbers)


async def finished_before_numbers(db: Db, finished_before: float) -> list[int]:
    rows = await db.fetch("SELECT number FROM jobs WHERE completed IS NOT NULL "
                          "AND completed < $1", finished_before)
    return [row[0] for row in rows]


async def schedule_marks(db: Db) -> dict[str, float]:
    return {row[0]: row[1] for row in await db.fetch("SELECT name, last_due FROM schedule_marks")}
