"""Shared machinery of the benchmark suite: sizes, targets, measuring, statistics.

A *target* is one server under test (jobmonitor, a peer such as gearmand, or
the bare asyncio baseline).  It starts a server process, says which scenarios
it can run, and runs one measurement of a scenario, returning a dict of
metrics.  ``measure()`` repeats that ``runs`` times under a hard deadline per
run and folds the samples into median/min/max; a run that overruns its
deadline is recorded as a timeout, never waited for.  Each run also records
how busy *other* processes kept the machine (``CpuWatch``), and a noisy run is
repeated.

Process handling lives in ``processes`` and the table/JSON output in
``report``; both are re-exported here.  Only the standard library is used.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from processes import (
    Endpoint,
    ServerProcess,
    find_binary,
    free_port,
    ping,
    raise_fd_limit,
    rss_kb,
    wait_until,
)
from report import NOISY_PERCENT, OTHERS_CPU, format_value, markdown_table, results_json

__all__ = [
    "SCENARIOS", "LINE", "Sizes", "QUICK_SIZES", "FULL_SIZES", "Endpoint", "Target", "Result",
    "ServerProcess", "CpuWatch", "measure", "percentile", "rss_kb", "free_port", "find_binary",
    "ping", "wait_until", "markdown_table", "results_json", "raise_fd_limit", "job_metrics",
    "submit_metrics", "drain", "run_jobs_scenario", "run_on_loop",
]

SCENARIOS = ("stream", "fanout", "jobs", "held")

# The 52-byte status line every target sends (and the peers relay) per job line.
LINE_TEXT = "x" * 40
LINE = f"J0000100: {LINE_TEXT}\r\n".encode()
assert len(LINE) == 52


@dataclass(frozen=True)
class Sizes:
    """How big each scenario is, how often it runs and how long a run may take."""

    stream_lines: int = 200_000
    fanout_lines: int = 200_000
    fanout_watchers: int = 100
    jobs: int = 20_000
    clients: int = 50
    held: int = 5_000
    runs: int = 5
    timeout_s: float = 120.0
    noisy_retries: int = 2

    def replace(self, **changes: Any) -> Sizes:
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


FULL_SIZES = Sizes()
QUICK_SIZES = Sizes(stream_lines=20_000, fanout_lines=2_000, fanout_watchers=10, jobs=500,
                    clients=10, held=200, runs=2, timeout_s=20.0, noisy_retries=0)


class Target:
    """One server under test.  Subclasses fill in ``start``, ``stop`` and ``run``."""

    name = "target"
    scenarios: frozenset[str] = frozenset()
    description = ""

    def unavailable(self) -> str | None:
        """Why this target cannot run here (missing binary...), or None."""
        return None

    def fresh_server_per_run(self, scenario: str) -> bool:
        """Memory scenarios need a new server each run, so growth is not hidden by reuse."""
        return scenario == "held"

    async def start(self) -> Endpoint:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def run(self, scenario: str, endpoint: Endpoint, sizes: Sizes) -> dict[str, float]:
        """Measure ``scenario`` once; return metric name -> value."""
        raise NotImplementedError


@dataclass
class Result:
    """Every sample of one scenario on one target, and how the series ended."""

    scenario: str
    target: str
    status: str = "ok"  # ok | skipped | timeout | error
    message: str = ""
    samples: list[dict[str, float]] = field(default_factory=list)

    def summary(self) -> dict[str, dict[str, Any]]:
        names: list[str] = []
        for sample in self.samples:
            names += [name for name in sample if name not in names]
        out = {}
        for name in names:
            values = [s[name] for s in self.samples if name in s]
            out[name] = {"median": statistics.median(values), "min": min(values),
                         "max": max(values), "samples": values}
        return out


async def measure(target: Target, scenario: str, sizes: Sizes,
                  log: Callable[[str], None] = print) -> Result:
    """Run ``scenario`` on ``target`` ``sizes.runs`` times, each under ``sizes.timeout_s``.

    A run during which other processes were busy (see ``CpuWatch``) is repeated
    up to ``sizes.noisy_retries`` times; the quietest attempt is kept.
    """
    result = Result(scenario, target.name)
    reason = target.unavailable()
    if reason:
        result.status, result.message = "skipped", reason
        log(f"skip {target.name} {scenario}: {reason}")
        return result
    runner = _Runner(target, scenario, sizes)
    try:
        for run in range(1, sizes.runs + 1):
            sample = await runner.quietest_sample(run, log)
            if sample is None:
                result.status = "timeout"
                result.message = f"run {run} exceeded {sizes.timeout_s:g} s"
                break
            result.samples.append(sample)
            log(f"  {target.name} {scenario} run {run}: " + ", ".join(
                f"{k}={format_value(v)}" for k, v in sample.items()))
    except Exception as exc:  # noqa: BLE001 - a broken target must not stop the others
        result.status, result.message = "error", f"{type(exc).__name__}: {exc}"
    finally:
        await runner.stop()
    if result.status != "ok":
        log(f"  {target.name} {scenario}: {result.status}: {result.message}")
    return result


class _Runner:
    """Keeps a target's server up across runs (or fresh per run) and takes samples."""

    def __init__(self, target: Target, scenario: str, sizes: Sizes) -> None:
        self.target, self.scenario, self.sizes = target, scenario, sizes
        self.endpoint: Endpoint | None = None
        self.used = False
        self.busiest_others: list[str] = []

    async def stop(self) -> None:
        if self.endpoint is not None:
            self.endpoint = None
            await self.target.stop()

    async def _ready(self) -> Endpoint:
        if self.used and self.target.fresh_server_per_run(self.scenario):
            await self.stop()
        if self.endpoint is None:
            self.endpoint = await asyncio.wait_for(self.target.start(), 60)
        self.used = True
        return self.endpoint

    async def sample(self) -> dict[str, float] | None:
        endpoint = await self._ready()
        watch = CpuWatch()
        try:
            sample = await asyncio.wait_for(
                self.target.run(self.scenario, endpoint, self.sizes), self.sizes.timeout_s)
        except TimeoutError:
            return None
        others = watch.others_percent()
        if others is not None:
            sample[OTHERS_CPU] = others
        self.busiest_others = watch.busiest_others
        return sample

    async def quietest_sample(self, run: int,
                              log: Callable[[str], None]) -> dict[str, float] | None:
        best: dict[str, float] | None = None
        for attempt in range(1 + self.sizes.noisy_retries):
            sample = await self.sample()
            if sample is None:
                return None
            others = sample.get(OTHERS_CPU, 0.0)
            if best is None or others < best.get(OTHERS_CPU, 0.0):
                best = sample
            if others <= NOISY_PERCENT:
                break
            busiest = ", ".join(self.busiest_others) or "short-lived processes"
            log(f"  {self.target.name} {self.scenario} run {run}: other processes used "
                f"{others:.0f}% of a core (busiest: {busiest}); "
                + ("retrying" if attempt < self.sizes.noisy_retries else "keeping the quietest"))
        return best


# -- statistics ----

MIN_WATCH_S = 0.3  # /proc/stat counts 10 ms ticks: shorter runs cannot tell
_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


class CpuWatch:
    """CPU used during a run by processes that are not ours.

    Other work on a 2-core machine (a test suite, a build) skews every number,
    so each sample records it, in percent of one core: the machine's user and
    system time, minus this process and its descendants (the servers and
    workers), minus kernel threads (ksoftirqd and kworkers mostly carry our
    own loopback traffic).  Processes that come and go during the run are
    caught too, since the machine total includes them.
    """

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.machine, self.processes = _machine_busy(), _processes()
        self.busiest_others: list[str] = []

    def others_percent(self) -> float | None:
        """None for runs too short to tell (the machine total is sampled in ticks)."""
        elapsed = time.monotonic() - self.started
        if elapsed < MIN_WATCH_S:
            return None
        machine, processes = _machine_busy(), _processes()
        ours = _descendants(processes, os.getpid()) | _descendants(self.processes, os.getpid())
        accounted, foreign = 0, []
        for pid, (ppid, name, ticks) in processes.items():
            used = ticks - self.processes.get(pid, (0, "", 0))[2]
            if pid in ours or pid == 2 or ppid == 2:
                accounted += used
            elif used > 0:
                foreign.append((used, f"{name}[{pid}]"))
        self.busiest_others = [f"{label} {used / _TICKS_PER_S / elapsed * 100:.0f}%"
                               for used, label in sorted(foreign, reverse=True)[:3]]
        return max(0.0, (machine - self.machine - accounted) / _TICKS_PER_S / elapsed * 100)


def _machine_busy() -> int:
    with open("/proc/stat", encoding="ascii") as stat:
        fields = stat.readline().split()
    return sum(int(fields[i]) for i in (1, 2, 3))  # user, nice, system


def _processes() -> dict[int, tuple[int, str, int]]:
    """pid -> (parent pid, name, utime + stime ticks) for every process."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as stat:
                text = stat.read()
        except OSError:
            continue  # gone meanwhile
        name = text[text.find("(") + 1:text.rfind(")")]
        fields = text[text.rfind(")") + 2:].split()
        table[int(entry)] = (int(fields[1]), name, int(fields[11]) + int(fields[12]))
    return table


def _descendants(processes: dict[int, tuple[int, str, int]], root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in processes.items():
        children.setdefault(ppid, []).append(pid)
    found, pending = set(), [root]
    while pending:
        pid = pending.pop()
        found.add(pid)
        pending += children.get(pid, [])
    return found


def job_metrics(jobs: int, latencies: Sequence[float], elapsed: float) -> dict[str, float]:
    """The monitored phase of ``jobs``: jobs/s and latency to the job's end."""
    return {"jobs_per_s": jobs / elapsed, "p50_ms": percentile(latencies, 0.50) * 1000,
            "p99_ms": percentile(latencies, 0.99) * 1000, "elapsed_s": elapsed}


def submit_metrics(submits: int, latencies: Sequence[float], elapsed: float) -> dict[str, float]:
    """The fire-and-forget phase of ``jobs``: submits/s and latency to the acknowledgement."""
    return {"submits_per_s": submits / elapsed,
            "submit_p50_ms": percentile(latencies, 0.50) * 1000,
            "submit_p99_ms": percentile(latencies, 0.99) * 1000, "submit_elapsed_s": elapsed}


async def drain(idle: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> float:
    """Wait until ``idle()`` says the server has no job left; return the seconds it took.

    The submit phase of ``jobs`` leaves jobs running in the background; they
    must be finished before the next measurement, or they would load it.
    """
    started = time.perf_counter()
    await wait_until(idle, timeout_s, what, interval_s=0.02)
    return time.perf_counter() - started


async def run_jobs_scenario(endpoint: Endpoint, sizes: Sizes,
                            run_jobs: Callable[[Endpoint, int, int], Awaitable[dict[str, float]]],
                            run_submits: Callable[[Endpoint, int, int],
                                                  Awaitable[dict[str, float]]],
                            idle: Callable[[Endpoint], Awaitable[bool]]) -> dict[str, float]:
    """The jobs scenario, the same for every target: monitored jobs, then as many
    fire-and-forget submits, then the wait until those are done (``submit_drain_s``)."""
    metrics = await run_jobs(endpoint, sizes.jobs, sizes.clients)
    metrics.update(await run_submits(endpoint, sizes.jobs, sizes.clients))
    metrics["submit_drain_s"] = await drain(lambda: idle(endpoint), sizes.timeout_s,
                                            "background jobs done")
    return metrics


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of ``values`` (``fraction`` in 0..1)."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-fraction * len(ordered) // 1))))
    return ordered[rank - 1]


def run_on_loop(loop: str, coroutine: Awaitable[Any]) -> Any:
    """Run ``coroutine`` to its end on a new ``asyncio`` or ``uvloop`` event loop."""
    if loop == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(coroutine)
    return asyncio.run(coroutine)  # type: ignore[arg-type]
