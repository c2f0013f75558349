"""The client's socket work: open a connection, send one packet, read the reply.

The protocol is one packet per connection, so every request opens its own
connection.  Packets are built with ``wire.packet_build`` (lxml, so any value
is escaped correctly) and lines are read with ``wire.lines.parse_line``, the
same code the server uses; ``replies.ReplyReader`` decides what a reply is.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Mapping

from ..errors import ProtocolError
from ..wire.packet_build import build_packet
from .replies import READ_LIMIT, ReplyReader

#: How long closing waits for a peer to take what is still unsent.
CLOSE_TIMEOUT_S = 5.0
#: What a variable's value may be: a number is sent as ``str()`` writes it, a
#: bool as ``true`` or ``false``.
Value = str | int | float | bool

__all__ = ["open_request", "read_reply", "close_quietly", "READ_LIMIT", "Value"]


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
    async with asyncio.timeout(timeout_s):
        reader, writer = await asyncio.open_connection(host, port, limit=READ_LIMIT, ssl=tls)
    sock = writer.get_extra_info("socket")
    if sock is not None:
        # A stream can be silent for hours; keepalive notices a peer that vanished.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    try:
        async with asyncio.timeout(timeout_s):  # a peer that takes nothing: no hang
            writer.write(packet)
            if writer.can_write_eof():  # not over TLS, where the server needs no EOF anyway
                writer.write_eof()
            await writer.drain()
    except BaseException:
        await close_quietly(writer)
        raise
    return reader, writer


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
