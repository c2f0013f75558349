"""The ``Job`` a handler receives: its inputs, and the calls that report progress.

``info``, ``error`` and ``progress`` format the message once and append it to
the job's stream; they never block and never wait for a monitor.  A handler
that is a plain function runs in a worker thread: its calls are handed to the
event loop in batches (one wake-up per batch, not per line), and once the job
is cancelled its next call raises ``asyncio.CancelledError`` in that thread.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from .codes import ERROR_THRESHOLD, Status
from .lines import format_line
from .states import JobState, Outcome
from .stream import JobStream

__all__ = ["Job"]


class Job:
    """One job: what it was given, what it has said, and where it stands.

    Handlers use ``params``, ``doc_variables``, ``transaction_id``, ``info``,
    ``error`` and ``progress``; the other attributes are read by the server.
    """

    def __init__(
        self,
        *,
        transaction_id: str,
        project: str,
        params: Mapping[str, str],
        doc_variables: Mapping[str, str],
        loop: asyncio.AbstractEventLoop,
        identity: str = "anonymous",
        created: float | None = None,
    ) -> None:
        self.transaction_id = transaction_id
        self.project = project
        self.params: Mapping[str, str] = MappingProxyType(dict(params))
        self.doc_variables: Mapping[str, str] = MappingProxyType(dict(doc_variables))
        self.identity = identity
        self.state = JobState.CREATED
        self.outcome: Outcome | None = None
        self.created = time.time() if created is None else created
        self.started: float | None = None
        self.updated = self.created
        self.completed: float | None = None
        self.progress_done = 0
        self.progress_total = 0
        self.status_message = ""
        self.stream = JobStream(loop)
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._cancel_requested = False
        self._thread_lock = threading.Lock()
        self._thread_pending: list[tuple[bytes, str]] = []

    def __repr__(self) -> str:
        return f"<Job {self.transaction_id} {self.project!r} {self.state.value}>"

    @property
    def job_name(self) -> str:
        """The optional ``JobName`` job variable ("" when absent)."""
        return self.params.get("JobName", "")

    @property
    def cancel_requested(self) -> bool:
        """True once someone asked to cancel this job."""
        return self._cancel_requested

    # -- the handler's API ------------------------------------------------

    def info(self, text: str, *, code: int = Status.INFO) -> None:
        """Send an information line (``J0000100`` unless ``code`` says otherwise).

        Raises:
            ValueError: ``code`` is not an information code (0 < code < 5000).
        """
        if code != Status.INFO and not 0 < code < ERROR_THRESHOLD:
            raise ValueError(f"information codes are 1..4999, got {code}")
        self._say(code, str(text))

    def error(self, text: str, *, code: int = Status.ERROR) -> None:
        """Send an error line (``J0005000`` unless ``code`` says otherwise).

        Raises:
            ValueError: ``code`` is not an error code (5000..9999999).
        """
        if not ERROR_THRESHOLD <= code <= 9_999_999:
            raise ValueError(f"error codes are 5000..9999999, got {code}")
        self._say(code, str(text))

    def progress(self, done: int, total: int, message: str = "") -> None:
        """Record progress and send a ``J0000110`` line such as ``Progress: 3/10 (30%)``.

        Raises:
            ValueError: ``done`` or ``total`` is negative, or ``done > total > 0``.
        """
        done, total = int(done), int(total)
        if done < 0 or total < 0 or (total and done > total):
            raise ValueError(f"invalid progress {done}/{total}")
        self.progress_done, self.progress_total = done, total
        percent = f" ({done * 100 // total}%)" if total else ""
        text = f"Progress: {done}/{total}{percent}"
        self._say(Status.PROGRESS, f"{text} {message}" if message else text)

    # -- recording ----------------------------------------------------------

    def _say(self, code: int, text: str) -> None:
        data = format_line("J", code, text)
        if threading.get_ident() == self._loop_thread:
            self._record(data, text)
            return
        if self._cancel_requested:
            raise asyncio.CancelledError()
        with self._thread_lock:
            first = not self._thread_pending
            self._thread_pending.append((data, text))
        if first:
            self._loop.call_soon_threadsafe(self._take_from_thread)

    def _take_from_thread(self) -> None:
        with self._thread_lock:
            pending, self._thread_pending = self._thread_pending, []
        for data, text in pending:
            self._record(data, text)

    def _record(self, data: bytes, text: str) -> None:
        self.stream.append(data)
        self.status_message = text
        self.updated = time.time()

    def _record_status(self, code: Status, text: str | None = None) -> None:
        """Record a server-made line with a standard text (or ``text``)."""
        self.stream.append(format_line("J", code, code.text if text is None else text))

    def _set_state(self, state: JobState) -> None:
        self.state = state
        self.updated = time.time()

    def _snapshot(self) -> dict[str, Any]:
        """The job's fields as plain values (for status replies and stores)."""
        return {
            "transaction_id": self.transaction_id,
            "project": self.project,
            "job_name": self.job_name,
            "identity": self.identity,
            "status": self.state.value,
            "progress_done": self.progress_done,
            "progress_total": self.progress_total,
            "status_message": self.status_message,
            "created": self.created,
            "started": self.started,
            "updated": self.updated,
            "completed": self.completed,
            "outcome": self.outcome.value if self.outcome else None,
            "lines": len(self.stream),
        }
