"""Queues and priorities against the single queue, on one jobmonitor server.

    python benchmarks/queues.py                 # 20 000 jobs, 50 clients, 5 runs
    python benchmarks/queues.py --quick         # a smoke test, a few seconds
    python benchmarks/queues.py --jobs 5000 --runs 3 --json out.json
    python benchmarks/queues.py --engine        # the engine alone, in this process

Two variants of the same work, on the same server and in the same run,
alternating (the order flips every run, so neither always goes first):

* ``single``: every job names no queue and no priority (the one ``default`` line);
* ``queues``: job ``i`` goes to queue ``q{i % 4}`` at priority 1, 5 or 9
  (``(i // 4) % 3``): 4 queues and 3 priorities, all in use at once.

Each variant has two phases: ``monitored``, K tiny jobs from C concurrent
clients, each followed to its end (jobs/s, p50 and p99 latency from connect to
the ended line); and ``backlog``, K fire-and-forget submits as fast as C
clients can send them, then the wait until the server has run them all (jobs/s
from the first submit to an empty server): with ``--max-running 8`` thousands
of jobs wait at once, so the waiting lines are deep.  Besides the rates, each
phase records the server process's CPU time per job (user + system, from
``/proc``): on a machine shared with other work the rates swing with the
neighbours' load, the CPU a job costs the server much less.  The table gives
each variant's median over the runs and the ratio ``queues / single``.

``--engine`` measures the part queues can change, without sockets or packets:
the engine, in this process, with the memory store, is handed K jobs of a
handler that does nothing (``Engine.submit``, each with its ``Placement`` in
the ``queues`` variant) and runs them all, ``max_running`` at a time, while K
minus ``max_running`` wait; CPU time of this process (``time.process_time``),
the least of ``--runs`` interleaved rounds per variant (the least disturbed).  Everything
runs on loopback; the server is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import percentile  # noqa: E402
from processes import Endpoint, ServerProcess, wait_until  # noqa: E402
from wire import _check_reply, _open, command_packet, exchange, submit_packet  # noqa: E402

READY = r"listening on (?P<host>\S+):(?P<port>\d+)"
QUEUES = 4
PRIORITIES = ("1", "5", "9")


def packets(variant: str, *, monitor: bool) -> list[bytes]:
    """The submit packets of a variant, one per job kind (used round robin)."""
    if variant == "single":
        return [submit_packet("bench.tiny", monitor=monitor)]
    return [submit_packet("bench.tiny", monitor=monitor, _sys_QueueName=f"q{i % QUEUES}",
                          _sys_Priority=PRIORITIES[(i // QUEUES) % len(PRIORITIES)])
            for i in range(QUEUES * len(PRIORITIES))]


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def monitored(endpoint: Endpoint, variant: str, jobs: int, clients: int) -> dict[str, float]:
    kinds = packets(variant, monitor=True)
    numbers = iter(range(jobs))
    latencies: list[float] = []

    async def client() -> None:
        for number in numbers:
            started = time.perf_counter()
            protocol = await exchange(endpoint, kinds[number % len(kinds)], "bench.tiny")
            latencies.append(time.perf_counter() - started)
            if not protocol.ended:
                raise RuntimeError("bench.tiny: closed before the ended line")

    started, cpu = time.perf_counter(), cpu_s(endpoint.pid)
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.perf_counter() - started
    return {"jobs_per_s": jobs / elapsed, "p50_ms": percentile(latencies, 0.5) * 1000,
            "p99_ms": percentile(latencies, 0.99) * 1000,
            "server_cpu_us_per_job": (cpu_s(endpoint.pid) - cpu) / jobs * 1e6}


async def backlog(endpoint: Endpoint, variant: str, jobs: int, clients: int) -> dict[str, float]:
    kinds = packets(variant, monitor=False)
    numbers = iter(range(jobs))

    async def client() -> None:
        for number in numbers:
            protocol = await _open(endpoint, kinds[number % len(kinds)])
            try:
                _check_reply(await protocol.reply, "bench.tiny (not monitored)")
            finally:
                assert protocol.transport is not None
                protocol.transport.close()

    started, cpu = time.perf_counter(), cpu_s(endpoint.pid)
    await asyncio.gather(*(client() for _ in range(clients)))
    submitted = time.perf_counter() - started
    await wait_until(lambda: idle(endpoint), 300, "the backlog run", interval_s=0.01)
    return {"backlog_jobs_per_s": jobs / (time.perf_counter() - started),
            "submits_per_s": jobs / submitted,
            "backlog_server_cpu_us_per_job": (cpu_s(endpoint.pid) - cpu) / jobs * 1e6}


async def idle(endpoint: Endpoint) -> bool:
    """Whether the server has no job queued or running (``GetJobQueueLen``)."""
    reader, writer = await asyncio.open_connection(endpoint.host, endpoint.port)
    try:
        writer.write(command_packet("GetJobQueueLen"))
        reply = await reader.read()
    finally:
        writer.close()
    return reply == b"R0000000- Queued: 0\r\nR0000000: Running: 0\r\n"


async def main(args: argparse.Namespace) -> int:
    server = ServerProcess([sys.executable, "-m", "jobmonitor", "serve", "--host", "127.0.0.1",
                            "--port", "0", "--store", "memory://", "--max-running",
                            str(args.max_running), "--max-finished-in-memory", "1000",
                            "--max-connections", "2000", "--jobs",
                            str(HERE / "bench_jobs.py")],
                           name="jobmonitor", cwd=str(HERE.parent))
    endpoint = await server.start(ready_pattern=READY)
    samples: dict[str, list[dict[str, float]]] = {"single": [], "queues": []}
    try:
        await monitored(endpoint, "queues", min(args.jobs, 2000), args.clients)  # warm-up
        for run in range(args.runs):
            order = ("single", "queues") if run % 2 == 0 else ("queues", "single")
            for variant in order:
                sample = await monitored(endpoint, variant, args.jobs, args.clients)
                sample.update(await backlog(endpoint, variant, args.jobs, args.clients))
                samples[variant].append(sample)
                print(f"run {run + 1} {variant}: " + ", ".join(
                    f"{key} {value:,.1f}" for key, value in sample.items()), file=sys.stderr)
    finally:
        await server.stop()
    report(samples, args)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "samples": samples},
                                              indent=1))
    return 0


async def engine_round(variant: str, jobs: int, max_running: int) -> float:
    """CPU seconds for the engine to take and run ``jobs`` no-op jobs."""
    from jobmonitor import Config, JobMonitor
    from jobmonitor.engine.engine import Engine
    from jobmonitor.store.memory import MemoryStore

    app = JobMonitor()

    @app.job("tiny")
    async def tiny(job: object) -> None:
        return None

    engine = Engine(app.handlers, Config(max_running=max_running, max_finished_in_memory=1000),
                    MemoryStore())
    await engine.start()
    kinds: list[object] = [None]
    if variant == "queues":
        from jobmonitor.engine.queues import Placement

        kinds = [Placement(f"q{i % QUEUES}", int(PRIORITIES[(i // QUEUES) % len(PRIORITIES)]))
                 for i in range(QUEUES * len(PRIORITIES))]
    started = time.process_time()
    for number in range(jobs):
        placement = kinds[number % len(kinds)]
        if placement is None:  # (no keyword: runs on an engine from before queues too)
            await engine.submit("tiny", {}, {})
        else:
            await engine.submit("tiny", {}, {}, placement=placement)
    while engine.queued_count or engine.running_count:
        await asyncio.sleep(0)
    elapsed = time.process_time() - started
    await engine.stop(0)
    return elapsed


async def engine_main(args: argparse.Namespace) -> int:
    variants = ("single",) if args.single_only else ("single", "queues")
    best = {variant: float("inf") for variant in variants}
    await engine_round(variants[-1], min(args.jobs, 2000), args.max_running)  # warm-up
    for run in range(args.runs):
        for variant in variants if run % 2 == 0 else variants[::-1]:
            seconds = await engine_round(variant, args.jobs, args.max_running)
            best[variant] = min(best[variant], seconds)
            print(f"round {run + 1} {variant}: {seconds / args.jobs * 1e6:.2f} us/job",
                  file=sys.stderr)
    if args.single_only:
        print(f"engine_cpu_us_per_job, single queue: {best['single'] / args.jobs * 1e6:.2f}")
        return 0
    single, queued = (best[v] / args.jobs * 1e6 for v in ("single", "queues"))
    print(f"The engine alone: {args.jobs} no-op jobs, max_running {args.max_running}, "
          f"least of {args.runs} rounds\n")
    print("| metric | single queue | 4 queues x 3 priorities | queues / single |")
    print("|---|---|---|---|")
    print(f"| engine_cpu_us_per_job | {single:.2f} | {queued:.2f} | {queued / single:.3f} |")
    return 0


def report(samples: dict[str, list[dict[str, float]]], args: argparse.Namespace) -> None:
    """Medians, and the best sample of each (the least disturbed by other work:
    the highest rate, the lowest latency or CPU)."""
    print(f"{args.jobs} tiny jobs, {args.clients} clients, max_running {args.max_running}, "
          f"{args.runs} runs\n")
    print("| metric | single queue | 4 queues x 3 priorities | queues / single |")
    print("|---|---|---|---|")
    for key in samples["single"][0]:
        best = max if key.endswith("per_s") else min
        for name, pick in (("median", statistics.median), ("best", best)):
            single = pick(s[key] for s in samples["single"])
            queued = pick(s[key] for s in samples["queues"])
            print(f"| {key} ({name}) | {single:,.1f} | {queued:,.1f} | {queued / single:.3f} |")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--max-running", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="500 jobs, 2 runs")
    parser.add_argument("--json", metavar="FILE", help="write every sample here")
    parser.add_argument("--engine", action="store_true",
                        help="measure the engine alone, in this process (no sockets)")
    parser.add_argument("--single-only", action="store_true",
                        help="with --engine: the single queue only (also runs on an engine "
                             "from before queues, for a baseline)")
    args = parser.parse_args(argv)
    if args.quick:
        args.jobs, args.runs = 500, 2
    return args


if __name__ == "__main__":
    arguments = parse(sys.argv[1:])
    sys.exit(asyncio.run(engine_main(arguments) if arguments.engine else main(arguments)))
