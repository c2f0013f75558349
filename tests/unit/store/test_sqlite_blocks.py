"""A SQLite store's line blocks read back: any line from any block, found by a
search of the blocks' key (a monitor far behind a long job reads a page at a
time, and a scan of every block before its page made that quadratic)."""

from __future__ import annotations

import sqlite3

import pytest

from jobmonitor.store.sqlite.rows import READ_BLOCKS, SCHEMA, read_lines


def line(n: int) -> bytes:
    return b"J0000100: line %d\r\n" % n


@pytest.fixture
def db() -> sqlite3.Connection:
    """Job 7's 1000 lines in blocks of uneven sizes (and job 8's, around it)."""
    db = sqlite3.connect(":memory:")
    db.executescript(SCHEMA)
    for number in (6, 7, 8):
        first = 1
        for size in [1, 99, 100, 300, 7, 493]:
            data = b"".join(line(n) for n in range(first, first + size))
            db.execute("INSERT INTO line_blocks VALUES (?, ?, ?, ?)", (number, first, size, data))
            first += size
    return db


@pytest.mark.parametrize("from_line", [1, 2, 100, 101, 200, 201, 500, 501, 507, 508, 1000])
@pytest.mark.parametrize("limit", [1, 3, 250, 2000])
def test_any_line_is_read_from_its_block_on(db, from_line, limit):
    expected = [line(n) for n in range(from_line, min(from_line + limit, 1001))]
    assert read_lines(db, 7, from_line, limit) == expected


def test_past_the_end_or_an_unknown_job_reads_nothing(db):
    assert read_lines(db, 7, 1001, 10) == [] and read_lines(db, 9, 1, 10) == []


def test_the_blocks_are_found_by_a_search_of_their_key(db):
    plan = " ".join(str(row[3]) for row in db.execute(f"EXPLAIN QUERY PLAN {READ_BLOCKS}",
                                                      (7, 7, 500, 500)))
    assert "first_line>" in plan and "first_line<" in plan  # both ends by the index
    assert "SCAN" not in plan
