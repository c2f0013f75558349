"""The SQLite store's tables, and the SQL that fills, reads and deletes them.

No threads and no batching (``store`` does those): the schema, a job
record as a row and back, many rows written with one statement, and the
queries, each a function given the connection.  Each
table gets one ``INSERT`` per commit (a few for a very large batch), its row
count rounded up to one of a few shapes by repeating the last row, so the
connection's cache of prepared statements keeps every shape it meets.

Tables: ``jobs`` (one row per job); ``line_blocks`` (a job's J lines, numbered
from 1, kept as runs of consecutive lines: the row for lines 101..350 holds
their bytes joined, which costs one row per job per commit instead of one per
line; every line ends with CRLF and has none inside, so a block splits back
exactly; compressed where that saves, and read back, by ``blocks``);
``history``, ``outputs``; ``meta`` (the last transaction number,
written when jobs are deleted, so numbers are never reused); and
``schedule_marks`` (per recurring schedule, the last due time a job was made
for: written in the commit that stores that job, so a restart makes no job twice).

A job row read back is checked as it is decoded (every column of its type, the
parameters a JSON object of strings, text valid UTF-8): a row damaged on disk
is logged and left out of what a query returns, so it cannot stop a start or
fail a ``ListJobs`` for everyone.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import json.encoder
import logging
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from ...wire.records import HistoryEvent, JobRecord, Output, parse_transaction_id
from ...wire.states import JobState, Outcome
from ..base import TaskEvent
from .blocks import READ_BLOCKS, add_block_column, read_lines

__all__ = ["SCHEMA", "JOB_COLUMNS", "UNFINISHED", "FINAL", "MAX_VARIABLES", "STATEMENT_CACHE",
           "UPDATE_HEAD", "UPDATE_GROUP", "UPDATE_TAIL", "transaction", "insert_rows", "shaped",
           "last_number", "transaction_id_of", "number_of", "job_row", "job_update",
           "job_record", "encode_json", "select_records", "list_page", "recent_events",
           "find_token", "read_lines", "READ_BLOCKS", "finished_before_numbers", "delete_numbers",
           "undecodable_jobs", "ADDED_COLUMNS", "SCHEDULE_MARK_HEAD",
           "SCHEDULE_MARK_TAIL", "upgrade_schema", "schedule_marks_of", "stored_schedule_marks"]

T = TypeVar("T")

log = logging.getLogger("jobmonitor.store")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    number INTEGER PRIMARY KEY, project TEXT NOT NULL, params TEXT NOT NULL,
    doc_variables TEXT NOT NULL, identity TEXT NOT NULL, job_token TEXT,
    status TEXT NOT NULL, outcome TEXT, progress_done INTEGER NOT NULL,
    progress_total INTEGER NOT NULL, progress_message TEXT NOT NULL,
    status_message TEXT NOT NULL, worker TEXT NOT NULL, created REAL NOT NULL,
    started REAL, updated REAL NOT NULL, completed REAL, estimated REAL,
    line_count INTEGER NOT NULL, queue TEXT NOT NULL DEFAULT 'default',
    priority INTEGER NOT NULL DEFAULT 5, run_at REAL, schedule TEXT);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_by_token ON jobs (identity, job_token)
    WHERE job_token IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status);
CREATE TABLE IF NOT EXISTS line_blocks (
    number INTEGER NOT NULL, first_line INTEGER NOT NULL, count INTEGER NOT NULL,
    data BLOB NOT NULL, compressed INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (number, first_line));
CREATE TABLE IF NOT EXISTS history (
    number INTEGER NOT NULL, seq INTEGER NOT NULL, stage TEXT NOT NULL,
    status TEXT NOT NULL, timestamp REAL NOT NULL, date REAL, info TEXT,
    PRIMARY KEY (number, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outputs (
    number INTEGER NOT NULL, seq INTEGER NOT NULL, name TEXT NOT NULL,
    uri TEXT NOT NULL, media_type TEXT, PRIMARY KEY (number, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS schedule_marks (name TEXT PRIMARY KEY, last_due REAL NOT NULL);
"""
#: The job columns added by later versions, each with its definition: a database
#: made before them gets them at open (``upgrade_schema``).
ADDED_COLUMNS = (("queue", "TEXT NOT NULL DEFAULT 'default'"),
                 ("priority", "INTEGER NOT NULL DEFAULT 5"), ("run_at", "REAL"),
                 ("schedule", "TEXT"))
#: A schedule's mark moves only forward: the last due time it made a job for.
SCHEDULE_MARK_HEAD = "INSERT INTO schedule_marks (name, last_due)"
SCHEDULE_MARK_TAIL = (" ON CONFLICT (name) DO UPDATE SET "
                      "last_due = max(last_due, excluded.last_due)")
JOB_COLUMNS = ("number, project, params, doc_variables, identity, job_token, status, outcome, "
                "progress_done, progress_total, progress_message, status_message, worker, "
                "created, started, updated, completed, estimated, line_count, queue, priority, "
                "run_at, schedule")
UNFINISHED = tuple(s.value for s in JobState if not s.is_final)
FINAL = frozenset(s.value for s in JobState if s.is_final)
#: Most parameters in one statement: SQLite's limit before 3.32, and it keeps each
#: prepared statement (kept in the connection's cache) to a few KiB.
MAX_VARIABLES = 999
#: The job columns a later write updates (the rest never change).
_UPDATED_COLUMNS = ("status", "outcome", "progress_done", "progress_total", "progress_message",
                    "status_message", "started", "updated", "completed", "estimated",
                    "line_count")
# An update is an upsert of a row known to exist: the columns that never change
# get placeholders the conflict discards (they are NOT NULL, checked first).
UPDATE_HEAD = ("INSERT INTO jobs (number, project, params, doc_variables, identity, worker, "
                f"created, {', '.join(_UPDATED_COLUMNS)})")
UPDATE_GROUP = "(?, '', '', '', '', '', 0, " + ", ".join("?" * len(_UPDATED_COLUMNS)) + ")"
UPDATE_TAIL = (" ON CONFLICT (number) DO UPDATE SET "
                + ", ".join(f"{c} = excluded.{c}" for c in _UPDATED_COLUMNS))
_TEXT = str
_OPTIONAL_TEXT = (str, type(None))
_TIME = (float, int)
_OPTIONAL_TIME = (float, int, type(None))
#: What each of JOB_COLUMNS must hold (the numbers are INTEGER or REAL columns,
#: but SQLite keeps whatever it is given).
_COLUMN_TYPES: tuple[Any, ...] = (
    int, _TEXT, _TEXT, _TEXT, _TEXT, _OPTIONAL_TEXT, _TEXT, _OPTIONAL_TEXT, int, int, _TEXT,
    _TEXT, _TEXT, _TIME, _OPTIONAL_TIME, _TIME, _OPTIONAL_TIME, _OPTIONAL_TIME, int, _TEXT,
    int, _OPTIONAL_TIME, _OPTIONAL_TEXT)
_COLUMN_NAMES = tuple(JOB_COLUMNS.split(", "))
_HISTORY_COLUMNS = "stage, status, timestamp, date, info"
_HISTORY_TYPES: tuple[Any, ...] = (_TEXT, _TEXT, _TIME, _OPTIONAL_TIME, _OPTIONAL_TEXT)
_HISTORY_NAMES = tuple(f"history {name}" for name in _HISTORY_COLUMNS.split(", "))
_OUTPUT_COLUMNS = "name, uri, media_type"
_OUTPUT_TYPES: tuple[Any, ...] = (_TEXT, _TEXT, _OPTIONAL_TEXT)
_OUTPUT_NAMES = tuple(f"output {name}" for name in _OUTPUT_COLUMNS.split(", "))
_SELECT_HISTORY = f"SELECT {_HISTORY_COLUMNS} FROM history WHERE number = ? ORDER BY seq"
_SELECT_OUTPUTS = f"SELECT {_OUTPUT_COLUMNS} FROM outputs WHERE number = ? ORDER BY seq"
_ONLY_TEXT = frozenset([str])
#: Prepared statements a connection keeps (Python's default is 128): the store's
#: few dozen shapes, and room for the reads.
STATEMENT_CACHE = 256


@contextlib.contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN`` ... ``COMMIT``; on any failure (``COMMIT``'s own included) roll back,
    so the connection never stays inside a failed transaction."""
    db.execute("BEGIN")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def insert_rows(db: sqlite3.Connection, head: str, rows: Sequence[tuple[Any, ...]],
            most_variables: int = MAX_VARIABLES, group: str | None = None,
            tail: str = "") -> None:
    """``head VALUES (...), (...), ... tail``: many rows per statement.

    Not ``executemany``: it takes the interpreter lock back after every row, and
    while the event loop's thread is busy each such handover waits (up to the
    switch interval, 5 ms): a commit of a few hundred rows took seconds.  One
    statement holds up to ``most_variables`` parameters.  Its row count is
    rounded up (see ``_statement_rows``) by repeating the last row, which
    changes nothing, since every statement here replaces a row with the same
    key: so there are few statement shapes, and the connection's cache of
    prepared statements keeps them all.
    """
    if not rows:
        return
    width = len(rows[0])
    group = group or "(" + ",".join("?" * width) + ")"
    for chunk in shaped(rows, max(most_variables // width, 1)):
        db.execute(_statement(head, group, tail, len(chunk)),
                   list(itertools.chain.from_iterable(chunk)))


def shaped(rows: Sequence[T], most: int) -> Iterator[Sequence[T]]:
    """``rows`` in chunks of at most ``most``, each made as long as its statement's
    row count (``_statement_rows``) by repeating its last row."""
    for start in range(0, len(rows), most):
        chunk = rows[start:start + most]
        shape = min(_statement_rows(len(chunk)), most)
        if shape > len(chunk):
            chunk = [*chunk, *[chunk[-1]] * (shape - len(chunk))]
        yield chunk


@functools.lru_cache(maxsize=STATEMENT_CACHE)
def _statement(head: str, group: str, tail: str, rows: int) -> str:
    """The text of a statement for ``rows`` rows: made once, and the same string
    object each time (its hash, which the statement cache looks up, is kept)."""
    return f"{head} VALUES {','.join([group] * rows)}{tail}"


def _statement_rows(count: int) -> int:
    """The row count of the statement for ``count`` rows: exact up to 8, then
    rounded up to the next of 12, 16, 24, 32, 48, 64... (at most a third more)."""
    if count <= 8:
        return count
    power = 1 << (count - 1).bit_length()  # the next power of two: 16, 32, 64...
    return power * 3 // 4 if count <= power * 3 // 4 else power


def last_number(db: sqlite3.Connection) -> int:
    """The highest transaction number ever stored (deleted jobs' included)."""
    stored = db.execute("SELECT value FROM meta WHERE key = 'last_number'").fetchone()
    highest = db.execute("SELECT MAX(number) FROM jobs").fetchone()[0] or 0
    return max(int(stored[0]) if stored else 0, highest)


def upgrade_schema(db: sqlite3.Connection) -> None:
    """Add the columns a database made by an earlier version lacks."""
    present = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
    for name, definition in ADDED_COLUMNS:
        if name not in present:
            db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {definition}")
    add_block_column(db)


def schedule_marks_of(rows: Sequence[tuple[Any, ...]]) -> list[tuple[str, float]]:
    """The schedule marks new job rows carry: (schedule, due time) of each job a
    schedule made, written in the commit that stores the job."""
    return [(row[-1], row[-2]) for row in rows if row[-1] is not None and row[-2] is not None]


def stored_schedule_marks(db: sqlite3.Connection) -> dict[str, float]:
    """Each schedule's last due time that a job was made for."""
    return {name: last for name, last in db.execute("SELECT name, last_due FROM schedule_marks")
            if isinstance(name, str) and isinstance(last, (int, float))}


def transaction_id_of(number: int) -> str:
    return f"T{number:07d}"


def number_of(transaction_id: str) -> int | None:
    """The number of a transaction ID as the engine spells it ("T0000042"), or None."""
    if transaction_id[:1] == "T" and parse_transaction_id(transaction_id) == transaction_id:
        return int(transaction_id[1:])
    return None


def job_row(r: JobRecord, number: int, line_count: int) -> tuple[Any, ...]:
    return (number, r.project, encode_json(r.params),
            encode_json(r.doc_variables) if r.doc_variables else "{}", r.identity, r.job_token,
            r.status._value_, r.outcome._value_ if r.outcome is not None else None,
            r.progress_done, r.progress_total, r.progress_message, r.status_message, r.worker,
            r.created, r.started, r.updated, r.completed, r.estimated, line_count, r.queue,
            r.priority, r.run_at, r.schedule)


def job_update(r: JobRecord, number: int, line_count: int) -> tuple[Any, ...]:
    # In the order of _UPDATED_COLUMNS, after the number.
    return (number, r.status._value_, r.outcome._value_ if r.outcome is not None else None,
            r.progress_done, r.progress_total, r.progress_message, r.status_message,
            r.started, r.updated, r.completed, r.estimated, line_count)


def _json_encoder() -> Callable[[Any], str]:
    """What ``json.dumps`` makes, by one C encoder kept for good.

    ``json.dumps`` builds a new encoder at every call, which costs more than
    encoding a job's few parameters.  Without the C accelerator: ``json.dumps``.
    """
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return json.dumps
    encode = make(None, None, json.encoder.encode_basestring_ascii, None, ": ", ", ",
                  False, False, True)
    join = "".join
    return lambda value: join(encode(value, 0))


encode_json = _json_encoder()


def job_record(row: tuple[Any, ...]) -> JobRecord:
    """The record a job row holds.

    Raises:
        ValueError: the row does not hold a job (a column of another type, text
            that is not valid UTF-8, parameters that are not a JSON object of
            strings, an unknown status or outcome).
    """
    if not all(map(isinstance, row, _COLUMN_TYPES)):
        _refuse(row, _COLUMN_TYPES, _COLUMN_NAMES)
    (number, project, params, doc_variables, identity, job_token, status, outcome, done, total,
     progress_message, status_message, worker, created, started, updated, completed, estimated,
     line_count, queue, priority, run_at, schedule) = row
    # (A listing makes a thousand of these at a time: the usual empty doc
    # variables are not decoded.)
    return JobRecord(
        transaction_id=f"T{number:07d}", project=project,
        params=_string_map(params, "params"),
        doc_variables=(_string_map(doc_variables, "doc_variables")
                       if doc_variables != "{}" else {}),
        identity=identity, job_token=job_token, status=JobState(status),
        outcome=Outcome(outcome) if outcome else None,
        progress_done=done, progress_total=total, progress_message=progress_message,
        status_message=status_message, worker=worker, created=created, started=started,
        updated=updated, completed=completed, estimated=estimated, line_count=line_count,
        queue=queue, priority=priority, run_at=run_at, schedule=schedule)


def _refuse(row: tuple[Any, ...], types: tuple[Any, ...], names: Sequence[str]) -> None:
    """Raise a ValueError that names the first value of ``row`` not of its type."""
    for name, value, kind in zip(names, row, types, strict=True):
        if not isinstance(value, kind):
            what = "text that is not UTF-8" if type(value) is bytes else type(value).__name__
            raise ValueError(f"{name} holds {what}")


def _string_map(text: str, column: str) -> dict[str, str]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{column} is not JSON ({exc})") from None
    if type(value) is not dict or not _ONLY_TEXT.issuperset(map(type, value.values())):
        raise ValueError(f"{column} is not a JSON object of strings")
    return value


def _fetch(db: sqlite3.Connection, sql: str, args: Sequence[Any]) -> list[tuple[Any, ...]]:
    """The rows of a query (of columns that are not BLOBs); text that is not valid
    UTF-8, which fails the whole query in the sqlite3 module, comes as bytes."""
    try:
        return db.execute(sql, args).fetchall()
    except sqlite3.OperationalError as exc:
        if not str(exc).startswith("Could not decode to UTF-8"):
            raise
    db.text_factory = bytes  # (the connection is this thread's alone meanwhile)
    try:
        rows = db.execute(sql, args).fetchall()
    finally:
        db.text_factory = str
    return [tuple(map(_decoded, row)) for row in rows]


def _decoded(value: Any) -> Any:
    if type(value) is bytes:
        try:
            return value.decode()
        except UnicodeDecodeError:
            pass
    return value


# -- reading and deleting (each given the connection; the caller picks the thread) --


def select_records(db: sqlite3.Connection, where: str, args: Sequence[Any],
                   reported: set[int] | None = None) -> list[JobRecord]:
    """The jobs ``WHERE where`` (which may end in ``ORDER BY``), with their history
    and outputs.  A job that does not decode is logged (once, if its number goes
    in ``reported``) and left out."""
    records = []
    for row in _fetch(db, f"SELECT {JOB_COLUMNS} FROM jobs WHERE {where}", args):
        try:
            records.append(_whole_record(db, row))
        except ValueError as exc:
            _report_damage(row[0], exc, reported)
    return records


def _whole_record(db: sqlite3.Connection, row: tuple[Any, ...]) -> JobRecord:
    """A job's record with its history and outputs.

    Raises:
        ValueError: one of its rows does not decode.
    """
    record = job_record(row)
    number = row[0]
    history = _fetch(db, _SELECT_HISTORY, (number,))
    outputs = _fetch(db, _SELECT_OUTPUTS, (number,))
    for event in history:
        if not all(map(isinstance, event, _HISTORY_TYPES)):
            _refuse(event, _HISTORY_TYPES, _HISTORY_NAMES)
    for output in outputs:
        if not all(map(isinstance, output, _OUTPUT_TYPES)):
            _refuse(output, _OUTPUT_TYPES, _OUTPUT_NAMES)
    record.history = [HistoryEvent(*r) for r in history]
    record.outputs = [Output(*r) for r in outputs]
    return record


def undecodable_jobs(db: sqlite3.Connection) -> list[str]:
    """What is wrong with each job that does not decode (for a check)."""
    found = []
    for row in _fetch(db, f"SELECT {JOB_COLUMNS} FROM jobs ORDER BY number", ()):
        try:
            _whole_record(db, row)
        except ValueError as exc:
            found.append(f"job {transaction_id_of(row[0])} does not decode: {exc}")
    return found


def list_page(db: sqlite3.Connection, identity: str | None, after: int, limit: int,
              reported: set[int] | None = None) -> list[JobRecord]:
    """Up to ``limit`` jobs numbered above ``after`` (only ``identity``'s, if given),
    in number order, with their outputs but not their history: a page of a listing.
    A job that does not decode is logged (once, as ``select_records`` does) and
    left out; the page may then hold fewer than ``limit``, and the caller's
    cursor still moves past it.

    Keyset paging: each page starts where the last one ended, by the primary key,
    so a page costs the same wherever it is; the caller holds a read transaction,
    so the outputs read match the jobs.
    """
    where = "number > ?"
    args: list[Any] = [after]
    if identity is not None:
        where += " AND identity = ?"
        args.append(identity)
    page = f"FROM jobs WHERE {where} ORDER BY number LIMIT ?"
    records = []
    for row in _fetch(db, f"SELECT {JOB_COLUMNS} {page}", (*args, limit)):
        try:
            records.append(job_record(row))
        except ValueError as exc:
            _report_damage(row[0], exc, reported)
    if records:
        by_number = {record.number: record for record in records}
        for number, *output in _fetch(
                db, f"SELECT number, name, uri, media_type FROM outputs WHERE number IN "
                    f"(SELECT number {page}) ORDER BY number, seq", (*args, limit)):
            record = by_number.get(number)
            if record is not None and all(map(isinstance, output, _OUTPUT_TYPES)):
                record.outputs.append(Output(*output))
    return records


def _report_damage(number: int, exc: ValueError, reported: set[int] | None) -> None:
    if reported is None or number not in reported:
        log.error("job %s is damaged in the database and left out: %s",
                  transaction_id_of(number), exc)
        if reported is not None:
            reported.add(number)


def recent_events(db: sqlite3.Connection, limit: int) -> list[TaskEvent]:
    """The last ``limit`` job events of all jobs, oldest first (the task log);
    an event damaged on disk is left out."""
    rows = _fetch(db,
        "SELECT j.number, j.project, h.stage, h.status, h.timestamp, h.date, h.info "
        "FROM history h JOIN jobs j ON j.number = h.number WHERE h.stage = 'job' "
        "ORDER BY h.timestamp DESC LIMIT ?", (limit,))
    return [TaskEvent(transaction_id_of(r[0]), r[1], HistoryEvent(*r[2:]))
            for r in reversed(rows)
            if isinstance(r[1], str) and all(map(isinstance, r[2:], _HISTORY_TYPES))]


def find_token(db: sqlite3.Connection, identity: str, job_token: str) -> str | None:
    """The transaction ID of ``identity``'s job with ``job_token``, if any."""
    row = db.execute("SELECT number FROM jobs WHERE identity = ? AND job_token = ?",
                     (identity, job_token)).fetchone()
    return transaction_id_of(row[0]) if row else None


def finished_before_numbers(db: sqlite3.Connection, finished_before: float) -> list[int]:
    """The numbers of the jobs that finished before ``finished_before``."""
    return [row[0] for row in db.execute(
        "SELECT number FROM jobs WHERE completed IS NOT NULL AND completed < ?",
        (finished_before,))]


def delete_numbers(db: sqlite3.Connection, numbers: list[int]) -> None:
    """Delete these jobs, their lines, history and outputs, in one transaction."""
    with transaction(db):
        # The newest job may be among those deleted: its number must stay used.
        db.execute("REPLACE INTO meta VALUES ('last_number', ?)", (str(last_number(db)),))
        for table in ("jobs", "line_blocks", "history", "outputs"):
            # IN lists, not executemany, shaped like insert_rows's (a repeated number
            # deletes nothing more).
            for chunk in shaped(numbers, MAX_VARIABLES):
                db.execute(f"DELETE FROM {table} WHERE number IN "
                           f"({','.join('?' * len(chunk))})", chunk)
