"""The client's socket work: open a connection, send a packet, read the reply.

The protocol's format takes one packet per connection; a packet with
``_sys_KeepOpen`` true keeps the connection for the next one (``kept`` reuses
connections).  Packets are built with ``wire.packet_build`` (lxml, so any value is escaped
correctly) and lines are read with ``wire.lines.parse_line``, the same code
the server uses; ``replies.ReplyReader`` decides what a reply is.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Mapping

from ..errors import ProtocolError
from ..wire.packet_build import build_packet
from ..wire.variables import JOB_TOKEN, KEEP_OPEN
from .replies import READ_LIMIT, ReplyReader

#: How long closing waits for a peer to take what is still unsent.
CLOSE_TIMEOUT_S = 5.0
#: What a variable's value may be: a number is sent as ``str()`` writes it, a
#: bool as ``true`` or ``false``.
Value = str | int | float | bool

__all__ = ["open_request", "open_connection", "send_packet", "read_reply", "close_quietly",
           "set_idle", "safe_to_resend", "READ_LIMIT", "KEEP_OPEN", "Value"]

#: Commands that change nothing: sent again on a new connection when a kept one
#: broke before their reply.  (A submit is safe with a job token: see safe_to_resend.)
SAFE_TO_RESEND = frozenset({
    "GetJobStatus", "GetJobInformation", "ListJobs", "ListProjects", "RetrieveJob",
    "GetTaskLog", "GetJobQueueLen", "GetBuildString", "MonitorJob"})


def safe_to_resend(command: str, variables: Mapping[str, Value]) -> bool:
    """True when sending the packet twice does what sending it once does: a
    command that changes nothing, or a submit with a job token (the server
    answers a second one with the first one's job)."""
    if command in SAFE_TO_RESEND:
        return True
    return command == "SubmitJob" and bool(str(variables.get(JOB_TOKEN, "")).strip())


async def open_request(
    host: str,
    port: int,
    command: str,
    variables: Mapping[str, Value],
    doc_variables: Mapping[str, Value] | None = None,
    *,
    timeout_s: float,
    tls: ssl.SSLContext | None = None,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect (over TLS with ``tls``), send the packet, and half-close our side.

    Raises:
        OSError: the connection cannot be made (``ConnectionRefusedError``,
        ``TimeoutError`` after ``timeout_s``, ``ssl.SSLError``, ...).
    """
    packet = build_packet(command, dict(variables),
                          None if doc_variables is None else dict(doc_variables))
    reader, writer = await open_connection(host, port, timeout_s=timeout_s, tls=tls)
    try:
        await send_packet(writer, packet, timeout_s=timeout_s, half_close=True)
    except BaseException:
        await close_quietly(writer)
        raise
    return reader, writer


async def open_connection(host: str, port: int, *, timeout_s: float,
                          tls: ssl.SSLContext | None = None
                          ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect (over TLS with ``tls``) within ``timeout_s``.

    Raises:
        OSError: as ``open_request``.
    """
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=READ_LIMIT, loop=loop)
    protocol = _ClientProtocol(reader, loop=loop)
    async with asyncio.timeout(timeout_s):
        transport, _ = await loop.create_connection(lambda: protocol, host, port, ssl=tls)
    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    sock = writer.get_extra_info("socket")
    if sock is not None:
        # A stream can be silent for hours; keepalive notices a peer that vanished.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    return reader, writer


async def send_packet(writer: asyncio.StreamWriter, packet: bytes, *, timeout_s: float,
                      half_close: bool) -> None:
    """Send a built packet within ``timeout_s``; with ``half_close``, shut our side
    after it (the connection carries no other packet).

    Raises:
        OSError: the connection broke, or ``TimeoutError``: the peer took nothing.
    """
    async with asyncio.timeout(timeout_s):  # a peer that takes nothing: no hang
        writer.write(packet)
        if half_close and writer.can_write_eof():  # (over TLS the server needs no EOF)
            writer.write_eof()
        await writer.drain()


async def read_reply(reader: asyncio.StreamReader, timeout_s: float | None) -> list[str]:
    """Read one reply (its ``R`` lines up to the one with ``:``); return the texts.

    Raises:
        ReplyError: an error reply.
        ProtocolError: a line that is not an ``R`` line of the same code.
        ConnectionError: the connection closed before the reply was complete.
        TimeoutError: no complete reply within ``timeout_s``.
    """
    lines = ReplyReader()
    async with asyncio.timeout(timeout_s):
        while not lines.feed(await _readline(reader)):
            pass
    return lines.texts()


async def _readline(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.readline()
    except ValueError:  # longer than READ_LIMIT
        raise ProtocolError("reply line too long") from None


class _ClientProtocol(asyncio.StreamReaderProtocol):
    """``asyncio.open_connection``'s protocol, but a connection that waits idle
    (``IdleConnections``) closes as soon as the server closes it: its socket is
    not left to the garbage collector, which may come after the event loop ends."""

    idle = False

    def eof_received(self) -> bool:
        return bool(super().eof_received()) and not self.idle


def set_idle(writer: asyncio.StreamWriter, idle: bool) -> None:
    """Say whether a connection waits idle (then the server's close closes it)."""
    protocol = writer.transport.get_protocol()
    if isinstance(protocol, _ClientProtocol):
        protocol.idle = idle


async def close_quietly(writer: asyncio.StreamWriter) -> None:
    """Close a connection, ignoring errors from a peer that already went away, and
    dropping what a peer that stopped reading has not taken (``wait_closed``
    waits for that without end)."""
    writer.close()
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await writer.wait_closed()
    except (OSError, TimeoutError):
        writer.transport.abort()
    except asyncio.CancelledError:
        writer.transport.abort()
        raise
