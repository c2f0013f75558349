"""Server processes and sockets for the benchmarks: start, wait until ready, stop; ports, RSS.

Server processes get a parent-death signal, so they die with the runner even
if it is killed, and ``ServerProcess.stop()`` (SIGTERM, then SIGKILL) always
ends them.  Only the standard library is used.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import os
import re
import shutil
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Endpoint", "ServerProcess", "rss_kb", "free_port", "find_binary", "raise_fd_limit",
           "ping", "wait_until"]


@dataclass(frozen=True)
class Endpoint:
    """Where a started server listens, and the process whose memory counts."""

    host: str
    port: int
    pid: int



def rss_kb(pid: int) -> int:
    """Resident set size of a process, in KiB, from /proc/PID/status."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (for servers that cannot take port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def find_binary(name: str) -> str | None:
    """``name`` on PATH, or in the sbin directories Debian daemons live in."""
    path = os.environ.get("PATH", "") + ":/usr/sbin:/usr/local/sbin:/sbin"
    return shutil.which(name, path=path)


def raise_fd_limit(wanted: int = 0) -> int:
    """Raise the open-file limit (children inherit it) to the hard limit, or to
    ``wanted`` above it where this process may raise the hard one too (root);
    return the soft limit now."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if wanted > hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return wanted
        except (ValueError, OSError):  # not allowed: the hard limit it is
            pass
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


async def ping(host: str, port: int) -> bool:
    """True if a TCP connection to host:port succeeds."""
    try:
        _, writer = await asyncio.open_connection(host, port)
    except OSError:
        return False
    writer.close()
    return True


async def wait_until(check: Callable[[], Awaitable[bool]], timeout_s: float,
                     what: str, interval_s: float = 0.01) -> None:
    """Poll ``check`` until it is true; raise TimeoutError naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not within {timeout_s:g} s")
        await asyncio.sleep(interval_s)


try:
    _LIBC: Any = ctypes.CDLL(None, use_errno=True)
except OSError:
    _LIBC = None


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: PR_SET_PDEATHSIG (1) makes the
    # kernel send SIGKILL to the server if the runner dies without cleaning up.
    if _LIBC is not None and hasattr(_LIBC, "prctl"):
        _LIBC.prctl(1, signal.SIGKILL, 0, 0, 0)


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


class ServerProcess:
    """A server subprocess: started, awaited until ready, and always stopped.

    Readiness is either a line on stderr matching ``ready_pattern`` (whose
    ``host`` and ``port`` groups give the address) or a TCP connect to
    ``host:port`` succeeding.  The last stderr lines are kept for error messages.
    """

    def __init__(self, argv: Sequence[str], *, name: str, env: dict[str, str] | None = None,
                 cwd: str | None = None) -> None:
        self.argv = list(argv)
        self.name = name
        self.env = env
        self.cwd = cwd
        self.process: asyncio.subprocess.Process | None = None
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=30)
        self._ready_line: asyncio.Future[re.Match[str]] | None = None
        self._pattern: re.Pattern[str] | None = None
        self._reader: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start(self, *, ready_pattern: str | None = None, host: str = "127.0.0.1",
                    port: int | None = None, timeout_s: float = 20.0) -> Endpoint:
        """Start the process and return its endpoint once it is ready.

        Raises:
            RuntimeError: the process exited or never became ready (stderr attached).
        """
        loop = asyncio.get_running_loop()
        self._pattern = re.compile(ready_pattern) if ready_pattern else None
        self._ready_line = loop.create_future()
        self.process = await asyncio.create_subprocess_exec(
            *self.argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE, env=self.env, cwd=self.cwd,
            preexec_fn=_die_with_parent, limit=1 << 20)
        self._reader = loop.create_task(self._read_stderr())
        try:
            if self._pattern is not None:
                match = await asyncio.wait_for(asyncio.shield(self._ready_line), timeout_s)
                found = match.groupdict()
                host = found.get("host") or host
                port = int(found.get("port") or port or 0)
            else:
                assert port is not None
                await wait_until(self._alive_and_listening(host, port), timeout_s,
                                 f"{self.name} listening on {host}:{port}")
        except (TimeoutError, EOFError) as exc:
            await self.stop()
            raise RuntimeError(f"{self.name} did not start: {exc or 'timeout'}; "
                               f"stderr: {' | '.join(self.stderr_tail)}") from None
        return Endpoint(host.strip("[]"), port, self.pid)

    def _alive_and_listening(self, host: str, port: int) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            if self.process is None or self.process.returncode is not None:
                raise EOFError(f"{self.name} exited")
            return await ping(host, port)
        return check

    async def _read_stderr(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        async for raw in self.process.stderr:
            line = raw.decode(errors="replace").rstrip()
            self.stderr_tail.append(line)
            if self._pattern and self._ready_line and not self._ready_line.done():
                match = self._pattern.search(line)
                if match:
                    self._ready_line.set_result(match)
        if self._pattern and self._ready_line and not self._ready_line.done():
            self._ready_line.set_exception(EOFError(f"{self.name} exited"))

    async def stop(self, timeout_s: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout_s``; idempotent."""
        process, self.process = self.process, None
        if process is not None and process.returncode is None:
            # os.kill, not Process.send_signal: the latter polls (reaps) the child
            # first, racing asyncio's child watcher.
            _signal(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), timeout_s)
            except TimeoutError:
                _signal(process.pid, signal.SIGKILL)
                await process.wait()
        if self._reader is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._reader, 1)
            self._reader = None
        if self._ready_line is not None:
            if not self._ready_line.done():
                self._ready_line.cancel()
            elif not self._ready_line.cancelled():
                self._ready_line.exception()  # retrieved: no "never retrieved" warning


