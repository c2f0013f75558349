"""Tables as the client commands print them: columns two spaces apart, in
terminal cells, with server text made safe to print (``display_text``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .output import display_text, display_width

if TYPE_CHECKING:
    from ..client import JobStatus

__all__ = ["job_table", "table", "print_lines"]


def job_table(jobs: list[JobStatus], width: int | None = None) -> list[str]:
    """Aligned columns: transaction, status, project, job name (and a header);
    with a terminal ``width``, a job name that would not fit is cut to it, with
    an ellipsis (the other columns are short)."""
    lines = table(("TRANSACTION", "STATUS", "PROJECT", "JOB NAME"), [
        (job.transaction_id, job.status.value if job.status else "Unknown", job.project,
         job.job_name) for job in jobs])
    return lines if width is None else [_cut(line, width) for line in lines]


def _cut(line: str, width: int) -> str:
    """``line`` in at most ``width`` terminal cells, ending in "…" when cut."""
    if display_width(line) <= width:
        return line
    kept, cells = [], 0
    for char in line:
        cells += display_width(char)
        if cells > width - 1:
            break
        kept.append(char)
    return "".join(kept) + "\u2026"


def table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    """A header and rows in columns two spaces apart (in terminal cells: a wide
    character fills two); the last column is not padded."""
    rows = [header, *(tuple(display_text(cell).replace("\t", "\\x09") for cell in row)
                      for row in rows)]
    widths = [max(display_width(row[column]) for row in rows)
              for column in range(len(header) - 1)]
    return ["  ".join([*(cell + " " * (width - display_width(cell))
                         for cell, width in zip(row, widths, strict=False)), row[-1]]).rstrip()
            for row in rows]


def print_lines(lines: list[str]) -> None:
    for line in lines:
        print(display_text(line), flush=True)
