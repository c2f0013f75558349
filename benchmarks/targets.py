"""The targets that speak the jobmonitor wire protocol: jobmonitor itself and the bare baseline.

Both run as a separate process (so the server and the load generator each
get a core) and are driven by the same client coroutines in ``wire``.

``GOALS`` is the table of targets the project set itself (issue 21): a row of
ours against a row of a peer's (or a fixed bound), the ratio wanted, and
``goal_table`` says how a run measured up to each.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import wire
from harness import (
    Endpoint,
    Result,
    ServerProcess,
    Sizes,
    Target,
    format_value,
    run_jobs_scenario,
    wait_until,
)

__all__ = ["BareTarget", "JobmonitorTarget", "BENCH_DIR", "REPO_DIR", "Goal", "GOALS",
           "goal_table"]

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
SERVER_DEADLINE_S = 3600.0


def _uvloop_missing() -> str | None:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "uvloop is not installed (pip install uvloop, or the project's [fast] extra)"
    return None


class _WireTarget(Target):
    """Start/stop through a ``ServerProcess``; dispatch scenarios to ``wire``."""

    ready_pattern = r"listening on \[?(?P<host>[^\]\s]+?)\]?:(?P<port>\d+)\s*$"

    def __init__(self) -> None:
        self.process: ServerProcess | None = None

    def argv(self, sizes: Sizes | None = None) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str] | None:
        return None

    async def start(self) -> Endpoint:
        self.process = ServerProcess(self.argv(), name=self.name, env=self.env(),
                                     cwd=str(REPO_DIR))
        return await self.process.start(ready_pattern=self.ready_pattern)

    async def stop(self) -> None:
        if self.process is not None:
            await self.process.stop()
            self.process = None

    async def run(self, scenario: str, endpoint: Endpoint, sizes: Sizes) -> dict[str, float]:
        if scenario == "stream":
            return await wire.run_stream(endpoint, sizes.stream_lines)
        if scenario == "jobs":
            return await run_jobs_scenario(endpoint, sizes, wire.run_jobs, wire.run_submits,
                                           self.idle)
        if scenario == "fanout":
            return await wire.run_fanout(endpoint, sizes.fanout_lines, sizes.fanout_watchers,
                                         self)  # type: ignore[arg-type]
        if scenario == "held":
            return await wire.run_held(endpoint, sizes.held, self,  # type: ignore[arg-type]
                                       sizes.timeout_s)
        raise ValueError(f"{self.name} cannot run {scenario}")

    async def idle(self, endpoint: Endpoint) -> bool:
        """True once no job submitted so far is queued or running.

        The bare server runs nothing after its reply, so it is always idle.
        """
        return True


class BareTarget(_WireTarget):
    """``bare_server.py`` on asyncio or uvloop, one write per line or per ``lines_per_write``."""

    def __init__(self, loop: str, lines_per_write: int, scenarios: frozenset[str]) -> None:
        super().__init__()
        self.loop = loop
        self.lines_per_write = lines_per_write
        self.scenarios = scenarios
        writes = "write/line" if lines_per_write <= 1 else f"write/{lines_per_write} lines"
        self.name = f"bare {loop} ({writes})" if "stream" in scenarios else f"bare {loop}"
        self.description = f"minimal asyncio server, {loop} loop, {writes}"

    def unavailable(self) -> str | None:
        return _uvloop_missing() if self.loop == "uvloop" else None

    def argv(self, sizes: Sizes | None = None) -> list[str]:
        return [sys.executable, str(BENCH_DIR / "bare_server.py"), "--host", "127.0.0.1",
                "--port", "0", "--loop", self.loop,
                "--lines-per-write", str(self.lines_per_write),
                "--deadline-s", str(SERVER_DEADLINE_S)]

    # -- Releaser: the bare server releases a group when it gets a bench.release job

    def params(self, group: str) -> dict[str, str]:
        return {"group": group}

    async def release(self, endpoint: Endpoint, group: str) -> None:
        await wire.exchange(endpoint, wire.submit_packet("bench.release", monitor=False,
                                                         group=group), "bench.release")

    async def wait_running(self, endpoint: Endpoint, count: int, timeout_s: float) -> None:
        return None  # the R reply is sent once the connection is waiting


class JobmonitorTarget(_WireTarget):
    """``python -m jobmonitor serve`` with ``bench_jobs.py``; skipped until the server exists.

    ``synchronous`` is the SQLite store's ``--sqlite-synchronous``.  A ``kept``
    target runs the jobs scenario only, on kept connections (``_sys_KeepOpen``):
    monitored jobs one after another on each client's connection, then
    fire-and-forget submits pipelined ``wire.PIPELINE_DEPTH`` deep.
    """

    def __init__(self, store: str = "memory://", max_running: int = 10_000, *,
                 synchronous: str = "full", kept: bool = False,
                 scenarios: frozenset[str] = frozenset({"stream", "fanout", "jobs", "held"})
                 ) -> None:
        super().__init__()
        self.store = store
        self.max_running = max_running
        self.synchronous = synchronous
        self.kept = kept
        self.scenarios = frozenset({"jobs"}) if kept else scenarios
        kinds = [] if store == "memory://" else [store.split(":")[0]]
        if store != "memory://" and synchronous != "full":
            kinds[-1] += f" {synchronous}"
        if kept:
            kinds.append("kept conns")
        self.name = f"jobmonitor ({', '.join(kinds)})" if kinds else "jobmonitor"
        self.description = f"jobmonitor serve --store {store}"
        if store != "memory://":
            self.description += f" --sqlite-synchronous {synchronous}"
        if kept:
            self.description += (f"; kept client connections, fire-and-forget submits "
                                 f"{wire.PIPELINE_DEPTH} in flight")
        self._import_error: str | None = None
        self._release_dir: tempfile.TemporaryDirectory[str] | None = None

    def unavailable(self) -> str | None:
        if not (REPO_DIR / "jobmonitor" / "server" / "server.py").is_file():
            return "jobmonitor/server/server.py is missing"
        if self._import_error is None:
            # One check up front instead of one failed start per scenario.
            probe = subprocess.run([sys.executable, "-c", "import jobmonitor.server.server"],
                                   env=self.env(), cwd=str(REPO_DIR), capture_output=True,
                                   text=True, timeout=60)
            lines = probe.stderr.strip().splitlines()
            self._import_error = lines[-1] if probe.returncode and lines else ""
        if self._import_error:
            return f"jobmonitor cannot be imported by this python: {self._import_error}"
        return None

    def argv(self, sizes: Sizes | None = None) -> list[str]:
        return [sys.executable, "-m", "jobmonitor", "serve", "--host", "127.0.0.1",
                "--port", "0", "--jobs", str(BENCH_DIR / "bench_jobs.py"),
                "--store", self._store_url(), "--max-running", str(self.max_running),
                "--max-connections", str(max(20_000, self.max_running + 1000)),
                "--sqlite-synchronous", self.synchronous, "--log-level", "warning"]

    def _store_url(self) -> str:
        """``sqlite`` means a new database for every server start (in its temp folder)."""
        if self.store != "sqlite":
            return self.store
        assert self._release_dir is not None, "the sqlite target makes its file at start"
        return "sqlite:///" + os.path.join(self._release_dir.name, "bench.db")

    def env(self) -> dict[str, str]:
        # The repository first on the path, so an uninstalled checkout works too.
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_DIR),
                                                          env.get("PYTHONPATH")]))
        return env

    async def run(self, scenario: str, endpoint: Endpoint, sizes: Sizes) -> dict[str, float]:
        if scenario == "jobs" and self.kept:
            return await run_jobs_scenario(endpoint, sizes, wire.run_jobs_kept,
                                           wire.run_submits_pipelined, self.idle)
        return await super().run(scenario, endpoint, sizes)

    async def start(self) -> Endpoint:
        self._release_dir = tempfile.TemporaryDirectory(prefix="jobmonitor-bench-")
        try:
            return await super().start()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        await super().stop()
        if self._release_dir is not None:
            self._release_dir.cleanup()
            self._release_dir = None

    # -- Releaser: bench_jobs.py waits for a file to appear

    def _path(self, group: str) -> str:
        assert self._release_dir is not None
        return os.path.join(self._release_dir.name, group)

    def params(self, group: str) -> dict[str, str]:
        return {"release": self._path(group)}

    async def release(self, endpoint: Endpoint, group: str) -> None:
        with open(self._path(group), "w", encoding="ascii") as marker:
            marker.write(f"{time.time()}\n")

    async def wait_running(self, endpoint: Endpoint, count: int, timeout_s: float) -> None:
        async def running() -> bool:
            lengths = await _queue_lengths(endpoint)
            return lengths.get("Running", 0) >= count and lengths.get("Queued", 1) == 0

        await wait_until(running, timeout_s, f"{count} bench.hold jobs running",
                         interval_s=0.05)

    async def idle(self, endpoint: Endpoint) -> bool:
        lengths = await _queue_lengths(endpoint)
        return lengths.get("Running", 1) == 0 and lengths.get("Queued", 1) == 0


async def _queue_lengths(endpoint: Endpoint) -> dict[str, int]:
    """GetJobQueueLen: ``Queued`` and ``Running``."""
    reader, writer = await asyncio.open_connection(endpoint.host, endpoint.port)
    try:
        writer.write(wire.command_packet("GetJobQueueLen"))
        text = (await asyncio.wait_for(reader.read(), 10)).decode(errors="replace")
    finally:
        writer.close()
    values = {}
    for line in text.splitlines():
        key, _, value = line[10:].partition(":")
        if value.strip().isdigit():
            values[key.strip()] = int(value)
    return values


# -- the goals -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Goal:
    """One target of the project: ``ours`` against ``theirs`` (a target's name) on
    ``metric`` should reach ``ratio`` (at least, or at most when ``lower`` is
    better); with no ``theirs``, ``ratio`` is a bound on the metric itself."""

    what: str
    scenario: str
    metric: str
    ours: str
    theirs: str | None
    ratio: float
    lower: bool = False


#: Issue 21's table.  Every SQLite row is compared with beanstalkd at the same
#: durability: synchronous=full with a binlog fsynced at every write, normal with
#: one never fsynced.  (The 3M-line stalled-reader goal is a test:
#: ``make soak``.)
GOALS: tuple[Goal, ...] = (
    Goal("tiny jobs, kept connections, memory store", "jobs", "jobs_per_s",
         "jobmonitor (kept conns)", "gearmand (persistent conns)", 1.0),
    Goal("... and their p99 latency", "jobs", "p99_ms",
         "jobmonitor (kept conns)", "gearmand (persistent conns)", 1.0, lower=True),
    Goal("fire-and-forget submits, kept and pipelined, memory store", "jobs", "submits_per_s",
         "jobmonitor (kept conns)", "beanstalkd (pipelined submits)", 0.75),
    Goal("tiny jobs, SQLite full", "jobs", "jobs_per_s",
         "jobmonitor (sqlite, kept conns)", "beanstalkd (binlog, fsync)", 1.0),
    Goal("tiny jobs, SQLite normal", "jobs", "jobs_per_s",
         "jobmonitor (sqlite normal, kept conns)", "beanstalkd (binlog, no fsync)", 1.0),
    Goal("tiny jobs, a connection per job, memory store", "jobs", "jobs_per_s",
         "jobmonitor", "bare uvloop", 0.85),
    Goal("stream, SQLite store", "stream", "lines_per_s",
         "jobmonitor (sqlite)", "gearmand", 1.0),
    Goal("held monitored jobs, KiB each", "held", "kb_per_conn", "jobmonitor", None, 5.0,
         lower=True),
)


def goal_table(results: Sequence[Result], goals: Sequence[Goal] = GOALS) -> str:
    """How the medians of ``results`` measure up to each goal, as a Markdown table
    (a goal whose rows did not run says so)."""
    medians = {(r.scenario, r.target, name): stats["median"]
               for r in results if r.samples for name, stats in r.summary().items()}
    rows = ["| goal | ours | theirs | ratio | target | met |", "|---|---:|---:|---:|---:|---|"]
    for goal in goals:
        ours = medians.get((goal.scenario, goal.ours, goal.metric))
        theirs = (medians.get((goal.scenario, goal.theirs, goal.metric)) if goal.theirs
                  else 1.0)
        label = f"{goal.what} ({goal.metric}: {goal.ours}" + (
            f" / {goal.theirs})" if goal.theirs else ")")
        times = "\N{MULTIPLICATION SIGN}" if goal.theirs else ""
        wanted = f"{'≤' if goal.lower else '≥'} {goal.ratio:g}{times}"
        if ours is None or theirs is None or not theirs:
            rows.append(f"| {label} | | | | {wanted} | not measured |")
            continue
        ratio = ours / theirs
        met = ratio <= goal.ratio if goal.lower else ratio >= goal.ratio
        shown = f"{ratio:.2f}{times}"
        rows.append(f"| {label} | {format_value(ours)} | "
                    f"{format_value(theirs) if goal.theirs else ''} | {shown} | {wanted} | "
                    f"{'yes' if met else 'no'} |")
    return "\n".join(rows)
