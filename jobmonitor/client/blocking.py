"""One request and its reply on a plain blocking socket, for a process that asks once.

The ``jobmonitor`` command's one-shot commands (status, cancel, queue, ...)
ask with ``request``: a process that asks one question and exits need not
import asyncio, about a third of such a command's start-up.  The packet, the
reading of the reply (``ReplyReader``) and the errors are ``Client.request``'s.
Following a job's stream stays with the asyncio client.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from ..errors import ProtocolError
from ..wire.packet_build import build_packet
from ..wire.variables import PASSWORD, USER
from .replies import READ_LIMIT, ReplyReader

if TYPE_CHECKING:
    import ssl

    from .connection import Value

__all__ = ["request"]


def request(host: str, port: int, command: str, variables: Mapping[str, Value], *,
            user: str | None = None, password: str | None = None,
            tls: ssl.SSLContext | None = None, connect_timeout_s: float = 10.0,
            reply_timeout_s: float | None = 30.0) -> list[str]:
    """Send one command; return the text of each line of its reply.

    ``user`` and ``password`` go with the packet as ``_sys_User`` and
    ``_sys_Password``; ``tls`` connects over TLS.  ``connect_timeout_s``
    bounds connecting and sending, ``reply_timeout_s`` (None: no bound) the
    whole reply.

    Raises:
        ReplyError: an error reply.
        ProtocolError: an answer outside the protocol.
        OSError: the server cannot be reached, or the reply does not come in
        time (``TimeoutError``) or whole (``ConnectionError``).
        ValueError, TypeError: a value no packet can carry (``build_packet``).
    """
    if user is not None:
        variables = {**variables, USER: user, PASSWORD: password or ""}
    packet = build_packet(command, dict(variables))
    with socket.create_connection((host, port), timeout=connect_timeout_s) as raw:
        sock = raw if tls is None else tls.wrap_socket(raw, server_hostname=host)
        with sock:
            sock.sendall(packet)
            if tls is None:  # (over TLS the server needs no end of input)
                sock.shutdown(socket.SHUT_WR)
            return _read_reply(sock, reply_timeout_s)


def _read_reply(sock: socket.socket, timeout_s: float | None) -> list[str]:
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    reader = ReplyReader()
    with sock.makefile("rb") as stream:
        while True:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("no complete reply in time")
                sock.settimeout(left)
            else:
                sock.settimeout(None)
            raw = stream.readline(READ_LIMIT + 1)
            if len(raw) > READ_LIMIT:
                raise ProtocolError("reply line too long")
            if reader.feed(raw):
                return reader.texts()
