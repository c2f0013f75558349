"""One HTTP/1.1 client connection: h11 reads the requests, we answer them in turn.

A connection goes READING -> BUSY -> (STREAMING) -> READING ... -> CLOSED:

* READING feeds bytes to h11 until a whole request (head and body) is in,
  under two limits: ``idle_timeout_s`` to start one (a kept-alive connection
  that stays silent that long is closed without a word), ``packet_timeout_s``
  to finish it (408).  The head is at most ``MAX_HEAD_BYTES`` (431), with at
  most ``MAX_HEADERS`` fields (431); the body at most ``max_packet_bytes`` (413).
* BUSY runs the handler (started eagerly: most answer without waiting).
* STREAMING: the handler answered with a ``Streamer`` (server-sent events),
  which writes the body as the job goes on and ends it.

Bytes that come while we answer (a pipelined request) wait in h11, at most
``MAX_HEAD_BYTES`` of them; a client that half-closes while it waits for a
stream is gone, and the stream stops.  Transport flow control is the
backpressure: a stream asks ``writable`` and is told ``resumed``; a client that
takes nothing for ``monitor_stall_s`` while output waits is dropped (an
EventSource comes back with ``Last-Event-ID``).
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable
from typing import Protocol

import h11

from ..config import Config
from ..errors import RequestError
from ..server.deadlines import Deadlines
from ..server.eager import start_eagerly
from ..wire.codes import Reply
from .messages import COMMON_HEADERS, HttpResponse, Request, http_date, problem, reason, too_large

__all__ = ["HttpConnection", "Streamer", "Site", "MAX_HEAD_BYTES", "MAX_HEADERS"]

log = logging.getLogger("jobmonitor.http")

#: Largest request head (request line and headers), in bytes.
MAX_HEAD_BYTES = 16 * 1024
#: Most header fields in one request.
MAX_HEADERS = 64


class _State(enum.Enum):
    READING = "reading"
    BUSY = "busy"
    STREAMING = "streaming"
    CLOSED = "closed"


class Streamer(Protocol):
    """A response whose body is written as it comes (server-sent events)."""

    headers: list[tuple[str, str]]

    def start(self, sink: HttpConnection) -> None:
        """The head is sent: write the body through ``sink``, end it with ``sink.end()``."""

    def resumed(self) -> None:
        """The client takes bytes again."""

    def stop(self) -> None:
        """The connection is closing: stop writing, let go of what is watched."""


class Site(Protocol):
    """What a connection uses of its ``HttpServer``."""

    closing: bool

    @property
    def config(self) -> Config: ...
    @property
    def deadlines(self) -> Deadlines: ...

    async def handle(self, request: Request) -> HttpResponse | Streamer: ...
    def connection_opened(self, connection: HttpConnection) -> bool: ...
    def connection_closed(self, connection: HttpConnection) -> None: ...


class HttpConnection(asyncio.Protocol):
    """The protocol object of one HTTP client connection."""

    def __init__(self, site: Site) -> None:
        self._site = site
        self._config = site.config
        self._loop = asyncio.get_running_loop()
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        self._state = _State.READING
        self._transport: asyncio.Transport | None = None
        self._deadlines = site.deadlines
        #: The pending deadline (idle or request) and its callback, to discard it.
        self._deadline: tuple[int, Callable[[], None]] | None = None
        self._stall_timer: asyncio.TimerHandle | None = None
        self._request: h11.Request | None = None
        self._receiving = False
        self._body: list[bytes] = []
        self._body_bytes = 0
        self._task: asyncio.Task[None] | None = None
        self._streamer: Streamer | None = None
        self._paused = False
        self._drained: asyncio.Future[None] | None = None
        self._peer = ""

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tcp: asyncio.Transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        self._transport = tcp
        tcp.set_write_buffer_limits(high=self._config.max_pending_output_bytes)
        peer = tcp.get_extra_info("peername")
        self._peer = str(peer[0]) if isinstance(peer, tuple) else str(peer)
        if not self._site.connection_opened(self):
            self._refuse(RequestError(Reply.SERVER_BUSY, "too many connections"))
            return
        self._wait_for_request()

    def data_received(self, data: bytes) -> None:
        if self._state is _State.CLOSED:
            return
        self._h11.receive_data(data)
        if self._state is _State.READING:
            self._read_events()
            if self._state is _State.READING and not self._receiving and (
                    self._request is not None or self._h11.trailing_data[0]):
                # Part of a request is in: all of it is due within packet_timeout_s
                # (counted from now, as a request that came whole needs no timer).
                self._receiving = True
                self._set_timer(self._config.packet_timeout_s, self._late)
        elif len(self._h11.trailing_data[0]) > MAX_HEAD_BYTES:
            self.abort()  # pipelining more than one request's head ahead: not a browser

    def eof_received(self) -> bool:
        if self._state is _State.STREAMING:
            self.close()  # the client is gone: nobody reads the rest of the stream
            return False
        self._h11.receive_data(b"")
        if self._state is _State.READING:
            self._read_events()
        return True  # (answer a request already in, then close)

    def connection_lost(self, exc: Exception | None) -> None:
        self._state = _State.CLOSED
        self._cancel_timers()
        if self._streamer is not None:
            self._streamer.stop()
            self._streamer = None
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        self._site.connection_closed(self)
        self._transport = None

    def pause_writing(self) -> None:
        self._paused = True
        if self._state is _State.STREAMING:
            self._stall_timer = self._loop.call_later(self._config.monitor_stall_s, self._stalled)

    def resume_writing(self) -> None:
        self._paused = False
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        if self._streamer is not None:
            self._streamer.resumed()

    # -- reading a request --------------------------------------------------------------

    def _wait_for_request(self) -> None:
        self._state = _State.READING
        self._request = None
        self._receiving = False  # (no byte of the next request yet)
        self._set_timer(self._config.idle_timeout_s, self._idle)

    def _read_events(self) -> None:
        while self._state is _State.READING:
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError as exc:
                status = exc.error_status_hint
                code = Reply.PACKET_TOO_LARGE if status == 431 else Reply.MALFORMED_PACKET
                self._refuse(RequestError(code, f"bad HTTP request: {exc}"), status)
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Request):
                self._begin(event)
            elif isinstance(event, h11.Data):
                self._body_bytes += len(event.data)
                if self._body_bytes > self._config.max_packet_bytes:
                    self._refuse(too_large(self._config.max_packet_bytes), 413)
                    return
                self._body.append(event.data)
            elif isinstance(event, h11.EndOfMessage):
                self._dispatch()
            elif isinstance(event, h11.ConnectionClosed):
                self.close()

    def _begin(self, event: h11.Request) -> None:
        self._request, self._body, self._body_bytes = event, [], 0
        if len(event.headers) > MAX_HEADERS:
            self._refuse(RequestError(Reply.PACKET_TOO_LARGE,
                                      f"more than {MAX_HEADERS} header fields"), 431)
            return
        length = next((v.decode("latin-1").strip() for k, v in event.headers
                       if k == b"content-length"), None)
        if length is not None and length.isdigit() and int(length) > self._config.max_packet_bytes:
            self._refuse(too_large(self._config.max_packet_bytes), 413)
            return
        if self._h11.they_are_waiting_for_100_continue:
            self._write(h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue"))

    def _dispatch(self) -> None:
        self._cancel_timers()
        head = self._request
        assert head is not None  # (EndOfMessage follows a Request)
        headers: dict[str, str] = {}
        for name, value in head.headers:
            key = name.decode("latin-1")
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        request = Request(head.method.decode("ascii", "replace"),
                          head.target.decode("latin-1"), headers, b"".join(self._body),
                          self._peer)
        self._body = []
        self._state = _State.BUSY
        task = start_eagerly(self._loop, self._answer(request),
                             eager=not self._config.clustered)
        if task is not None:  # kept while it runs: the loop holds tasks weakly
            self._task = task
            task.add_done_callback(self._forget_task)

    def _forget_task(self, task: asyncio.Task[None]) -> None:
        if self._task is task:
            self._task = None

    async def _answer(self, request: Request) -> None:
        try:
            response = await self._site.handle(request)
        except RequestError as exc:
            response = problem(exc)
        except Exception:
            log.exception("%s %s from %s failed", request.method, request.target[:200],
                          self._peer)
            response = problem(RequestError(Reply.INTERNAL_ERROR))
        if self._state is not _State.BUSY:
            return  # the client left meanwhile
        if isinstance(response, HttpResponse):
            self.respond(response, head_only=request.method == "HEAD")
        elif request.method == "HEAD":  # the head of a stream, and no stream
            response.stop()
            self.respond(HttpResponse(200, response.headers), head_only=True)
        else:
            self._stream(response)

    # -- writing --------------------------------------------------------------------------

    def respond(self, response: HttpResponse, *, head_only: bool = False) -> None:
        """Send a whole response, then read the next request or close."""
        headers = [*response.headers, ("Content-Length", str(len(response.body)))]
        if self._transport is not None and self._state is not _State.CLOSED:
            send = self._h11.send
            # One write: a small answer goes out in one send, not three.
            data = send(self._head(response.status, headers)) or b""
            if response.body and not head_only:
                data += send(h11.Data(data=response.body)) or b""
            self._transport.write(data + (send(h11.EndOfMessage()) or b""))
        self._next()

    def _stream(self, streamer: Streamer) -> None:
        self._write(self._head(200, streamer.headers))
        self._state = _State.STREAMING
        self._streamer = streamer
        streamer.start(self)

    def _head(self, status: int, headers: list[tuple[str, str]]) -> h11.Response:
        if self._site.closing:
            headers = [*headers, ("Connection", "close")]
        return h11.Response(status_code=status, reason=reason(status), headers=[
            ("Date", http_date()), *COMMON_HEADERS, *headers])

    def _write(self, event: h11.Event) -> None:
        if self._transport is not None and self._state is not _State.CLOSED:
            self._transport.write(self._h11.send(event) or b"")

    @property
    def writable(self) -> bool:
        """True while a stream may write (the client keeps up)."""
        return not self._paused and self._state is _State.STREAMING

    def send(self, data: bytes) -> None:
        """Write part of a streamed body."""
        if self._state is _State.STREAMING:
            self._write(h11.Data(data=data))

    async def drained(self) -> None:
        """Return once the client has taken enough of what is queued (or is gone)."""
        if self._paused and self._state is not _State.CLOSED:
            self._drained = self._loop.create_future()
            await self._drained
            self._drained = None

    def end(self) -> None:
        """End a streamed body; read the next request or close."""
        if self._state is not _State.STREAMING:
            return
        self._streamer = None
        self._cancel_timers()
        self._write(h11.EndOfMessage())
        self._next()

    def _next(self) -> None:
        """After a response: go on with the next request, or close."""
        if self._h11.our_state is not h11.DONE or self._site.closing:
            self.close()
            return
        try:
            self._h11.start_next_cycle()
        except h11.LocalProtocolError:  # the client is not done with its request
            self.close()
            return
        self._wait_for_request()
        if self._h11.trailing_data[0]:  # a pipelined request is on its way, or in
            self._receiving = True
            self._set_timer(self._config.packet_timeout_s, self._late)
            # On the next turn, not from here: a client that pipelines many
            # requests would otherwise have them answered ever deeper in this stack.
            self._loop.call_soon(self._read_events)

    # -- ending ---------------------------------------------------------------------------

    def _refuse(self, error: RequestError, status: int | None = None) -> None:
        """Answer a request we cannot read with a problem, and close."""
        self._state = _State.BUSY
        response = problem(error, status)
        response.headers.append(("Connection", "close"))
        headers = [*response.headers, ("Content-Length", str(len(response.body)))]
        try:
            self._write(self._head(response.status, headers))
            self._write(h11.Data(data=response.body))
            self._write(h11.EndOfMessage())
        except h11.LocalProtocolError:
            # No request was read (too many connections): h11 has nothing to answer,
            # so the status line goes out as it is.  (Mid-response, nothing is.)
            if self._h11.our_state is h11.IDLE and self._transport is not None:
                lines = [b"HTTP/1.1 %d %s" % (response.status, reason(response.status))]
                lines += [f"{name}: {value}".encode("latin-1") for name, value in headers]
                self._transport.write(b"\r\n".join(lines) + b"\r\n\r\n" + response.body)
        self.close()

    def _idle(self) -> None:
        """Nothing of a request came within idle_timeout_s: close without a word
        (a browser's idle keep-alive connection ends this way)."""
        self._deadline = None
        if self._state is _State.READING:
            self.close()

    def _late(self) -> None:
        self._deadline = None
        if self._state is _State.READING:
            detail = f"no complete request within {self._config.packet_timeout_s:g} s"
            self._refuse(RequestError(Reply.PACKET_TIMEOUT, detail), 408)

    def _stalled(self) -> None:
        """A stream's client took nothing for monitor_stall_s: drop it (an
        EventSource reconnects and resumes after its last whole event)."""
        self._stall_timer = None
        if self._paused and self._state is _State.STREAMING:
            log.info("HTTP stream to %s stalled; closed", self._peer)
            self.abort()

    def shutdown(self) -> None:
        """The server is closing: close an idle connection now; a busy one closes
        after its answer, a stream when its job ends (or at ``end_streams``)."""
        if self._state is _State.READING and not self._receiving:
            self.close()

    def end_stream(self) -> None:
        """The server has stopped: end a stream now (the client comes back later)."""
        if self._streamer is not None:
            self._streamer.stop()
            self._streamer = None
        self.end()

    def close(self) -> None:
        if self._state is _State.CLOSED or self._transport is None:
            return
        self._state = _State.CLOSED
        self._cancel_timers()
        if self._streamer is not None:
            self._streamer.stop()
            self._streamer = None
        self._transport.close()

    def abort(self) -> None:
        transport = self._transport
        self.close()
        if transport is not None:
            transport.abort()

    def _set_timer(self, delay_s: float, callback: Callable[[], None]) -> None:
        # A coarse deadline shared with other connections (the TCP port's): a set
        # add and discard per request, where a loop timer each would cost more.
        self._cancel_deadline()
        self._deadline = (self._deadlines.add(self._loop.time() + delay_s, callback), callback)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadlines.discard(*self._deadline)
            self._deadline = None

    def _cancel_timers(self) -> None:
        self._cancel_deadline()
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
