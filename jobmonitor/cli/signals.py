"""What signals do to ``jobmonitor serve``, and how the process exits when a
shutdown cannot finish: ``Stopper`` (SIGINT, SIGTERM, SIGHUP) and
``exit_if_stuck``.  Process-wide matters, so the CLI's, never the library's."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    import asyncio

    from ..engine.job import Job
    from ..server.server import Server

__all__ = ["Stopper", "exit_if_stuck", "STOP_MARGIN_S", "HURRIED_EXIT_S"]

log = logging.getLogger("jobmonitor.cli")

#: After a first SIGINT/SIGTERM, how much longer than shutdown_grace_s and linger_s
#: the shutdown may take before the process exits anyway: the time a cancelled job
#: has to stop (runner.CANCEL_WAIT_S, 5 s), and as long again for the store's last
#: commit (a database another program holds waits SQLite's busy timeout, 5 s).
STOP_MARGIN_S = 10.0
#: After a second one, how long jobs have to stop, now cancelled, before the
#: process exits anyway.
HURRIED_EXIT_S = 1.0


class Stopper:
    """What SIGINT, SIGTERM and SIGHUP do to ``serve``.

    SIGHUP reloads: the config file and the job modules are read again and the
    server goes on with them (``Server.reload``); not once it is stopping.

    The first starts the server's orderly shutdown; the process exits when it is
    done, and at the latest ``shutdown_grace_s + linger_s + STOP_MARGIN_S`` after
    the signal.  A second cancels running jobs at once; the process exits when
    they have stopped, and at the latest ``HURRIED_EXIT_S`` after it.  A third
    exits at once.  An exit that cuts the shutdown short has status 128 plus the
    signal's number, as a shell shows a process the signal killed; what the
    store had committed stays, and the next start recovers the jobs that were
    running.

    Plain signal handlers, not the loop's: they run in the main thread between
    two bytecodes, so a job that blocks the loop cannot keep them from running;
    the deadlines run in a timer thread for the same reason.
    """

    def __init__(self, server: Server) -> None:
        import asyncio

        self.server = server
        #: Set by the first signal: the server is to stop.
        self.stopping = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._signals = 0
        self._deadline: threading.Timer | None = None
        self._reloads: set[asyncio.Task[bool]] = set()  # (the loop holds tasks weakly)

    def install(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._on_signal)
        if hasattr(signal, "SIGHUP"):  # (not on Windows)
            signal.signal(signal.SIGHUP, lambda signum, frame: self._soon(self._reload))

    def _reload(self) -> None:
        if self.stopping.is_set():
            log.info("received SIGHUP while stopping: not reloading")
            return
        log.info("received SIGHUP: reloading the settings and the job modules")
        task = self._loop.create_task(self.server.reload())
        self._reloads.add(task)
        task.add_done_callback(self._reloaded)

    def _reloaded(self, task: asyncio.Task[bool]) -> None:
        self._reloads.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("reloading failed", exc_info=task.exception())

    def _on_signal(self, signum: int, frame: object) -> None:
        self._signals += 1
        name = signal.Signals(signum).name
        if self._signals == 1:
            config = self.server.config
            bound_s = config.shutdown_grace_s + config.linger_s + STOP_MARGIN_S
            self._soon(self._stop, name, bound_s)
            self._exit_after(bound_s, signum, f"the shutdown took more than {bound_s:g} s")
        elif self._signals == 2:
            self._soon(self._hurry, name)
            self._exit_after(HURRIED_EXIT_S, signum, f"the shutdown did not end within "
                                                     f"{HURRIED_EXIT_S:g} s of the second {name}")
        else:
            self._exit(128 + signum, f"received {name} a third time")

    def _soon(self, callback: Callable[..., None], *args: Any) -> None:
        """Run ``callback`` on the loop (not in the signal handler, which may have
        interrupted the loop anywhere); nothing if the loop has ended."""
        # RuntimeError: the loop is closed, the server has stopped already.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(callback, *args)

    def _stop(self, name: str, bound_s: float) -> None:
        log.info("received %s: stopping within %g s (again to stop at once)", name, bound_s)
        self.stopping.set()

    def _hurry(self, name: str) -> None:
        log.warning("received %s again: cancelling running jobs now, exiting within %g s",
                    name, HURRIED_EXIT_S)
        self.stopping.set()
        self.server.hurry()

    def _exit_after(self, delay_s: float, signum: int, reason: str) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = threading.Timer(delay_s, self._exit, (128 + signum, reason))
        self._deadline.daemon = True
        self._deadline.start()

    def _exit(self, status: int, reason: str) -> None:
        stuck = self.server.stuck_jobs()
        left = (f"; the next start recovers the jobs still running: {_job_names(stuck)}"
                if stuck else "")
        _exit_now(status, f"{reason}: exiting now{left}")


def exit_if_stuck(server: Server) -> None:
    """After an orderly stop: exit at once if a job's handler is still running in
    its thread (it did not stop when cancelled, and Python cannot stop a thread;
    the interpreter's exit would wait for it)."""
    stuck = server.stuck_jobs()
    if stuck:
        _exit_now(0, f"exiting without waiting for job handlers that did not stop when "
                     f"cancelled: {_job_names(stuck)}")


def _job_names(jobs: Sequence[Job]) -> str:
    return ", ".join(f"{job.transaction_id} ({job.project})" for job in jobs)


def _exit_now(status: int, message: str) -> NoReturn:
    """Log ``message``, flush the log, and end the process at once with ``status``
    (no clean-up: the store's lock and files go with the process)."""
    log.warning("%s", message)
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(status)
