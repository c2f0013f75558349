"""Where a client command connects, and as whom: ``Endpoint``, from the options
and the environment (``--host``/``JOBMONITOR_HOST``, ``--port``/``JOBMONITOR_PORT``,
``--user``/``JOBMONITOR_USER`` with ``JOBMONITOR_PASSWORD`` or a prompt, ``--tls``
and ``--cafile``)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING

from ..wire import DEFAULT_PORT

if TYPE_CHECKING:
    import ssl

    from ..client import Client

__all__ = ["Endpoint", "UsageError", "endpoint_from", "port_number"]


class UsageError(Exception):
    """A bad option value found after parsing (e.g. in the environment)."""


def port_number(text: str) -> int:
    """``--port`` and ``JOBMONITOR_PORT``: 1 to 65535, in ASCII digits.

    Raises:
        argparse.ArgumentTypeError: anything else.
    """
    try:
        port = int(text) if text.isascii() else -1  # (int() reads any script's digits)
    except ValueError:
        port = -1
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"expected a port number 1..65535, got {text!r}")
    return port


class Endpoint:
    """The server a command asks, and as whom: from the options and the environment."""

    def __init__(self, host: str, port: int, user: str | None, password: str | None,
                 tls: ssl.SSLContext | None) -> None:
        self.host, self.port = host, port
        self._user, self._password, self._tls = user, password, tls

    def request(self, command: str, variables: Mapping[str, str] | None = None, *,
                reply_timeout_s: float | None = 30.0) -> list[str]:
        """Ask once, on a plain socket; the reply's lines (``blocking.request``).

        Raises:
            ReplyError, ProtocolError, OSError, ValueError: see ``blocking.request``.
        """
        from ..client.blocking import request

        return request(self.host, self.port, command, variables or {}, user=self._user,
                       password=self._password, tls=self._tls,
                       reply_timeout_s=reply_timeout_s)

    def client(self) -> Client:
        """The asyncio client, for the commands that follow a stream.  One connection
        per packet, as the protocol's original format has it: a CLI command sends
        one or two packets, and a kept connection would gain nothing."""
        from ..client.api import Client

        return Client(self.host, self.port, user=self._user, password=self._password,
                      tls=self._tls, keep_open=False)



def endpoint_from(args: argparse.Namespace) -> Endpoint:
    """The server to ask, from the options and the environment.

    Raises:
        UsageError: a bad value, no password for ``--user``, or a ``--cafile``
        file that cannot be read.
    """
    host, port = _address(args)
    user = args.user or os.environ.get("JOBMONITOR_USER") or None
    password = None
    if user is not None:
        password = os.environ.get("JOBMONITOR_PASSWORD")
        if password is None:
            if not sys.stdin.isatty():
                raise UsageError(f"no password for {user}: set JOBMONITOR_PASSWORD")
            import getpass

            try:
                password = getpass.getpass(f"Password for {user}: ")
            except EOFError:  # Ctrl-D at the prompt: end its line, then say why we stop
                print(file=sys.stderr)
                raise UsageError(f"no password for {user}") from None
    tls: ssl.SSLContext | None = None
    if args.tls or args.cafile:
        import ssl

        try:
            tls = ssl.create_default_context(cafile=args.cafile)
        except ssl.SSLError:
            raise UsageError(f"--cafile {args.cafile}: not a PEM certificate file") from None
        except OSError as exc:
            raise UsageError(f"--cafile {args.cafile}: {exc.strerror or exc}") from None
    return Endpoint(host, port, user, password, tls)


def _address(args: argparse.Namespace) -> tuple[str, int]:
    """The server address from the options, else the environment, else the default.

    Raises:
        UsageError: JOBMONITOR_PORT is not a port number.
    """
    host = args.host or os.environ.get("JOBMONITOR_HOST") or "127.0.0.1"
    if args.port is not None:
        return host, args.port
    raw = os.environ.get("JOBMONITOR_PORT", "")
    if not raw:
        return host, DEFAULT_PORT
    try:
        return host, port_number(raw)
    except argparse.ArgumentTypeError as exc:
        raise UsageError(f"JOBMONITOR_PORT: {exc}") from None
