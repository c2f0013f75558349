"""A transaction handle: a job's status lines as they arrive, and how it ended.

The handle counts the wire lines it has handed out.  When the connection drops
before the ``Transaction ... ended`` line (a network fault, a server restart),
it sends ``MonitorJob`` with ``_sys_FromLine`` set to the line after the last
one it received, retrying with back-off for up to ``reconnect_timeout_s``; a
line cut off by the drop is discarded and comes again.  A server that dropped
a monitor for reading too slowly says so with a ``J0005003`` notice naming the
line to re-attach from; that notice is not one of the job's lines and is not
handed out.  So the caller sees every line exactly once, in order.

The client's ``on_reattach`` hook hears of it: once when the connection is
lost and re-attaching starts, once when the handle has re-attached (and
nothing when the stream never breaks), so that a program can tell its user
why no line comes; the handle itself prints nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from ..errors import ProtocolError, ReplyError
from ..wire.codes import Reply, Status
from ..wire.lines import LineError, parse_line
from ..wire.states import Outcome
from ..wire.variables import behind_notice_line
from .connection import close_quietly
from .results import JobResult, JobStatus, Reattach, StreamLine

__all__ = ["Transaction"]

_FIRST_DELAY_S = 0.05
_MAX_DELAY_S = 1.0
#: Attaches in a row that bring no line at all before the server closes.
_MAX_EMPTY_ATTACHES = 5
#: How a job that has ended ended, from its state (for a watch from past its end).
_OUTCOME_OF_STATE = {outcome.state: outcome for outcome in Outcome}


class _Client(Protocol):
    """What a transaction needs of its ``api.Client`` to re-attach (a protocol:
    ``api`` imports this module, so this one does not import ``api``)."""

    reconnect_timeout_s: float
    on_reattach: Callable[[Reattach], None] | None

    async def status(self, transaction_id: str) -> JobStatus: ...

    async def _open_monitor(self, transaction_id: str, from_line: int
                            ) -> tuple[str, asyncio.StreamReader, asyncio.StreamWriter]: ...

    def _stream_ended(self, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None: ...


class Transaction:
    """A submitted or watched job.

    ``async for line in tx`` yields each ``StreamLine`` as it arrives;
    ``await tx.result()`` reads what is left and returns the ``JobResult``.
    Use ``async with`` (or ``aclose()``) to drop the connection early.
    """

    def __init__(self, client: _Client, transaction_id: str,
                 reader: asyncio.StreamReader | None = None,
                 writer: asyncio.StreamWriter | None = None, *, from_line: int = 1) -> None:
        self.transaction_id = transaction_id
        #: The number of the last line received (``from_line - 1`` before the first).
        self.last_line = max(from_line, 1) - 1
        #: The outcome, once the completion line has been received.
        self.outcome: Outcome | None = None
        self._client = client
        self._reader = reader
        self._writer = writer
        self._attached_once = reader is not None
        self._ended = False
        self._received = 0
        self._errors: list[str] = []
        self._shutdown = False  # the server said it cancelled the job as it stopped
        self._empty_attaches = 0
        self._attach_brought_lines = False
        #: The connection was lost (and ``on_reattach`` told) and not yet re-attached.
        self._lost = False

    def __repr__(self) -> str:
        state = "ended" if self._ended else f"at line {self.last_line}"
        return f"<Transaction {self.transaction_id} {state}>"

    @property
    def ended(self) -> bool:
        """True once the ``Transaction ... ended`` line has been received."""
        return self._ended

    def __aiter__(self) -> Transaction:
        return self

    async def __anext__(self) -> StreamLine:
        """The next line.

        Raises:
            StopAsyncIteration: after the ``ended`` line.
            ReplyError: re-attaching was refused (e.g. a server that forgot the job).
            OSError: the server stayed unreachable for ``reconnect_timeout_s``.
            ProtocolError: the server sent something that is not a status line.
            Whatever the client's ``on_reattach`` hook raises.
        """
        while not self._ended:
            if self._reader is None:
                await self._attach()
                self._attach_brought_lines = False
            raw = await self._read_raw()
            if raw is None or self._told_to_reattach(raw):
                await self._drop()
                if raw is None and not self._attach_brought_lines and await self._ended_before():
                    break
                self._connection_lost()
                continue
            self._attach_brought_lines = True
            return self._accept(raw)
        raise StopAsyncIteration

    async def result(self) -> JobResult:
        """Read the remaining lines and return how the job ended.

        Raises:
            ReplyError, OSError, ProtocolError: as for iteration.
        """
        async for _ in self:
            pass
        if self.outcome is None and self._ended:
            # Watched from the ended line itself: the outcome came before it.
            self.outcome = await self._outcome_from_status()
        if self.outcome is None:
            raise ProtocolError(f"the stream of {self.transaction_id} ended without an outcome")
        return JobResult(self.transaction_id, self.outcome, self._received, tuple(self._errors),
                         cancelled_by_shutdown=(self._shutdown
                                                and self.outcome is Outcome.CANCELLED))

    async def aclose(self) -> None:
        """Drop the connection (the job runs on; iterating again re-attaches)."""
        await self._drop()

    async def __aenter__(self) -> Transaction:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- reading ------------------------------------------------------------------

    async def _read_raw(self) -> bytes | None:
        """One complete line, or None when the connection ended or broke."""
        assert self._reader is not None
        try:
            raw = await self._reader.readline()
        except ValueError:
            raise ProtocolError("status line too long") from None
        except OSError:
            return None
        return raw if raw.endswith(b"\n") else None

    def _told_to_reattach(self, raw: bytes) -> bool:
        """True for the server's "fell too far behind" notice (not a line of the job)."""
        next_line = behind_notice_line(raw)
        if next_line is None:
            return False
        self.last_line = next_line - 1
        return True

    def _accept(self, raw: bytes) -> StreamLine:
        try:
            parsed = parse_line(raw)
        except LineError as exc:
            raise ProtocolError(str(exc)) from None
        if parsed.letter != "J":
            raise ProtocolError(f"expected a status line, got {raw[:80]!r}")
        self.last_line += 1
        self._received += 1
        self._empty_attaches = 0
        line = StreamLine(self.last_line, parsed.code, parsed.text, parsed.more)
        if line.is_error:
            self._errors.append(line.text)
            if line.code == Status.SHUTDOWN:
                self._shutdown = True
        if line.outcome is not None:
            self.outcome = line.outcome
        if line.is_end:
            self._ended = True
            self._close_soon()
        return line

    async def _ended_before(self) -> bool:
        """After an attach that brought no line: True, with the job's outcome, when
        the job had ended before the line asked for (a watch from past its end,
        which the server answers with its reply and nothing more)."""
        outcome = await self._outcome_from_status(before_line=self.last_line + 1)
        if outcome is None:
            return False
        self.outcome = outcome
        self._ended = True
        return True

    async def _outcome_from_status(self, before_line: int | None = None) -> Outcome | None:
        """How the job ended, from its status; None if it has not ended (or, with
        ``before_line``, has lines from there on) or the status cannot be had."""
        try:
            status = await self._client.status(self.transaction_id)
        except (OSError, ReplyError, ProtocolError):
            return None  # (the attach that follows will say what is wrong)
        if status.status is None or not status.status.is_final:
            return None
        if before_line is not None and status.lines >= before_line:
            return None
        return _OUTCOME_OF_STATE[status.status]

    def _close_soon(self) -> None:
        """After the ended line: the connection goes back to the client (which
        keeps it for its next call, or closes it)."""
        reader, writer = self._reader, self._writer
        self._reader = self._writer = None
        if reader is not None and writer is not None:
            self._client._stream_ended(reader, writer)

    async def _drop(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            await close_quietly(writer)

    # -- attaching ------------------------------------------------------------------

    async def _attach(self) -> None:
        """Open a MonitorJob stream from the line after the last one received.

        The first attach of a handle fails at once; later ones (after a drop)
        retry until ``reconnect_timeout_s`` has passed.  After a lost
        connection, ``on_reattach`` hears of the attach that worked.
        """
        retry = self._attached_once
        if retry:
            self._empty_attaches += 1
            if self._empty_attaches > _MAX_EMPTY_ATTACHES:
                raise ProtocolError(
                    f"the server keeps closing the stream of {self.transaction_id} "
                    f"before line {self.last_line + 1}")
            if self._empty_attaches > 1:  # the last attach brought nothing: back off
                await asyncio.sleep(min(_FIRST_DELAY_S * 2 ** self._empty_attaches, _MAX_DELAY_S))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._client.reconnect_timeout_s
        delay = _FIRST_DELAY_S
        while True:
            try:
                # A server that accepts but never answers must not hold a retry
                # for the whole connect and reply timeouts past the deadline.
                async with asyncio.timeout_at(deadline if retry else None):
                    _, self._reader, self._writer = await self._client._open_monitor(
                        self.transaction_id, self.last_line + 1)
                break
            except (OSError, ReplyError) as exc:
                if not retry or not _worth_retrying(exc) or loop.time() + delay > deadline:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, _MAX_DELAY_S)
        self._attached_once = True
        if self._lost:  # (out of the try: what the hook raises is not a failed attach)
            self._lost = False
            self._tell(reattached=True)

    def _connection_lost(self) -> None:
        """The stream ended before its ended line: re-attaching starts.  Said once,
        however many attempts (or give-ups and later iterations) it takes."""
        if not self._lost:
            self._lost = True
            self._tell(reattached=False)

    def _tell(self, *, reattached: bool) -> None:
        hook = self._client.on_reattach
        if hook is not None:
            hook(Reattach(self.transaction_id, self.last_line + 1, reattached))


def _worth_retrying(exc: Exception) -> bool:
    """Connection trouble and a busy (shutting down) server pass; other replies do not."""
    if isinstance(exc, ReplyError):
        return exc.code == Reply.SERVER_BUSY
    return True
