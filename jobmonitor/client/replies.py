"""One reply read line by line, sans-I/O: the ``R`` lines of a code, up to the one with ``:``.

Both ways the client asks (``connection`` on asyncio, ``blocking`` on a plain
socket) hand each line they read to a ``ReplyReader``, so both accept and
refuse the same replies with the same errors.
"""

from __future__ import annotations

from ..errors import ProtocolError, ReplyError
from ..wire.lines import LineError, parse_line

__all__ = ["ReplyReader", "READ_LIMIT", "INCOMPLETE_REPLY"]

#: Longest line the client accepts (a JSON job list is one line).
READ_LIMIT = 64 * 1024 * 1024
#: Why a reply is cut short (a ``ConnectionError``'s message).
INCOMPLETE_REPLY = "the server closed the connection before its reply was complete"


class ReplyReader:
    """Feed it a reply's lines (``feed`` says when the reply is complete), then
    take the texts (``texts``)."""

    def __init__(self) -> None:
        self._texts: list[str] = []
        self._code: int | None = None
        self._error = False

    def feed(self, raw: bytes) -> bool:
        """Take one line as read (with its line end); True once it was the last.

        Raises:
            ProtocolError: a line that is not an ``R`` line of the reply's code.
            ConnectionError: ``raw`` does not end a line (the connection closed).
        """
        if not raw.endswith(b"\n"):
            raise ConnectionError(INCOMPLETE_REPLY)
        try:
            line = parse_line(raw)
        except LineError as exc:
            raise ProtocolError(str(exc)) from None
        if line.letter != "R" or self._code not in (None, line.code):
            raise ProtocolError(f"unexpected line in a reply: {raw[:80]!r}")
        self._code = line.code
        self._error = line.is_error
        self._texts.append(line.text)
        return not line.more

    def texts(self) -> list[str]:
        """The text of each line of a complete reply.

        Raises:
            ReplyError: it is an error reply.
        """
        if self._error:
            assert self._code is not None
            raise ReplyError(self._code, "\n".join(self._texts))
        return self._texts
