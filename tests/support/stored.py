"""Many finished jobs written straight into a SQLite store file, for tests that
need a big store without running every job through a server.

The rows are made by the store's own code (``sqlite_rows``), so a server opened
on the file reads them as it reads its own.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable

from jobmonitor.store.sqlite.rows import JOB_COLUMNS, SCHEMA, insert_rows, job_row, transaction
from jobmonitor.wire.records import HistoryEvent, JobRecord, Output
from jobmonitor.wire.states import JobState, Outcome

#: Jobs written per transaction.
BATCH = 5_000


def finished_job(number: int, now: float, identity: str = "anonymous") -> JobRecord:
    """A completed ``echo`` job with three lines, its history and one output."""
    record = JobRecord(
        f"T{number:07d}", "echo", {"ProjectName": "echo", "JobName": f"stored job {number}",
                                   "Size": "A4;duplex=yes"}, {}, identity=identity,
        status=JobState.COMPLETED, outcome=Outcome.SUCCESS, status_message="Job completed "
        "successfully.", worker="testhost", created=now, started=now, updated=now,
        completed=now, line_count=3)
    record.history = [HistoryEvent("job", status, now) for status in ("queued", "start",
                                                                     "complete")]
    record.outputs = [Output(f"out-{number}.pdf", f"file:///srv/out-{number}.pdf",
                             "application/pdf")]
    return record


def fill(path: str, count: int, *,
         identity_of: Callable[[int], str] = lambda number: "anonymous") -> None:
    """Write ``count`` finished jobs, T0000001 on, into the store file at ``path``
    (the submitter of job number N is ``identity_of(N)``)."""
    now = time.time()
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(SCHEMA)
        for start in range(1, count + 1, BATCH):
            numbers = range(start, min(start + BATCH, count + 1))
            records = [(n, finished_job(n, now, identity_of(n))) for n in numbers]
            lines = b"J0000100: Machine name: testhost\r\nJ0000020: done\r\nJ0000001: end\r\n"
            with transaction(db):
                insert_rows(db, f"REPLACE INTO jobs ({JOB_COLUMNS})",
                            [job_row(r, n, 3) for n, r in records])
                insert_rows(db, "REPLACE INTO history",
                            [(n, seq, *e) for n, r in records for seq, e in enumerate(r.history)])
                insert_rows(db, "REPLACE INTO outputs",
                            [(n, 0, *r.outputs[0]) for n, r in records])
                insert_rows(db, "REPLACE INTO line_blocks (number, first_line, count, data)",
                            [(n, 1, 3, lines) for n in numbers])
    finally:
        db.close()
