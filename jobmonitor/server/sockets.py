"""What the kernel can do for our TCP sockets, where it can (Linux).

* Corking (``TCP_CORK``): the kernel holds what we write until we uncork or
  send the FIN, so a short answer and the FIN leave in one segment.  Linux
  copies a listening socket's cork to every socket it accepts, so corking the
  listener corks every connection without a system call each.
* The send queue (``SIOCOUTQ``): the bytes the peer has not acknowledged yet,
  which a transport's own buffer size does not count.

Elsewhere corking does nothing and only the transport's buffer is counted.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import socket
import sys
from collections.abc import Sequence

__all__ = ["TCP_CORK", "cork_listeners", "set_cork", "unsent_bytes"]

#: Linux's TCP_CORK (None elsewhere: there the last bytes and the FIN go apart).
TCP_CORK = getattr(socket, "TCP_CORK", None)
if sys.platform == "linux":
    import fcntl
    import termios

    #: Linux's ioctl for the bytes in a TCP socket's send queue that the peer has
    #: not acknowledged (SIOCOUTQ; None elsewhere: there only our buffer is seen).
    SIOCOUTQ: int | None = termios.TIOCOUTQ
else:
    SIOCOUTQ = None


def cork_listeners(sockets: Sequence[socket.socket]) -> bool:
    """Cork the listening sockets, so that every accepted socket starts corked;
    return whether all of them are.

    All or none: a connection must know whether it has to uncork.  Plain TCP
    only (the caller leaves TLS listeners alone: a handshake must not wait),
    and only where TCP_CORK exists.
    """
    if TCP_CORK is None or not sockets:
        return False
    try:
        for sock in sockets:
            if sock.family not in (socket.AF_INET, socket.AF_INET6):
                raise OSError("not a TCP socket")
            sock.setsockopt(socket.IPPROTO_TCP, TCP_CORK, 1)
    except OSError:
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, TCP_CORK, 0)
        return False
    return True


def set_cork(transport: asyncio.BaseTransport | None, on: bool) -> bool:
    """Cork or uncork a connection's TCP socket; return whether it is corked now
    (never where it cannot be: not TCP, no TCP_CORK, a reset connection)."""
    sock = transport.get_extra_info("socket") if transport is not None else None
    if TCP_CORK is None or sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    try:
        sock.setsockopt(socket.IPPROTO_TCP, TCP_CORK, int(on))
    except OSError:  # the peer reset the connection: nothing to hold or send
        return False
    return on


def unsent_bytes(transport: asyncio.WriteTransport) -> int:
    """Bytes the peer has yet to take: in the transport's buffer, and on Linux in
    the kernel's.  The transport's alone is not enough: the kernel takes more
    from it only once half of its own buffer (up to megabytes) is free."""
    left = transport.get_write_buffer_size()
    sock = transport.get_extra_info("socket")
    if SIOCOUTQ is None or sock is None:
        return left
    queued = array.array("i", [0])
    try:
        fcntl.ioctl(sock.fileno(), SIOCOUTQ, queued)
    except OSError:
        return left
    return left + queued[0]
