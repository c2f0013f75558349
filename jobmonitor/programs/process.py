"""A program's process: started, its output read line by line, stopped with its group.

The mechanics under program jobs (``programs``), with no notion of jobs: a
program starts in a process group of its own, so a stop reaches its children;
its stdout and stderr are read from the event loop and handed on a line at a
time (a line ends with LF, CRLF or a lone CR; one longer than ``MAX_LINE_BYTES``
goes in pieces, never cut inside a UTF-8 character); a stop sends SIGTERM to
the group and SIGKILL to whatever is left once the grace time has passed, even
if the program itself has exited.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import signal
import subprocess
from collections.abc import Callable
from typing import Any

from ..errors import JobFailed

__all__ = ["ProgramProcess", "start_program", "read_output", "stop_program", "signal_group",
           "MAX_LINE_BYTES"]

#: A stdout/stderr line longer than this is sent in pieces.
MAX_LINE_BYTES = 64 * 1024
#: How long to keep reading a stopped program's output.
DRAIN_S = 2.0
#: How often a stop looks whether the program's process group is empty yet.
GROUP_POLL_S = 0.05
#: What ends a line: LF, CRLF or a lone CR (a progress display rewrites its line
#: after a CR), but not a CR last in what was read so far (an LF may follow).
_LINE_END = re.compile(rb"\r\n|\r(?!\Z)|\n")


class ProgramProcess:
    """A program started by the standard library, its output and exit watched
    from the event loop.

    Not the loop's own subprocess support: uvloop (which ``jobmonitor serve``
    uses when installed) ignores ``close_fds``, so programs inherited the
    server's descriptors, among them copies of their own job's pipes; a
    background child that had redirected its output still held those, and the
    job waited for it.  The exit is seen through a pidfd where there is one (no
    thread), else by a thread blocked in ``wait``; nothing else reaps the child.
    """

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self._loop = asyncio.get_running_loop()
        self._popen = popen
        self.pid = popen.pid
        self.stdout = asyncio.StreamReader()
        self.stderr = asyncio.StreamReader()
        # Each pipe is closed by its transport once handed over, else by us.
        self._pipes = [popen.stdout, popen.stderr]
        self._transports: list[asyncio.BaseTransport] = []
        self._pidfd: int | None = None
        self._exited: asyncio.Future[int] = self._loop.create_future()

    @classmethod
    async def start(cls, argv: list[str], cwd: str | None, env: dict[str, str]) -> ProgramProcess:
        """Raises: OSError, ValueError: from ``subprocess.Popen``."""
        popen = subprocess.Popen(
            argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, bufsize=0, close_fds=True,
            start_new_session=True,  # its own process group, so a stop reaches its children
        )
        process = cls(popen)
        try:
            process._watch_exit()
            await process._connect_pipes()
        except BaseException:  # (cancelled while connecting its pipes)
            # The exit watch goes on: it reaps the killed program, then closes its pidfd.
            process.kill()
            process.close_pipes()
            raise
        return process

    @property
    def returncode(self) -> int | None:
        return self._popen.returncode

    async def wait(self) -> int:
        """The exit status, once the program has exited (negative: killed by a signal)."""
        return await asyncio.shield(self._exited)

    def kill(self) -> None:
        """SIGKILL what is left of the program's process group, and the program
        itself should it have left the group."""
        if _group_alive(self):
            signal_group(self, signal.SIGKILL)
        if self._popen.returncode is None:
            self._popen.kill()  # (Popen makes sure the pid is still its child's)

    def close_pipes(self) -> None:
        for transport in self._transports:
            transport.close()
        for pipe in self._pipes:
            if pipe is not None:
                pipe.close()
        self._transports.clear()
        self._pipes.clear()

    def close(self) -> None:
        """Stop watching: close the pipes and the pidfd (the program may be left
        unreaped; the standard library reaps it later)."""
        self.close_pipes()
        self._close_pidfd()

    def _watch_exit(self) -> None:
        try:
            self._pidfd = os.pidfd_open(self.pid)
            self._loop.add_reader(self._pidfd, self._on_exit)
        except (AttributeError, OSError):  # not Linux, Linux before 5.3, or not allowed
            self._close_pidfd()
            self._exited = self._loop.run_in_executor(None, self._popen.wait)

    def _on_exit(self) -> None:
        status = self._popen.poll()  # it has exited (its pidfd is readable): no blocking
        if status is None:
            return
        self._close_pidfd()
        if not self._exited.done():
            self._exited.set_result(status)

    def _close_pidfd(self) -> None:
        pidfd, self._pidfd = self._pidfd, None
        if pidfd is not None:
            if not self._loop.is_closed():
                with contextlib.suppress(ValueError, OSError):  # (add_reader failed)
                    self._loop.remove_reader(pidfd)
            os.close(pidfd)

    async def _connect_pipes(self) -> None:
        for reader in (self.stdout, self.stderr):
            pipe = self._pipes.pop(0)  # the transport closes it, even if this fails
            transport, _ = await self._loop.connect_read_pipe(
                functools.partial(asyncio.StreamReaderProtocol, reader), pipe)
            self._transports.append(transport)


async def start_program(argv: list[str], cwd: str | None, env: dict[str, str]) -> ProgramProcess:
    """Raises: JobFailed: the program cannot be started."""
    try:
        return await ProgramProcess.start(argv, cwd, env)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if cwd is not None and exc.filename == cwd:  # the folder, not the program
            raise JobFailed(f"cannot run {argv[0]} in {cwd}: {reason}") from None
        raise JobFailed(f"cannot run {argv[0]}: {reason}") from None
    except ValueError as exc:  # a NUL character (the configuration checks refuse those)
        raise JobFailed(f"cannot run {argv[0]}: {exc}") from None


async def read_output(process: ProgramProcess, info: Callable[[str], None],
                      error: Callable[[str], None]) -> None:
    """Send stdout lines to ``info`` and stderr lines to ``error`` until both
    pipes end; then close them.  A task of its own rather than a bare
    ``gather`` future: cancelling it (a stop gives up on a descendant that holds
    the pipes) leaves no "exception was never retrieved" in the log."""
    try:
        await asyncio.gather(_pump(process.stdout, info), _pump(process.stderr, error))
    finally:
        process.close_pipes()


async def _pump(stream: asyncio.StreamReader, say: Callable[[str], None]) -> None:
    """Send each line of ``stream`` to ``say`` as soon as it is complete."""
    pending = b""
    while chunk := await stream.read(MAX_LINE_BYTES):
        data = pending + chunk
        *lines, pending = _LINE_END.split(data) if b"\r" in data else data.split(b"\n")
        for raw in lines:
            pieces, rest = _pieces(raw)
            for piece in (*pieces, rest):
                say(_decode(piece))
        pieces, pending = _pieces(pending)
        for piece in pieces:
            say(_decode(piece))
    if pending:
        say(_decode(pending))


def _pieces(data: bytes) -> tuple[list[bytes], bytes]:
    """``data`` cut into pieces of at most ``MAX_LINE_BYTES``, and what is left
    (at most that long), never inside a UTF-8 character."""
    pieces = []
    while len(data) > MAX_LINE_BYTES:
        cut = _character_start(data, MAX_LINE_BYTES)
        pieces.append(data[:cut])
        data = data[cut:]
    return pieces, data


def _character_start(data: bytes, limit: int) -> int:
    """Where to cut ``data`` (longer than ``limit``) at most ``limit`` bytes in
    without splitting a UTF-8 character: at the last character start among the
    4 positions up to ``limit`` (data that is not UTF-8 is cut at ``limit``)."""
    for cut in range(limit, limit - 4, -1):
        if data[cut] & 0xC0 != 0x80:  # not a continuation byte
            return cut
    return limit


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace").removesuffix("\r")


async def stop_program(process: ProgramProcess, output: asyncio.Future[Any],
                       grace_s: float) -> None:
    """Stop the program and the rest of its process group (see ``_terminate``),
    then read what they wrote meanwhile (for at most ``DRAIN_S``)."""
    try:
        await _terminate(process, grace_s)
        await process.wait()
    except BaseException:
        process.close()  # cancelled (the server is closing its loop): nobody waits now
        raise
    # A descendant that left the process group may hold the pipes open: stop waiting.
    await asyncio.wait([output], timeout=DRAIN_S)
    output.cancel()


async def _terminate(process: ProgramProcess, grace_s: float) -> None:
    """SIGTERM the process group, wait for the program, then for the rest of the
    group; SIGKILL whatever is left once ``grace_s`` has passed since the SIGTERM
    (its children too: a program that exits on SIGTERM may leave them running)."""
    loop = asyncio.get_running_loop()
    kill_at = loop.time() + grace_s
    if _group_alive(process):
        signal_group(process, signal.SIGTERM)
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), grace_s)
        while loop.time() < kill_at and _group_alive(process):
            await asyncio.sleep(GROUP_POLL_S)
    finally:
        # Also when this stop is itself cancelled: a server shutting down gives
        # up on a job after runner.CANCEL_WAIT_S and closes its loop, and the
        # program must not outlive it.
        process.kill()


def _group_alive(process: ProgramProcess) -> bool:
    """Whether any process is left in the program's group (zombies count)."""
    try:
        os.killpg(process.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member that took another identity: still there
        return True
    return True


def signal_group(process: ProgramProcess, signum: int) -> None:
    """Send ``signum`` to the program's process group, if anything is left of it
    that we may signal (every member may have taken another identity: a setuid
    program, which no signal of ours can stop)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)
