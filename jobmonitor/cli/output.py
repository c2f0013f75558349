"""How the client commands print a job's stream: plain lines, a live bar, or JSON.

* Plain: every line as the server sent it (``J0000100: text``), the way
  netcat shows it; the submit's reply comes first as ``R0000000: T0000001``.
* Live (stdout is a terminal): the same, except that progress lines drive a
  progress bar on the last terminal line instead of scrolling past.
* JSON: one object per line for programs: ``submitted`` (or ``watching``),
  ``line`` and ``result`` events.

Notices for the user (the connection was lost, re-attaching, re-attached) go
to stderr in every mode, so that stdout stays the stream and nothing else.

Server text is printed with its control characters escaped, so a job cannot
move the cursor, ring the bell or forge a line on the user's terminal; the
Unicode characters that reorder or hide text (bidirectional controls,
zero-width characters) are escaped too (``display_text``).
"""

from __future__ import annotations

import json
import re
import sys
import unicodedata
from typing import TYPE_CHECKING, TextIO

from ..wire.codes import Reply
from ..wire.lines import escape_text
from ..wire.states import Outcome

if TYPE_CHECKING:  # (the commands that print no stream need not import them)
    from ..client import JobResult, Progress, StreamLine

__all__ = ["StreamPrinter", "PlainPrinter", "LivePrinter", "JsonPrinter", "EXIT_CODES",
           "SHUTDOWN_EXIT", "exit_status", "display_text", "display_width"]

#: The exit status of ``submit`` and ``watch`` for each outcome.
EXIT_CODES = {Outcome.SUCCESS: 0, Outcome.FAILED: 1, Outcome.PARTIAL: 3, Outcome.CANCELLED: 4}
#: ... and for a job the server cancelled because it was shutting down.
SHUTDOWN_EXIT = 5


def exit_status(result: JobResult) -> int:
    """The exit status of ``submit`` and ``watch`` for a job that ended so."""
    return SHUTDOWN_EXIT if result.cancelled_by_shutdown else EXIT_CODES[result.outcome]

_CLEAR_LINE = "\r\x1b[K"
#: Besides what ``escape_text`` escapes: a line break (what is printed as one line
#: must stay one) and the format characters that reorder or hide text.
_HIDDEN = re.compile("[\n\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]")


def display_text(text: str) -> str:
    """``text`` made safe to print as (part of) one terminal line."""
    return _HIDDEN.sub(lambda match: f"\\u{ord(match.group()):04x}" if match.group() != "\n"
                       else "\\x0a", escape_text(text))


class StreamPrinter:
    """Prints a transaction's events to ``out``, and notices to ``err``
    (default: ``sys.stderr``)."""

    def __init__(self, out: TextIO, err: TextIO | None = None) -> None:
        self.out = out
        self.err: TextIO | None = err if err is not None else sys.stderr

    def begin(self, transaction_id: str, event: str) -> None:
        """The stream of ``transaction_id`` starts (``event``: submitted or watching)."""
        self._write(f"R{Reply.OK:07d}: {transaction_id}\n")

    def line(self, line: StreamLine) -> None:
        self._write(display_text(line.wire_text()) + "\n")

    def result(self, result: JobResult) -> None:
        """The stream has ended."""

    def close(self) -> None:
        """The stream stops here, ended or not (an error, Ctrl-C)."""

    def notice(self, text: str) -> None:
        """One line for the user about the stream, on ``err``."""
        if self.err is None:  # (Python started without a stderr)
            return
        try:
            self.err.write(text + "\n")
            self.err.flush()
        except OSError:
            pass  # a notice that cannot be shown must not stop the stream

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()


class PlainPrinter(StreamPrinter):
    """Every line as the server sent it."""


class LivePrinter(StreamPrinter):
    """Plain lines, with progress lines shown as a bar on the last terminal line."""

    def __init__(self, out: TextIO, err: TextIO | None = None) -> None:
        super().__init__(out, err)
        self._bar = ""
        self._last_progress: StreamLine | None = None

    def line(self, line: StreamLine) -> None:
        progress = line.progress
        if progress is not None:
            self._last_progress = line
            import shutil  # (here: only a terminal shows a bar)

            self._bar = render_bar(progress, shutil.get_terminal_size().columns)
            self._write(_CLEAR_LINE + self._bar)
            return
        prefix = _CLEAR_LINE if self._bar else ""
        suffix = self._bar if not line.is_end else ""
        self._write(prefix + display_text(line.wire_text()) + "\n" + suffix)

    def result(self, result: JobResult) -> None:
        # Leave the last progress line in the scroll-back, where a plain run has it.
        if self._bar:
            self._bar = ""
            self._write(_CLEAR_LINE)

    def close(self) -> None:
        # Cut short: end the bar's line, so that an error or the shell's prompt
        # starts a line of its own.
        if self._bar:
            self._bar = ""
            self._write("\n")

    def notice(self, text: str) -> None:
        # The notice takes the bar's line (stderr is most likely the same
        # terminal), and the bar comes back below it.
        if self._bar:
            self._write(_CLEAR_LINE)
        super().notice(text)
        if self._bar:
            self._write(self._bar)


def render_bar(progress: Progress, columns: int) -> str:
    """``[#####-----]  50%  5/10 message``, cut to fit ``columns`` (no newline)."""
    counts = f"{progress.percent:3d}%  {progress.done}/{progress.total}" if progress.total \
        else f"{progress.done} done"
    width = max(10, min(40, columns // 3))
    filled = width * progress.done // progress.total if progress.total else 0
    bar = "[" + "#" * filled + "-" * (width - filled) + "]"
    text = f"{bar} {counts}"
    if progress.message:
        text += "  " + display_text(progress.message).replace("\t", " ")
    return _cut_to_width(text, max(columns - 1, 1))


def display_width(text: str) -> int:
    """How many terminal cells ``text`` fills: a wide (East Asian) character
    takes two, a combining mark none."""
    return sum(map(_cells, text))


def _cells(char: str) -> int:
    if unicodedata.combining(char):
        return 0
    return 2 if unicodedata.east_asian_width(char) in "WF" else 1


def _cut_to_width(text: str, columns: int) -> str:
    """The start of ``text`` that fills at most ``columns`` terminal cells."""
    used = 0
    for index, char in enumerate(text):
        used += _cells(char)
        if used > columns:
            return text[:index]
    return text


class JsonPrinter(StreamPrinter):
    """One JSON object per line: ``submitted`` (or ``watching``), ``line``, ``result``."""

    def __init__(self, out: TextIO, err: TextIO | None = None) -> None:
        super().__init__(out, err)
        self._transaction_id = ""

    def begin(self, transaction_id: str, event: str) -> None:
        self._transaction_id = transaction_id
        self._emit({"event": event, "transaction_id": transaction_id})

    def line(self, line: StreamLine) -> None:
        self._emit({"event": "line", "transaction_id": self._transaction_id,
                    "number": line.number, "code": line.code, "text": line.text,
                    "is_error": line.is_error, "more": line.more})

    def result(self, result: JobResult) -> None:
        self._emit({"event": "result", "transaction_id": result.transaction_id,
                    "outcome": result.outcome.value, "exit_code": exit_status(result)})

    def _emit(self, event: dict[str, object]) -> None:
        self._write(json.dumps(event) + "\n")
