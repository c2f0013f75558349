"""A client's connections: kept from one call to the next, and replaced when closed.

``KeptConnections.exchange`` sends a packet and reads its reply on an idle
kept connection when there is one, else on a new one.  Once the answer is
complete (the reply; for a monitor, the stream's ended line) the connection
goes back to ``IdleConnections``, a few of them, the last used first.

A kept connection may have been closed by the server while it waited (its
idle timeout, a restart, an older server that closes after each answer):

* before a packet goes out on one, the socket itself is asked (``still_open``),
  so a close the event loop has not seen yet is found with nothing sent;
* if one breaks after the packet went out, the command goes again on a new
  connection only when that is harmless (``safe_to_resend``) or the server
  answered with its idle timeout (it read nothing of the packet); otherwise
  the error comes out;
* until the server has shown that it keeps connections (by answering a second
  packet on one), a command that must not go twice reuses a connection only
  after a harmless ``GetBuildString`` on it was answered: an older server
  closes right after its reply, and that close can come a moment after it.

With ``keep_open`` off, every exchange opens a new connection and shuts its
side after the packet, the protocol's original format.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Mapping
from typing import Protocol

from ..errors import ReplyError
from ..wire.codes import Reply
from .connection import (
    Value,
    close_quietly,
    open_connection,
    read_reply,
    safe_to_resend,
    send_packet,
    set_idle,
)

__all__ = ["KeptConnections", "IdleConnections", "Settings", "still_open",
           "MAX_IDLE_CONNECTIONS"]

#: Most idle kept connections a client holds (calls made at the same time open more).
MAX_IDLE_CONNECTIONS = 4
_Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]
class Settings(Protocol):
    """What the connections take from their ``api.Client``, which each call
    passes (settings may change; and the connections keep no reference back to
    their client, which would make a cycle only the garbage collector frees)."""

    host: str
    port: int
    tls: ssl.SSLContext | None
    connect_timeout_s: float
    reply_timeout_s: float
    keep_open: bool

    def _packet(self, command: str, variables: Mapping[str, Value],
                doc_variables: Mapping[str, Value] | None) -> bytes:
        """The packet of a command, with what the client adds to every packet."""


class KeptConnections:
    """The connections of one client (see the module's docstring)."""

    def __init__(self) -> None:
        self.idle = IdleConnections(MAX_IDLE_CONNECTIONS)
        #: A kept connection has carried a second packet: the server keeps them.
        self._server_keeps = False

    async def exchange(self, settings: Settings, command: str, variables: Mapping[str, Value],
                       doc_variables: Mapping[str, Value] | None,
                       reply_timeout_s: float | None) -> tuple[asyncio.StreamReader,
                                                               asyncio.StreamWriter, list[str]]:
        """Send a packet and read its reply.  Returns the connection (a monitor's
        stream follows on it) and the reply; after an error reply the connection
        is done with (``done_with``).

        Raises:
            ReplyError, OSError, ProtocolError: as ``api.Client``'s calls.
        """
        packet = settings._packet(command, variables, doc_variables)
        safe = safe_to_resend(command, variables)
        idle = self.idle.take() if settings.keep_open else None
        if idle is not None and not safe and not self._server_keeps:
            idle = await self._checked(settings, idle)
        if idle is not None:
            try:
                lines = await self._ask(settings, idle, packet, reply_timeout_s)
            except ReplyError as exc:
                if exc.code != Reply.IDLE_TIMEOUT:
                    self._server_keeps = True
                    raise
                # (the server timed the connection out before our packet came: it
                # read none of it, so the command goes again whatever it is)
            except OSError as exc:  # the kept connection broke after we sent
                if isinstance(exc, TimeoutError) or not safe:
                    raise
            else:
                self._server_keeps = True
                return (*idle, lines)
        connection = await open_connection(settings.host, settings.port,
                                           timeout_s=settings.connect_timeout_s,
                                           tls=settings.tls)
        return (*connection, await self._ask(settings, connection, packet, reply_timeout_s))

    async def _checked(self, settings: Settings, connection: _Connection) -> _Connection | None:
        """The idle connection if the server answers a harmless command on it, else
        None (see the module's docstring)."""
        try:
            await self._ask(settings, connection, settings._packet("GetBuildString", {}, None),
                            settings.reply_timeout_s)
        except ReplyError as exc:
            if exc.code == Reply.IDLE_TIMEOUT:
                return None
        except OSError as exc:
            if isinstance(exc, TimeoutError):
                raise
            return None
        self._server_keeps = True
        return connection

    async def _ask(self, settings: Settings, connection: _Connection, packet: bytes,
                   reply_timeout_s: float | None) -> list[str]:
        """Send the packet on the connection and read the reply.  An error reply
        leaves the connection done with; anything else raised closes it."""
        reader, writer = connection
        try:
            await send_packet(writer, packet, timeout_s=settings.connect_timeout_s,
                              half_close=not settings.keep_open)
            return await read_reply(reader, reply_timeout_s)
        except ReplyError as exc:
            if exc.code == Reply.IDLE_TIMEOUT:
                await close_quietly(writer)
            else:
                await self.done_with(settings, reader, writer)
            raise
        except BaseException:
            await close_quietly(writer)
            raise

    async def done_with(self, settings: Settings, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> None:
        """A connection whose answer is complete: kept for the next call, or closed."""
        if settings.keep_open:
            self.idle.put(reader, writer)
        else:
            await close_quietly(writer)

    def stream_ended(self, settings: Settings, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        """A transaction read its stream's ended line: its connection is done with."""
        if settings.keep_open:
            self.idle.put(reader, writer)
        else:
            writer.close()


def still_open(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """True when a kept connection can carry the next packet: open, and nothing
    arrived since its last answer (the server's close, or anything it sent,
    would be taken for the next reply).  The socket itself is asked, so a close
    the event loop has not seen yet counts too."""
    if writer.is_closing() or reader.at_eof() or reader.exception() is not None:
        return False
    sock = writer.get_extra_info("socket")
    try:
        probe = sock.dup()
    except (AttributeError, OSError, ValueError):  # no socket to ask
        return True  # (a close the loop has not seen yet is then found by sending)
    with probe:
        try:
            probe.setblocking(False)  # (it already is: the event loop's socket)
            return not probe.recv(1, socket.MSG_PEEK)  # b"": closed; bytes: not ours
        except BlockingIOError:
            return True  # nothing to read: open and quiet
        except OSError:  # reset
            return False


class IdleConnections:
    """A client's kept connections that wait for a command, the last used first
    (at most ``most``: beyond, the oldest is closed)."""

    def __init__(self, most: int) -> None:
        self.most = most
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    def __len__(self) -> int:
        return len(self._idle)

    def take(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """An idle connection that is still open, or None (closed ones are dropped)."""
        while self._idle:
            reader, writer = self._idle.pop()
            if still_open(reader, writer):
                set_idle(writer, False)
                return reader, writer
            writer.close()
        return None

    def put(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Keep a connection whose answer is complete for the next command (one
        the server has closed already is closed; one it closes later closes then)."""
        if writer.is_closing() or reader.at_eof():
            writer.close()
            return
        set_idle(writer, True)
        self._idle.append((reader, writer))
        if len(self._idle) > self.most:
            self._idle.pop(0)[1].close()

    async def aclose(self) -> None:
        """Close every idle connection."""
        idle, self._idle = self._idle, []
        for _, writer in idle:
            await close_quietly(writer)

    def abandon(self) -> None:
        """Drop every idle connection now, without waiting (the client is gone)."""
        idle, self._idle = self._idle, []
        for _, writer in idle:
            # RuntimeError: its event loop is closed, and the socket goes with it.
            with contextlib.suppress(RuntimeError):
                writer.transport.abort()


