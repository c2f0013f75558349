"""A real PostgreSQL server for the tests: started once per session, from the
Debian server binaries (``initdb``, ``pg_ctl``), in a temporary folder.

PostgreSQL refuses to run as root: as root, the folder is given to the
``postgres`` user and the binaries run as it (``runuser``).  The server listens
on a free loopback port only (no Unix socket), trusts every local connection,
and does not fsync (a crash of the server process loses nothing the operating
system has; only a crash of the machine would).  Each test gets a schema of its
own (``pg_url``), so tests never see each other's jobs.

When PostgreSQL cannot be started, the tests that need it are skipped with the
reason, except in CI (``CI=true``), where they fail: CI installs it.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["PostgresServer", "find_bin_dir", "postgres_server", "pg_url", "pg_schema_url"]

#: How long the server may take to start or stop.
START_TIMEOUT_S = 30
_schemas = itertools.count(1)


def find_bin_dir() -> Path | None:
    """The folder of ``initdb`` and ``pg_ctl``: the newest Debian server's, else PATH's."""
    def version(path: str) -> tuple[int, ...]:
        name = Path(path).parent.name  # /usr/lib/postgresql/<version>/bin
        return tuple(int(p) for p in name.split(".") if p.isdigit())

    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version)
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("initdb")
    if found is not None and shutil.which("pg_ctl") is not None:
        return Path(os.path.realpath(found)).parent
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PostgresServer:
    """One PostgreSQL cluster in a temporary folder, on a loopback port."""

    def __init__(self, bin_dir: Path, *, fsync: bool = False) -> None:
        self.bin_dir = bin_dir
        self.fsync = fsync  # (off for the tests: only a crash of the machine would lose data)
        self.as_root = os.geteuid() == 0
        self.folder = Path(tempfile.mkdtemp(prefix="jobmonitor-pg-", dir="/tmp"))
        if self.as_root:
            user = pwd.getpwnam("postgres")
            os.chown(self.folder, user.pw_uid, user.pw_gid)
        self.data = self.folder / "data"
        self.log = self.folder / "server.log"
        self.port = _free_port()
        self.running = False

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bin_dir / program), *args]
        if self.as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True,
                                timeout=START_TIMEOUT_S + 10, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{program} failed ({result.returncode}): "
                               f"{(result.stderr or result.stdout).strip()[-2000:]}")

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "--encoding=UTF8", "--no-sync", "--locale=C")

    def start(self) -> None:
        options = " ".join([
            f"-c port={self.port}", "-c listen_addresses=127.0.0.1",
            "-c unix_socket_directories=''", "-c shared_buffers=16MB",
            "-c max_connections=100",
            *([] if self.fsync else ["-c fsync=off", "-c full_page_writes=off"])])
        self._run("pg_ctl", "start", "-w", "-t", str(START_TIMEOUT_S), "-D", str(self.data),
                  "-l", str(self.log), "-o", options)
        self.running = True

    def stop(self) -> None:
        """Stop at once, as a crash would (what was committed is kept)."""
        if self.running:
            self.running = False
            self._run("pg_ctl", "stop", "-m", "immediate", "-w", "-D", str(self.data))

    def restart(self) -> None:
        """Stop at once and start again, on the same port and data."""
        self.stop()
        self.start()

    def url(self, schema: str | None = None) -> str:
        base = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        return base if schema is None else f"{base}?schema={schema}"

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def server_log(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return ""


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"PostgreSQL is needed in CI: {reason}")
    pytest.skip(f"PostgreSQL cannot be started here: {reason}")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the whole session (skipped without one, failed in CI)."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        _unavailable("initdb and pg_ctl are neither on PATH nor under /usr/lib/postgresql "
                     "(install the postgresql package)")
    assert bin_dir is not None
    try:
        server = PostgresServer(bin_dir)
    except (OSError, KeyError) as exc:
        _unavailable(f"cannot make its folder: {exc}")
        raise
    try:
        server.init()
        server.start()
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        log = server.server_log()
        server.remove()
        _unavailable(f"{exc}{' / ' + log if log else ''}")
    try:
        yield server
    finally:
        try:
            server.stop()
        finally:
            server.remove()


def pg_schema_url(server: PostgresServer) -> str:
    """A store URL on a schema no test used before."""
    return server.url(f"t_{os.getpid()}_{next(_schemas)}")


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> str:
    """A store URL (``postgresql://...?schema=t_<n>``) on a fresh schema of the
    session's PostgreSQL."""
    return pg_schema_url(postgres_server)
