"""The peer job servers jobmonitor is compared with: gearmand and beanstalkd.

Each target starts the Debian daemon on 127.0.0.1 on a free port, then a
separate worker process (``peer_worker.py``) speaking the raw protocol, and
waits until the daemon accepts connections and the workers are registered.
``stop()`` ends the worker process, then the daemon; both also die with the
runner (parent-death signal).  The load runs in the runner's process, so as
for jobmonitor the server and the load generator each have a process of
their own (plus, here, the workers').
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from harness import (
    Endpoint,
    ServerProcess,
    Sizes,
    Target,
    find_binary,
    free_port,
    run_jobs_scenario,
)

__all__ = ["GearmandTarget", "BeanstalkdTarget"]

BENCH_DIR = Path(__file__).resolve().parent.parent
DAEMON_DEADLINE_S = 3600.0


class _PeerTarget(Target):
    binary = ""
    package = ""
    worker_kind = ""

    def __init__(self, workers: int, worker_loop: str) -> None:
        self.workers = workers
        self.worker_loop = worker_loop
        self.daemon: ServerProcess | None = None
        self.worker: ServerProcess | None = None
        self._scratch: tempfile.TemporaryDirectory[str] | None = None

    def unavailable(self) -> str | None:
        if find_binary(self.binary) is None:
            return (f"{self.binary} not found (install Debian's {self.package}: "
                    f"bash benchmarks/install_peers.sh)")
        return None

    def daemon_argv(self, path: str, port: int, scratch: str) -> list[str]:
        raise NotImplementedError

    async def workers_registered(self, endpoint: Endpoint) -> bool:
        return True

    async def start(self) -> Endpoint:
        try:
            return await self._start()
        except BaseException:
            await self.stop()  # nothing half-started may outlive a failed start
            raise

    async def _start(self) -> Endpoint:
        path = find_binary(self.binary)
        assert path is not None
        self._scratch = tempfile.TemporaryDirectory(prefix=f"{self.binary}-bench-")
        for attempt in range(3):  # the free port can be taken between probe and bind
            port = free_port()
            self.daemon = ServerProcess(self.daemon_argv(path, port, self._scratch.name),
                                        name=self.binary)
            try:
                endpoint = await self.daemon.start(port=port)
                break
            except RuntimeError:
                if attempt == 2:
                    raise
        self.worker = ServerProcess(
            [sys.executable, str(BENCH_DIR / "peer_worker.py"), self.worker_kind,
             "--host", endpoint.host, "--port", str(endpoint.port),
             "--connections", str(self.workers), "--loop", self.worker_loop,
             "--deadline-s", str(DAEMON_DEADLINE_S)], name=f"{self.binary} workers")
        await self.worker.start(ready_pattern=r"peer worker ready",
                                timeout_s=20)
        deadline = time.monotonic() + 10
        while not await self.workers_registered(endpoint):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.binary}: workers did not register")
        return endpoint

    async def stop(self) -> None:
        for process in (self.worker, self.daemon):
            if process is not None:
                await process.stop()
        self.worker = self.daemon = None
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None


class GearmandTarget(_PeerTarget):
    """gearmand with foreground jobs.  ``persistent`` clients keep their connection
    between jobs; otherwise each job opens its own, as jobmonitor clients do."""

    binary = "gearmand"
    package = "gearman-job-server"
    worker_kind = "gearman"

    def __init__(self, workers: int, worker_loop: str, *, persistent: bool = False,
                 threads: int = 4) -> None:
        super().__init__(workers, worker_loop)
        self.persistent = persistent
        self.threads = threads
        self.name = "gearmand (persistent conns)" if persistent else "gearmand"
        self.scenarios = frozenset({"jobs"} if persistent else {"stream", "jobs", "held"})
        self.description = (f"gearmand -t {threads}, {workers} worker connections, "
                            + ("persistent client connections" if persistent
                               else "a client connection per job"))

    def daemon_argv(self, path: str, port: int, scratch: str) -> list[str]:
        # An empty config file of our own: a system /etc/gearmand.conf must not
        # change what is measured.
        config = Path(scratch, "gearmand.conf")
        config.touch()
        return [path, "--listen", "127.0.0.1", "--port", str(port), "--threads",
                str(self.threads), "--backlog", "4096", "--log-file", "stderr",
                "--verbose", "ERROR", "--pid-file", f"{scratch}/gearmand.pid",
                "--config-file", str(config)]

    async def workers_registered(self, endpoint: Endpoint) -> bool:
        from peers import gearman

        status = await gearman.admin_status(endpoint)
        return status.get("bench.tiny", (0, 0, 0))[2] >= self.workers

    async def run(self, scenario: str, endpoint: Endpoint, sizes: Sizes) -> dict[str, float]:
        from peers import gearman

        if scenario == "stream":
            return await gearman.run_stream(endpoint, sizes.stream_lines)
        if scenario == "jobs":
            if self.persistent:
                return await run_jobs_scenario(endpoint, sizes, gearman.run_jobs_persistent,
                                               gearman.run_submits_persistent, gearman.idle)
            return await run_jobs_scenario(endpoint, sizes, gearman.run_jobs,
                                           gearman.run_submits, gearman.idle)
        if scenario == "held":
            return await gearman.run_held(endpoint, sizes.held, sizes.timeout_s)
        raise ValueError(f"{self.name} cannot run {scenario}")


class BeanstalkdTarget(_PeerTarget):
    """beanstalkd, in memory (no binlog) or ``durable`` (a binlog in the scratch
    folder: fsynced after every write, as jobmonitor's SQLite store fsyncs every
    commit with ``synchronous=full``; or with ``fsync=False`` never fsynced
    (``-F``), as SQLite does not with ``synchronous=normal``); producers learn
    of completion via reply tubes.  ``pipelined`` producers keep several
    fire-and-forget puts in flight."""

    binary = "beanstalkd"
    package = "beanstalkd"
    worker_kind = "beanstalk"
    scenarios = frozenset({"jobs"})

    def __init__(self, workers: int, worker_loop: str, *, durable: bool = False,
                 fsync: bool = True, per_connection: bool = False,
                 pipelined: bool = False) -> None:
        super().__init__(workers, worker_loop)
        self.durable = durable
        self.fsync = fsync
        self.per_connection = per_connection
        self.pipelined = pipelined
        binlog = "binlog, fsync" if fsync else "binlog, no fsync"
        kinds = [k for k, on in ((binlog, durable), ("a connection per job", per_connection),
                                 ("pipelined submits", pipelined)) if on]
        self.name = f"beanstalkd ({', '.join(kinds)})" if kinds else "beanstalkd"
        storage = ("no binlog" if not durable else "binlog fsynced after every write" if fsync
                   else "binlog never fsynced")
        clients = "a client connection per job" if per_connection else "kept client connections"
        if pipelined:
            clients += f", {beanstalk_depth()} fire-and-forget puts in flight"
        self.description = (f"beanstalkd ({storage}), {workers} worker connections, reply "
                            f"tubes, {clients}")

    def daemon_argv(self, path: str, port: int, scratch: str) -> list[str]:
        durable = ["-b", scratch, *(("-f", "0") if self.fsync else ("-F",))] if self.durable \
            else []
        return [path, "-l", "127.0.0.1", "-p", str(port), *durable]

    async def run(self, scenario: str, endpoint: Endpoint, sizes: Sizes) -> dict[str, float]:
        from peers import beanstalk

        if scenario == "jobs" and self.per_connection:
            return await run_jobs_scenario(endpoint, sizes, beanstalk.run_jobs_per_connection,
                                           beanstalk.run_submits_per_connection, beanstalk.idle)
        if scenario == "jobs":
            submits = beanstalk.run_submits_pipelined if self.pipelined else beanstalk.run_submits
            return await run_jobs_scenario(endpoint, sizes, beanstalk.run_jobs, submits,
                                           beanstalk.idle)
        raise ValueError(f"{self.name} cannot run {scenario}")


def beanstalk_depth() -> int:
    from peers import beanstalk

    return beanstalk.PIPELINE_DEPTH

