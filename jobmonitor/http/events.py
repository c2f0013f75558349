"""A job's lines as server-sent events: ``GET /api/v1/jobs/{T}/events``.

Each wire line is one event::

    id: 7
    event: line
    data: J0000110: Progress: 2/4 (50%)

``id`` is the line's number, so an ``EventSource`` that reconnects sends
``Last-Event-ID: 7`` and is served from line 8: every line once, however the
connection broke.  After the ``J0000001 ... ended`` line comes one ``end``
event (no id) with the outcome, and the response ends; a reconnect to a job
that has ended with nothing new to send is answered ``204``, which stops an
``EventSource`` for good.

The lines come the way a TCP monitor gets them (``server.connection``): from
the store while they are not in memory, then by watching the job's live
stream, which hands over only stored lines when the store is durable.  A
comment line every ``PING_INTERVAL_S`` keeps proxies from closing a quiet stream.
"""

from __future__ import annotations

import asyncio
import json
import logging

from ..engine.engine import Engine
from ..engine.stream import JobStream
from ..wire.states import JobState
from .connection import HttpConnection

__all__ = ["JobEvents", "EVENT_HEADERS", "PING_INTERVAL_S", "RETRY_MS"]

log = logging.getLogger("jobmonitor.http")

#: Lines read from the store at a time while catching up.
PAGE_LINES = 2000
#: Longest a stream of a job held by another node waits for its next lines
#: before it looks again.
FOLLOW_WAIT_S = 1.0
#: Seconds between keep-alive comments on a quiet stream.
PING_INTERVAL_S = 15.0
#: How long an EventSource waits before it reconnects, in milliseconds.
RETRY_MS = 2000
EVENT_HEADERS = [("Content-Type", "text/event-stream; charset=utf-8"),
                 ("Cache-Control", "no-store"), ("X-Accel-Buffering", "no")]
_ENDED_PREFIX = b"J0000001"
_EVENT = b"id: %d\nevent: line\ndata: %s\n\n"
OUTCOME_OF_STATE = {
    JobState.COMPLETED: ("success", "J0000020"),
    JobState.COMPLETED_WITH_ERRORS: ("partial", "J0000021"),
    JobState.FAILED: ("failed", "J0000022"),
    JobState.CANCELLED: ("cancelled", "J0000023"),
}


class JobEvents:
    """Streams one job's lines to one HTTP connection (a ``Streamer`` for the
    connection, a ``Watcher`` for the job's stream)."""

    headers = EVENT_HEADERS

    def __init__(self, engine: Engine, transaction_id: str, from_line: int) -> None:
        self._engine = engine
        self._transaction_id = transaction_id
        self._from_line = from_line
        self._sink: HttpConnection | None = None
        self._stream: JobStream | None = None
        self._task: asyncio.Task[None] | None = None
        self._ping: asyncio.TimerHandle | None = None
        #: The number of the next line written.
        self._next_line = from_line
        self._saw_end = False
        #: Where this watcher is in the stream it watches (kept by the stream).
        self.stream_cursor = 0

    # -- the connection's side ----------------------------------------------------------

    def start(self, sink: HttpConnection) -> None:
        self._sink = sink
        self._engine.jobs.monitor_attached(self._transaction_id)
        sink.send(b"retry: %d\n\n" % RETRY_MS)
        loop = asyncio.get_running_loop()
        self._ping = loop.call_later(PING_INTERVAL_S, self._keep_alive)
        self._task = loop.create_task(self._follow_safely(self._from_line))

    def resumed(self) -> None:
        if self._stream is not None:
            self._stream.catch_up(self)

    def stop(self) -> None:
        if self._sink is None:
            return
        self._sink = None
        if self._stream is not None:
            self._stream.unwatch(self)
            self._stream = None
        task = self._task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
        if self._ping is not None:
            self._ping.cancel()
        self._engine.jobs.monitor_detached(self._transaction_id)

    def _keep_alive(self) -> None:
        sink = self._sink
        if sink is not None:
            if sink.writable:
                sink.send(b": ping\n\n")
            self._ping = asyncio.get_running_loop().call_later(PING_INTERVAL_S, self._keep_alive)

    # -- the stream's side (Watcher) ----------------------------------------------------

    @property
    def writable(self) -> bool:
        return self._sink is not None and self._sink.writable

    def write(self, data: bytes) -> None:
        """Send wire lines (each ending in CRLF) as one event each."""
        sink = self._sink
        if sink is None:
            return
        lines = data.split(b"\r\n")
        lines.pop()  # (what follows the last CRLF: nothing)
        first = self._next_line
        self._next_line = first + len(lines)
        self._saw_end = lines[-1].startswith(_ENDED_PREFIX)
        numbered = zip(range(first, self._next_line), lines, strict=True)
        sink.send(b"".join([_EVENT % pair for pair in numbered]))

    def stream_ended(self) -> None:
        self._stream = None
        self._task = asyncio.get_running_loop().create_task(self._finish())

    def fell_behind(self, next_line: int) -> None:
        self._stream = None
        self._task = asyncio.get_running_loop().create_task(self._follow_safely(next_line))

    # -- following ----------------------------------------------------------------------

    async def _follow_safely(self, line: int) -> None:
        try:
            await self._follow(line)
        except asyncio.CancelledError:
            raise
        except Exception:
            # As on the TCP port: the stream ends after whole lines and the client
            # comes back from the next one.
            log.exception("following %s over HTTP failed; closing", self._transaction_id)
            if self._sink is not None:
                self._sink.close()

    async def _follow(self, line: int) -> None:
        """Send lines from ``line`` on: from the store while they are not in
        memory, then by watching the live stream."""
        jobs = self._engine.jobs
        look = True  # (a cluster's job held elsewhere: see JobDirectory.more_stored)
        while self._sink is not None:
            job = jobs.live(self._transaction_id)
            if job is not None and job.stream.in_memory(line):
                self._next_line = line
                self._stream = job.stream
                job.stream.watch(self, line)
                return
            page = await jobs.read_lines(self._transaction_id, line, PAGE_LINES)
            if not page:
                if job is None:
                    # (a cluster's job held elsewhere: its next lines, once stored)
                    if await jobs.more_stored(self._transaction_id, line, FOLLOW_WAIT_S,
                                              look_first=look):
                        look = False
                        continue
                    await self._finish()  # a finished job, replayed to its end
                    return
                line = job.stream.base + 1  # nothing stored before the memory window
                continue
            look = page[-1].startswith(_ENDED_PREFIX)  # (the end: the next look says so)
            self._next_line = line
            self.write(b"".join(page))
            line += len(page)
            if self._sink is not None:
                await self._sink.drained()

    async def _finish(self) -> None:
        """Every line is sent: say how the job ended (if it has), end the response."""
        sink = self._sink
        if sink is None:
            return
        if self._saw_end:
            record = await self._engine.jobs.record(self._transaction_id)
            outcome, code = OUTCOME_OF_STATE.get(record.status, ("", ""))
            data = json.dumps({"Outcome": outcome, "Code": code, "Status": record.status.value,
                               "Lines": record.line_count})
            sink.send(b"event: end\ndata: %s\n\n" % data.encode())
        self.stop()
        sink.end()
