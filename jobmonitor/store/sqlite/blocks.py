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

from ...errors import RequestError
from ...wire.codes import Reply

__all__ = ["BLOCK_COLUMN", "INSERT_BLOCKS", "READ_BLOCKS", "MIN_SAVING", "LEVEL", "pack_blocks",
           "read_lines", "add_block_column", "unreadable_blocks"]

#: The column a database made before compression lacks, with its definition.
BLOCK_COLUMN = ("compressed", "INTEGER NOT NULL DEFAULT 0")
INSERT_BLOCKS = "INSERT OR REPLACE INTO line_blocks (number, first_line, count, data, compressed)"
#: zlib's fastest level: most of the saving of the others at a fraction of the time.
LEVEL = 1
#: A block is stored compressed only when that saves at least this share of its bytes.
MIN_SAVING = 1 / 8

#: A job's stored blocks from the one that holds a line on (see ``read_lines``).
READ_BLOCKS = (
    "SELECT first_line, data, compressed FROM line_blocks WHERE number = ? AND first_line >= "
    "(SELECT coalesce(max(first_line), 0) FROM line_blocks WHERE number = ? AND first_line <= ?) "
    "AND first_line + count > ? ORDER BY first_line")

_compress = zlib.compress


def pack_blocks(blocks: Sequence[tuple[int, int, int, bytes]]
                ) -> list[tuple[int, int, int, bytes, int]]:
    """``blocks`` (number, first line, count, bytes) as rows of ``line_blocks``:
    each compressed when that saves enough.  (On the writing thread: zlib lets
    the event loop's thread run meanwhile.)"""
    rows = []
    for number, first_line, count, data in blocks:
        packed = _compress(data, LEVEL)
        if len(packed) <= len(data) * (1 - MIN_SAVING):
            rows.append((number, first_line, count, packed, 1))
        else:
            rows.append((number, first_line, count, data, 0))
    return rows


def read_lines(db: sqlite3.Connection, number: int, from_line: int, limit: int) -> list[bytes]:
    """Up to ``limit`` of job ``number``'s stored lines from ``from_line`` (1-based) on.

    Raises:
        RequestError: INTERNAL_ERROR, a compressed block is damaged.
    """
    found: list[bytes] = []
    # From the block that holds from_line (the last to start at or before it), in
    # the key's order: a search of the index, not a scan of every block before.
    rows = db.execute(READ_BLOCKS, (number, number, from_line, from_line))
    for first_line, data, compressed in rows:
        if compressed:
            try:
                data = zlib.decompress(data)
            except zlib.error as exc:
                raise RequestError(Reply.INTERNAL_ERROR, f"the stored lines of T{number:07d} "
                                   f"from line {first_line} are damaged ({exc}); jobmonitor "
                                   f"serve --check-store lists what else is") from None
        # (bytes.splitlines breaks only at CR, LF and CRLF: a line has none inside)
        lines = data.splitlines(keepends=True)
        found.extend(lines[max(from_line - first_line, 0):])
        if len(found) >= limit:
            break
    return found[:limit]


def add_block_column(db: sqlite3.Connection) -> None:
    """Give ``line_blocks`` the ``compressed`` column, if it was made without it."""
    name, definition = BLOCK_COLUMN
    if name not in {row[1] for row in db.execute("PRAGMA table_info(line_blocks)")}:
        db.execute(f"ALTER TABLE line_blocks ADD COLUMN {name} {definition}")


def unreadable_blocks(db: sqlite3.Connection) -> list[str]:
    """Each block of lines that does not read back whole (for a check): damaged
    compressed data, or not as many CRLF-ended lines as it says it holds."""
    found = []
    rows = db.execute("SELECT number, first_line, count, data, compressed FROM line_blocks "
                      "ORDER BY number, first_line")
    for number, first_line, count, data, compressed in rows:
        where = f"job T{number:07d}, lines {first_line}-{first_line + count - 1}"
        try:
            text = zlib.decompress(data) if compressed else bytes(data)
        except (zlib.error, TypeError) as exc:
            found.append(f"{where} do not read back: {exc}")
            continue
        lines = text.splitlines(keepends=True)
        if len(lines) != count:
            found.append(f"{where}: the block holds {len(lines)} lines, not {count}")
        elif not all(line.endswith(b"\r\n") for line in lines):
            found.append(f"{where}: a line does not end with CRLF")
    return found
