"""Exceptions raised by jobmonitor.

::

    JobMonitorError                base of everything jobmonitor raises
    ├── ConfigError                bad settings or job modules; raised at start-up
    ├── JobFailed                  raised by a job handler to fail its job with a reason
    ├── RequestError               a request the server refuses; carries an R code
    │   ├── PacketError            the packet itself could not be read (wire layer)
    │   └── StoreUnavailable       the store cannot be used now (a full disk, a lock held)
    ├── ReplyError                 (client side) the server answered with an R error
    └── ProtocolError              (client side) the server sent something not in the protocol

A ``RequestError`` becomes exactly one error reply line; it never reaches the
wire as a traceback.
"""

from __future__ import annotations

from .wire.codes import Reply

__all__ = [
    "JobMonitorError",
    "ConfigError",
    "JobFailed",
    "RequestError",
    "PacketError",
    "StoreUnavailable",
    "ReplyError",
    "ProtocolError",
]


class JobMonitorError(Exception):
    """Base class of all jobmonitor exceptions."""


class ConfigError(JobMonitorError):
    """Invalid configuration, job module or job registration."""


class JobFailed(JobMonitorError):
    """Raised inside a job handler: the job fails with this reason.

    The reason is sent to monitors as an error line, then ``J0000022``.
    """

    def __init__(self, reason: str = "Job failed.", *, code: int = 5000) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class RequestError(JobMonitorError):
    """A request the server refuses, answered with ``code`` and ``detail``."""

    def __init__(self, code: Reply, detail: str = "") -> None:
        super().__init__(f"{code.text}: {detail}" if detail else code.text)
        self.code = code
        self.detail = detail

    @property
    def reply_text(self) -> str:
        """The text of the reply line: the standard text, then the detail."""
        return f"{self.code.text}: {self.detail}" if self.detail else self.code.text


class PacketError(RequestError):
    """A command packet that cannot be read: malformed, too large, refused."""


class StoreUnavailable(RequestError):
    """The store cannot be used now, through no fault of the request: the disk is
    full, another program holds the database's lock, an I/O error.

    Answered ``R0005011: Server busy: store unavailable: <reason>``: like the other
    busy replies, the request may be sent again later, and nothing of it was kept.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(Reply.SERVER_BUSY, f"store unavailable: {reason}")
        self.reason = reason


class ReplyError(JobMonitorError):
    """Client side: the server answered a command with an error reply.

    ``code`` is the reply's number (5009 for ``R0005009``) and ``text`` its
    text, the lines of a several-line reply joined with newlines.
    """

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"R{code:07d}: {text}")
        self.code = code
        self.text = text

    @property
    def reply(self) -> Reply | None:
        """The code as a ``Reply`` member, or None for a code not in the table."""
        try:
            # A lookup by value (EnumMeta.__call__), which mypy checks against the
            # members' __new__(number, text).
            return Reply(self.code)  # type: ignore[call-arg]
        except ValueError:
            return None

    @property
    def detail(self) -> str:
        """The text after the standard text and ``": "`` (all of it for unknown codes)."""
        reply = self.reply
        if reply is not None and self.text.startswith(reply.text):
            return self.text[len(reply.text):].removeprefix(":").strip()
        return self.text


class ProtocolError(JobMonitorError):
    """Client side: the server's answer does not follow the protocol."""
