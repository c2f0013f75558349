"""A SQLite store's line blocks read back: any line from any block, found by a
search of the blocks' key (a monitor far behind a long job reads a page at a
time, and a scan of every block before its page made that quadratic); blocks
stored compressed, as they are (those that would not shrink), and as a
database made before compression holds them, all read back byte for byte."""

from __future__ import annotations

import os
import sqlite3

import pytest

from jobmonitor.store.sqlite.blocks import INSERT_BLOCKS, pack_blocks
from jobmonitor.store.sqlite.rows import READ_BLOCKS, SCHEMA, read_lines, upgrade_schema

#: The line_blocks table as a version before compression made it.
OLD_LINE_BLOCKS = """CREATE TABLE line_blocks (
    number INTEGER NOT NULL, first_line INTEGER NOT NULL, count INTEGER NOT NULL,
    data BLOB NOT NULL, PRIMARY KEY (number, first_line));"""
SIZES = [1, 99, 100, 300, 7, 493]


def line(n: int) -> bytes:
    return b"J0000100: line %d\r\n" % n


def blocks_of(number: int) -> list[tuple[int, int, int, bytes]]:
    """Job ``number``'s 1000 lines in blocks of uneven sizes."""
    blocks, first = [], 1
    for size in SIZES:
        blocks.append((number, first, size, b"".join(line(n) for n in range(first, first + size))))
        first += size
    return blocks


@pytest.fixture(params=["compressed", "old database"])
def db(request) -> sqlite3.Connection:
    """Job 7's 1000 lines in blocks of uneven sizes (and job 8's, around it): as
    this version stores them, or as one before compression did (then upgraded)."""
    db = sqlite3.connect(":memory:")
    if request.param == "old database":
        db.execute(OLD_LINE_BLOCKS)
    db.executescript(SCHEMA)
    for number in (6, 7, 8):
        if request.param == "old database":
            db.executemany("INSERT INTO line_blocks VALUES (?, ?, ?, ?)", blocks_of(number))
        else:
            db.executemany(f"{INSERT_BLOCKS} VALUES (?, ?, ?, ?, ?)",
                           pack_blocks(blocks_of(number)))
    upgrade_schema(db)
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


def noise_lines(count: int) -> bytes:
    """Lines of random bytes (no CR or LF): zlib cannot shrink them."""
    return b"".join(b"J0000100: %s\r\n" % os.urandom(200).replace(b"\r", b"").replace(b"\n", b"")
                    for _ in range(count))


def test_blocks_that_shrink_are_stored_compressed_the_others_as_they_are():
    lines = b"".join(line(n) for n in range(1, 101))
    noise = noise_lines(100)
    (packed,), (as_is,) = pack_blocks([(1, 1, 100, lines)]), pack_blocks([(2, 1, 100, noise)])
    assert packed[4] == 1 and len(packed[3]) < len(lines) // 4
    assert as_is[4] == 0 and as_is[3] is noise
    db = sqlite3.connect(":memory:")
    db.executescript(SCHEMA)
    db.executemany(f"{INSERT_BLOCKS} VALUES (?, ?, ?, ?, ?)", [packed, as_is])
    assert b"".join(read_lines(db, 1, 1, 200)) == lines
    assert b"".join(read_lines(db, 2, 1, 200)) == noise


def test_pages_read_one_after_another_give_the_same_lines_as_one_read(db):
    got: list[bytes] = []
    while len(got) < 1000:
        got += read_lines(db, 7, len(got) + 1, 37)
        assert read_lines(db, 8, 500, 1) == [line(500)]  # (another job between)
    assert got == [line(n) for n in range(1, 1001)]


def test_an_old_database_gets_the_column_and_keeps_its_blocks():
    db = sqlite3.connect(":memory:")
    db.execute(OLD_LINE_BLOCKS)
    db.executemany("INSERT INTO line_blocks VALUES (?, ?, ?, ?)", blocks_of(7))
    db.executescript(SCHEMA)
    upgrade_schema(db)
    upgrade_schema(db)  # (a second open changes nothing)
    assert {row[0] for row in db.execute("SELECT compressed FROM line_blocks")} == {0}
    assert read_lines(db, 7, 1, 2000) == [line(n) for n in range(1, 1001)]
