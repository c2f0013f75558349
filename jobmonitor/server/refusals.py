"""The operator's log of refused logins and refused permissions.

Each ``R0005012`` (not authenticated) and ``R0005013`` (permission denied) is
one warning line on the ``jobmonitor.security`` logger, in a ``key=value``
form that fail2ban or a log shipper can match::

    event=login_failed peer=203.0.113.7 user=ann command=SubmitJob reason=wrong_password

The keys come in that order; a value with a space, a quote, a backslash or an
``=`` is quoted (``user="a b"``), an empty one is ``""``.  A peer's text is
cut to one printable line (``clip``), and the password is never written.  The
same fields go on the record as ``record.fields``, for a structured formatter
(``jobmonitor serve --log-format json``).

Guessing must not flood the log: per event and address (an IPv6 address with
its /64, as the throttle counts them) the first ``LINES_PER_WINDOW`` refusals in
``WINDOW_S`` are logged one by one; the rest are counted, and one summary line
says how many when the window closes (or the server stops)::

    event=login_failed_summary peer=203.0.113.7 count=38 window_s=60
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from ..wire.codes import Reply
from ..wire.lines import clip
from ..wire.packet import Packet
from .auth import throttled_address

__all__ = ["RefusalLog", "key_values", "LINES_PER_WINDOW", "WINDOW_S"]

log = logging.getLogger("jobmonitor.security")

#: Refusals of one kind from one address logged one by one in a window.
LINES_PER_WINDOW = 10
#: The window's length, in seconds, from the first refusal in it.
WINDOW_S = 60.0
#: Windows kept for addresses with nothing to sum up before the oldest are dropped.
MAX_WINDOWS = 10_000
#: The longest a peer's text (a user name) is written.
MAX_VALUE_CHARS = 64

_EVENTS: dict[int, str] = {Reply.NOT_AUTHENTICATED: "login_failed",
                           Reply.PERMISSION_DENIED: "permission_denied"}
_SPECIAL = frozenset(' "=\\')


def key_values(fields: Mapping[str, object]) -> str:
    """``key=value`` pairs, a value quoted when it must be (see the module's docstring)."""
    return " ".join(f"{key}={_quoted(str(value))}" for key, value in fields.items())


def _quoted(value: str) -> str:
    if value and not _SPECIAL.intersection(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(slots=True)
class _Window:
    ends: float
    peer: str  # the last address counted (an IPv6 one stands for its /64)
    count: int = 0
    timer: asyncio.TimerHandle | None = None


class RefusalLog:
    """Logs the refusals an operator acts on, at most ``lines_per_window`` lines of
    one kind per address per ``window_s`` (and a summary of the rest)."""

    def __init__(self, users: Iterable[str] = (), *, lines_per_window: int = LINES_PER_WINDOW,
                 window_s: float = WINDOW_S) -> None:
        #: The configured user names: a failed login says whether the name is one.
        self.users = frozenset(users)
        self._lines = lines_per_window
        self._window_s = window_s
        self._windows: dict[tuple[str, str], _Window] = {}

    def refused(self, code: int, peer: Callable[[], str], packet: Packet) -> None:
        """Log a refusal of ``packet``, if it is of a kind logged (``_EVENTS``);
        ``peer()`` gives the client's address (asked only then: a system call)."""
        event = _EVENTS.get(code)
        if event is None:
            return
        host = peer()
        user = packet.variables.get("_sys_User", "")
        fields: dict[str, object] = {"event": event, "peer": host,
                                     "user": clip(user, MAX_VALUE_CHARS),
                                     "command": clip(packet.command, MAX_VALUE_CHARS)}
        if code == Reply.NOT_AUTHENTICATED:
            fields["reason"] = ("no_user" if not user else "wrong_password" if user in self.users
                                else "unknown_user")
        if self._counted(event, host):
            log.warning("%s", key_values(fields), extra={"fields": fields})

    def _counted(self, event: str, host: str) -> bool:
        """Count a refusal in its window; True if it is to be logged on its own line."""
        now = time.monotonic()
        key = (event, throttled_address(host))
        window = self._windows.get(key)
        if window is None or now >= window.ends:
            if window is not None:
                self._close(key)
            elif len(self._windows) >= MAX_WINDOWS:
                self._forget_quiet(now)
            window = self._windows[key] = _Window(now + self._window_s, host)
        window.count += 1
        window.peer = host
        if window.count <= self._lines:
            return True
        if window.timer is None:  # the first one past the limit: sum up at the end
            window.timer = asyncio.get_running_loop().call_later(
                window.ends - now, self._close, key)
        return False

    def _close(self, key: tuple[str, str]) -> None:
        """End a window: the summary line, if refusals went unlogged in it."""
        window = self._windows.pop(key, None)
        if window is None:
            return
        if window.timer is not None:
            window.timer.cancel()
        unlogged = window.count - self._lines
        if unlogged > 0:
            fields: dict[str, object] = {"event": f"{key[0]}_summary", "peer": window.peer,
                                         "count": unlogged, "window_s": f"{self._window_s:g}"}
            log.warning("%s", key_values(fields), extra={"fields": fields})

    def _forget_quiet(self, now: float) -> None:
        """Drop the windows with nothing to sum up (those past their end first;
        then, if still too many, the oldest): a window that sums up has a timer."""
        quiet = [key for key, window in self._windows.items() if window.timer is None]
        ended = [key for key in quiet if now >= self._windows[key].ends]
        for key in ended or quiet[: len(quiet) // 2 + 1]:
            del self._windows[key]

    def flush(self) -> None:
        """Write the summaries of every open window now (the server stops)."""
        for key in list(self._windows):
            self._close(key)
