"""A job's lines in the SQLite store: blocks of consecutive lines, compressed.

A row of ``line_blocks`` holds a run of a job's lines (``first_line`` on,
``count`` of them) joined; every line ends with CRLF and has none inside, so
a block splits back exactly.  The writing thread compresses each block with
zlib at its fastest level before it is stored (``compressed`` is 1), unless
that saves less than ``MIN_SAVING``: then the block is stored as it is.  J
lines repeat themselves a lot (codes, padding, words), so a block mostly
shrinks several times over, and a commit has that much less to write to the
log and then to the database file, and to sync.

A database made before blocks were compressed gets the ``compressed`` column
at open, 0 for every block it holds: those are read as they are.  (A server
older than this one would read a compressed block as lines: do not go back
to one on a database this one has written lines to.)
"""

from __future__ import annotations

import sqlite3
import zlib
from collections.abc import Sequence

__all__ = ["BLOCK_COLUMN", "INSERT_BLOCKS", "READ_BLOCKS", "MIN_SAVING", "LEVEL", "PACK_LINES",
           "PACK_BYTES", "pack_blocks", "read_lines", "LastBlock", "add_block_column"]

#: The column a database made before compression lacks, with its definition.
BLOCK_COLUMN = ("compressed", "INTEGER NOT NULL DEFAULT 0")
INSERT_BLOCKS = "INSERT OR REPLACE INTO line_blocks (number, first_line, count, data, compressed)"
#: zlib's fastest level: most of the saving of the others at a fraction of the time.
LEVEL = 1
#: A block is stored compressed only when that saves at least this share of its bytes.
MIN_SAVING = 1 / 8
#: Most lines, and bytes, in one stored block made of a commit's blocks: a
#: catch-up page (2 000 lines) then reads one or two, and a line read from the
#: middle of one costs the decompressing of at most this many bytes.
PACK_LINES = 2000
PACK_BYTES = 256 * 1024

#: A job's stored blocks from the one that holds a line on (see ``read_lines``).
READ_BLOCKS = (
    "SELECT first_line, data, compressed FROM line_blocks WHERE number = ? AND first_line >= "
    "(SELECT coalesce(max(first_line), 0) FROM line_blocks WHERE number = ? AND first_line <= ?) "
    "AND first_line + count > ? ORDER BY first_line")

_compress = zlib.compress


def pack_blocks(blocks: Sequence[tuple[int, int, int, bytes]]
                ) -> list[tuple[int, int, int, bytes, int]]:
    """``blocks`` (number, first line, count, bytes) as rows of ``line_blocks``:
    runs of a job's consecutive blocks joined, up to ``PACK_LINES`` lines and
    ``PACK_BYTES``, each compressed when that saves enough.

    On the writing thread.  zlib lets the event loop's thread run while it
    works, but takes the interpreter back after each call, which waits while
    the loop is busy: a job that yields every hundred lines makes blocks of a
    hundred, and compressing them one by one spent most of a commit waiting.
    """
    rows: list[tuple[int, int, int, bytes, int]] = []
    run: list[bytes] = []
    number = first_line = count = size = 0
    for block in blocks:
        if run and (block[0] != number or block[1] != first_line + count
                    or count + block[2] > PACK_LINES or size + len(block[3]) > PACK_BYTES):
            rows.append(_packed(number, first_line, count, run))
            run = []
        if not run:
            number, first_line, count, size = block[0], block[1], 0, 0
        run.append(block[3])
        count += block[2]
        size += len(block[3])
    if run:
        rows.append(_packed(number, first_line, count, run))
    return rows


def _packed(number: int, first_line: int, count: int, run: list[bytes]
            ) -> tuple[int, int, int, bytes, int]:
    data = run[0] if len(run) == 1 else b"".join(run)
    packed = _compress(data, LEVEL)
    if len(packed) <= len(data) * (1 - MIN_SAVING):
        return number, first_line, count, packed, 1
    return number, first_line, count, data, 0


class LastBlock:
    """The lines of the block read last (a reading thread's own): a monitor
    catching up reads page after page, and the next page mostly starts in the
    block the last one ended in, which is then not decompressed and split again.
    Stored blocks never change (a job's numbers are never used again), so what
    is kept stays true."""

    __slots__ = ("key", "lines")

    def __init__(self) -> None:
        self.key: tuple[int, int] | None = None
        self.lines: list[bytes] = []


def read_lines(db: sqlite3.Connection, number: int, from_line: int, limit: int,
               last: LastBlock | None = None) -> list[bytes]:
    """Up to ``limit`` of job ``number``'s stored lines from ``from_line`` (1-based) on.

    Raises:
        zlib.error: a compressed block is damaged.
    """
    found: list[bytes] = []
    # From the block that holds from_line (the last to start at or before it), in
    # the key's order: a search of the index, not a scan of every block before.
    rows = db.execute(READ_BLOCKS, (number, number, from_line, from_line))
    for first_line, data, compressed in rows:
        if last is not None and last.key == (number, first_line):
            lines = last.lines
        else:
            # (bytes.splitlines breaks only at CR, LF and CRLF: a line has none inside)
            lines = (zlib.decompress(data) if compressed else data).splitlines(keepends=True)
            if last is not None:
                last.key, last.lines = (number, first_line), lines
        found.extend(lines[max(from_line - first_line, 0):])
        if len(found) >= limit:
            break
    return found[:limit]


def add_block_column(db: sqlite3.Connection) -> None:
    """Give ``line_blocks`` the ``compressed`` column, if it was made without it."""
    name, definition = BLOCK_COLUMN
    if name not in {row[1] for row in db.execute("PRAGMA table_info(line_blocks)")}:
        db.execute(f"ALTER TABLE line_blocks ADD COLUMN {name} {definition}")
