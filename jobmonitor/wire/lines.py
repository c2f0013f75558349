"""Coded lines: text <-> ``R0000000: text\\r\\n`` / ``J0000100: text\\r\\n`` bytes.

Sans-I/O.  A message becomes one line per line of its text; every line but the
last separates the code from the text with ``-`` instead of ``:``.  Control
characters that could break framing or forge a line (C0 and C1 controls, DEL,
the Unicode line and paragraph separators) are escaped as ``\\xNN`` /
``\\uNNNN``, and so are lone surrogates, which UTF-8 cannot carry (a file
name read with ``os.fsdecode`` holds them); a tab is kept.  Lines are UTF-8.

Formatting is on the stream's hot path: plain printable text takes one
``isprintable()`` check and one concatenation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .codes import ERROR_THRESHOLD

__all__ = ["format_line", "format_lines", "escape_text", "split_text", "clip", "Line",
           "parse_line", "LineError"]

_NEWLINES = re.compile(r"\r\n|\r|\n")
_UNSAFE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
#: ``_UNSAFE`` but the carriage return, which only ends a line (as line feed does).
_UNSAFE_IN_LINES = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_HEADERS: dict[tuple[str, int], tuple[bytes, bytes]] = {}


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    point = ord(char)
    return f"\\x{point:02x}" if point < 0x100 else f"\\u{point:04x}"


def escape_text(text: str) -> str:
    """Escape the characters of one line that must not reach the wire raw."""
    return _UNSAFE.sub(_escape_char, text)


def split_text(text: str) -> list[str]:
    """Split a message into its lines (CRLF, CR or LF), each escaped."""
    parts = _NEWLINES.split(text)
    # One scan of the whole text, not one per line: a reply may have tens of thousands.
    if _UNSAFE_IN_LINES.search(text) is None:
        return parts
    return [escape_text(part) for part in parts]


def clip(text: str, limit: int = 40) -> str:
    """Peer-supplied text made fit to quote in an error reply: one printable line
    of at most ``limit`` characters, so a reply can neither grow nor split."""
    text = "".join(char if char.isprintable() else "?" for char in " ".join(text.split()))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _headers(letter: str, code: int) -> tuple[bytes, bytes]:
    """The ``X0000000: `` and ``X0000000- `` prefixes, cached per code."""
    key = (letter, code)
    cached = _HEADERS.get(key)
    if cached is None:
        if not 0 <= code <= 9_999_999:
            raise ValueError(f"code out of range: {code}")
        stem = f"{letter}{code:07d}"
        cached = (f"{stem}: ".encode(), f"{stem}- ".encode())
        _HEADERS[key] = cached
    return cached


def format_line(letter: str, code: int, text: str) -> bytes:
    """Encode a message as one or more coded lines.

    >>> format_line("J", 5000, "first\\nlast")
    b'J0005000- first\\r\\nJ0005000: last\\r\\n'
    """
    if text.isprintable():  # (one line: the usual reply, without a list to join)
        return _headers(letter, code)[0] + text.encode() + b"\r\n"
    return b"".join(format_lines(letter, code, text))


def format_lines(letter: str, code: int, text: str) -> list[bytes]:
    """Like ``format_line``, but one bytes object per wire line."""
    last, more = _headers(letter, code)
    if text.isprintable():
        return [last + text.encode() + b"\r\n"]
    parts = split_text(text)
    out = [more + part.encode() + b"\r\n" for part in parts[:-1]]
    out.append(last + parts[-1].encode() + b"\r\n")
    return out


class LineError(ValueError):
    """A line that is not a coded line."""


@dataclass(frozen=True, slots=True)
class Line:
    """One parsed coded line."""

    letter: str  # "R" or "J"
    code: int
    text: str
    more: bool  # True for a "-" continuation line: more lines of this message follow

    @property
    def is_error(self) -> bool:
        return self.code >= ERROR_THRESHOLD


_LINE = re.compile(r"([RJ])([0-9]{7})([:-]) ?(.*)", re.DOTALL)  # ASCII digits only


def parse_line(raw: bytes | str) -> Line:
    """Parse one coded line (with or without its CRLF).

    Raises:
        LineError: the line is not ``X0000000: text`` or ``X0000000- text``.
    """
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", errors="replace")
    raw = raw.rstrip("\r\n")
    match = _LINE.fullmatch(raw)
    if match is None:
        raise LineError(f"not a coded line: {raw[:80]!r}")
    letter, digits, sep, text = match.groups()
    return Line(letter, int(digits), text, sep == "-")
