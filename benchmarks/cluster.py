"""The cluster on PostgreSQL against one SQLite server and against procrastinate.

    python benchmarks/cluster.py               # full size, 3 runs of each
    python benchmarks/cluster.py --quick       # a quick look
    python benchmarks/cluster.py --postgres postgresql://USER@HOST:PORT/DB

Starts its own PostgreSQL (Debian's server binaries, as the tests do, with
fsync on, so a commit is as durable as SQLite's ``synchronous=full``) unless
given one, and jobmonitor nodes on 127.0.0.1 (``--store postgresql://...``,
each target on a schema of its own).  Scenarios, each measured in the same run:

* **tiny jobs**: monitored no-op jobs, a connection each, from ``--clients``
  clients spread over the nodes: one SQLite server; one PostgreSQL node; two
  PostgreSQL nodes; procrastinate with one and with two worker processes of
  concurrency 10 on the same PostgreSQL (jobs deferred by as many clients).
* **stream**: one job's lines to its submitter, SQLite against one PostgreSQL node.
* **cross-node fan-out**: a job that runs on node B (node A's one slot is
  taken) watched by ``--watchers`` connections to node A;
  lines/s delivered in all, and each stamped line's delay from the moment the
  job said it to its delivery (which includes the wait for its commit).  Node A
  has one slot, taken by a job that waits until the end, so the watched job
  runs on node B.  Twice: the job as fast as it can (the delay then is mostly
  the backlog of its lines still to be delivered), and the job paced so that
  1.1M lines/s are delivered in all (the delay then is the cluster's own).

Prints a Markdown table of the medians and how the issue's targets fare.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH_DIR), str(BENCH_DIR.parent)]

import wire  # noqa: E402
from harness import Endpoint, percentile, raise_fd_limit  # noqa: E402
from peers import procrastinate_peer  # noqa: E402
from targets import JobmonitorTarget  # noqa: E402

from tests.support.postgres import PostgresServer, find_bin_dir  # noqa: E402

STAMP_EVERY = 1000
#: Lines/s delivered in all in the paced fan-out (a little over the issue's 1M).
PACED_DELIVERY = 1_100_000


class Node(JobmonitorTarget):
    """One jobmonitor server process: a cluster node on PostgreSQL, or SQLite."""

    def __init__(self, store: str, node_name: str, max_running: int = 10_000) -> None:
        super().__init__(store, max_running)
        self.node_name = node_name

    def argv(self, sizes: object = None) -> list[str]:
        return [*super().argv(), "--node-name", self.node_name]


async def start_nodes(nodes: list[Node]) -> list[Endpoint]:
    endpoints = []
    for node in nodes:
        endpoints.append(await node.start())
    return endpoints


async def stop_nodes(nodes: list[Node]) -> None:
    for node in nodes:
        await node.stop()


# -- scenarios ------------------------------------------------------------------------

async def tiny_jobs(endpoints: list[Endpoint], jobs: int, clients: int) -> dict[str, float]:
    """``jobs`` monitored no-op jobs, a connection each; client ``i`` talks to
    node ``i mod n``."""
    packet = wire.submit_packet("bench.tiny")
    numbers = iter(range(jobs))
    latencies: list[float] = []

    async def client(endpoint: Endpoint) -> None:
        for _ in numbers:
            started = time.perf_counter()
            protocol = await wire.exchange(endpoint, packet, "bench.tiny")
            latencies.append(time.perf_counter() - started)
            if not protocol.ended:
                raise RuntimeError("bench.tiny: connection closed before the ended line")

    started = time.perf_counter()
    await asyncio.gather(*(client(endpoints[i % len(endpoints)]) for i in range(clients)))
    elapsed = time.perf_counter() - started
    return {"jobs_per_s": jobs / elapsed, "p50_ms": 1000 * percentile(latencies, 0.5),
            "p99_ms": 1000 * percentile(latencies, 0.99)}


async def _watch(endpoint: Endpoint, packet: bytes, attached: asyncio.Future[str],
                 delays: list[float]) -> tuple[str, int]:
    """Send ``packet`` (a monitored submit or a MonitorJob) and read the stream to its
    end; return the transaction ID and the number of J lines.  ``attached`` gets the
    transaction ID once the reply came; stamped lines' delays go into ``delays``."""
    reader, writer = await asyncio.open_connection(endpoint.host, endpoint.port, limit=1 << 20)
    try:
        writer.write(packet)
        reply = await reader.readuntil(b"\r\n")
        if not reply.startswith(b"R0000000: "):
            raise RuntimeError(f"fan-out: {reply[:200]!r}")
        attached.set_result(reply[10:].strip().decode())
        lines = 0
        rest = b""
        on_b = False  # (a job claimed by a node says so: "Machine name: <node>")
        while chunk := await reader.read(1 << 18):
            now = time.time()
            data = rest + chunk
            cut = data.rfind(b"\n") + 1
            rest = data[cut:]
            whole = data[:cut]
            lines += whole.count(b"\n")
            on_b = on_b or b"Machine name: node-b" in whole
            at = whole.find(b"J0000100: t=")
            while at >= 0:
                delays.append(now - float(whole[at + 12:at + 29].rstrip(b"x")))
                at = whole.find(b"J0000100: t=", at + 1)
        if not on_b:
            raise RuntimeError("fan-out: the job did not run on node B")
        return reply[10:].strip().decode(), lines
    finally:
        writer.close()


async def cross_node_fanout(node_a: Node, endpoint_a: Endpoint, lines: int,
                            watchers: int, lines_per_s: float = 0.0) -> dict[str, float]:
    """One job run by another node, its submitter and ``watchers - 1`` more
    watchers on node A; every watcher must get every line.  ``lines_per_s``:
    the job says its lines no faster (0: as fast as it can)."""
    group = f"fanout-{uuid.uuid4().hex[:12]}"
    block = f"block-{uuid.uuid4().hex[:12]}"  # node A's one slot: taken until the end
    held = await wire.exchange(endpoint_a, wire.submit_packet(
        "bench.hold", monitor=False, **node_a.params(block)), "bench.hold")
    block_id = wire._check_reply(held.reply.result(), "bench.hold")
    delays: list[float] = []
    loop = asyncio.get_running_loop()
    submitted: asyncio.Future[str] = loop.create_future()
    submit = wire.submit_packet("bench.fanout_stamped", lines=str(lines),
                                stamp_every=str(STAMP_EVERY), lines_per_s=str(lines_per_s),
                                **node_a.params(group))
    first = asyncio.ensure_future(_watch(endpoint_a, submit, submitted, delays))
    monitor = wire.command_packet("MonitorJob", _sys_TransactionID=await submitted)
    gates = [loop.create_future() for _ in range(watchers - 1)]
    others = [asyncio.ensure_future(_watch(endpoint_a, monitor, gate, delays)) for gate in gates]
    await asyncio.gather(*gates)
    started = time.perf_counter()
    await node_a.release(endpoint_a, group)
    results = await asyncio.gather(first, *others)
    elapsed = time.perf_counter() - started
    await node_a.release(endpoint_a, block)
    # (Node A's slot is free again only once its job has ended: the next run's
    # job would otherwise be held there, and run on node A.)
    await wire.exchange(endpoint_a, wire.command_packet(
        "MonitorJob", _sys_TransactionID=block_id), "MonitorJob")
    short = [count for _, count in results if count < lines]
    if short:
        raise RuntimeError(f"fan-out: {len(short)} watchers got too few lines ({short[0]})")
    return {"lines_per_s": lines * watchers / elapsed,
            "p99_delay_ms": 1000 * percentile(delays, 0.99),
            "max_delay_ms": 1000 * max(delays)}


# -- running it all -------------------------------------------------------------------

Measure = Callable[[], Awaitable[dict[str, float]]]


async def median_of(runs: int, measure: Measure) -> dict[str, float]:
    samples = [await measure() for _ in range(runs)]
    return {name: statistics.median(s[name] for s in samples) for name in samples[0]}


class Bench:
    def __init__(self, postgres_url: str, args: argparse.Namespace) -> None:
        self.postgres_url = postgres_url
        self.args = args
        self.results: dict[tuple[str, str], dict[str, float]] = {}
        self._schemas = 0

    def pg(self) -> str:
        self._schemas += 1
        return f"{self.postgres_url}?schema=bench_{uuid.uuid4().hex[:8]}"

    def report(self, scenario: str, target: str, figures: dict[str, float]) -> None:
        self.results[(scenario, target)] = figures
        shown = ", ".join(f"{k} {v:,.1f}" for k, v in figures.items())
        print(f"  {scenario:<20} {target:<40} {shown}", flush=True)

    async def nodes_run(self, scenario: str, target: str, nodes: list[Node],
                        measure: Callable[[list[Endpoint]], Awaitable[dict[str, float]]]) -> None:
        endpoints = await start_nodes(nodes)
        try:
            self.report(scenario, target, await median_of(
                self.args.runs, lambda: measure(endpoints)))
        finally:
            await stop_nodes(nodes)

    async def tiny(self) -> None:
        args = self.args

        def run(endpoints: list[Endpoint]) -> Awaitable[dict[str, float]]:
            return tiny_jobs(endpoints, args.jobs, args.clients)

        await self.nodes_run("tiny jobs", "jobmonitor, SQLite, 1 server",
                             [Node("sqlite", "sqlite-node")], run)
        await self.nodes_run("tiny jobs", "jobmonitor, PostgreSQL, 1 node",
                             [Node(self.pg(), "node-a")], run)
        url = self.pg()
        await self.nodes_run("tiny jobs", "jobmonitor, PostgreSQL, 2 nodes",
                             [Node(url, "node-a"), Node(url, "node-b")], run)
        reason = procrastinate_peer.unavailable()
        if reason:
            print(f"  procrastinate skipped: {reason}")
            return
        database = await _database(self.postgres_url, "bench_procrastinate")
        for workers in (1, 2):
            self.report("tiny jobs", f"procrastinate, {workers} worker process"
                        + ("es" if workers > 1 else ""),
                        await median_of(args.runs, lambda w=workers: procrastinate_peer.
                                        run_tiny_jobs(database, args.jobs, args.clients, w)))

    async def stream(self) -> None:
        lines = self.args.stream_lines

        def run(endpoints: list[Endpoint]) -> Awaitable[dict[str, float]]:
            return wire.run_stream(endpoints[0], lines)

        await self.nodes_run("stream", "jobmonitor, SQLite", [Node("sqlite", "s")], run)
        await self.nodes_run("stream", "jobmonitor, PostgreSQL, 1 node",
                             [Node(self.pg(), "node-a")], run)

    async def fanout(self) -> None:
        url = self.pg()
        node_a, node_b = Node(url, "node-a", max_running=1), Node(url, "node-b")

        watchers = self.args.watchers
        # Paced: the job says lines at the rate that makes 1M lines/s delivered in
        # all, so the delay is the cluster's, not a backlog's of a faster job.
        paced = PACED_DELIVERY / watchers

        def run(endpoints: list[Endpoint]) -> Awaitable[dict[str, float]]:
            return cross_node_fanout(node_a, endpoints[0], self.args.fanout_lines, watchers)

        def run_paced(endpoints: list[Endpoint]) -> Awaitable[dict[str, float]]:
            return cross_node_fanout(node_a, endpoints[0], self.args.paced_lines, watchers,
                                     paced)

        await self.nodes_run("cross-node fan-out",
                             f"job on node B, {watchers} watchers on node A",
                             [node_a, node_b], run)
        await self.nodes_run("cross-node fan-out",
                             f"... the job paced at {paced:,.0f} lines/s",
                             [node_a, node_b], run_paced)

    def verdict(self) -> list[str]:
        r = self.results

        def get(scenario: str, target: str, name: str) -> float | None:
            return r.get((scenario, target), {}).get(name)

        lines = []
        two = get("tiny jobs", "jobmonitor, PostgreSQL, 2 nodes", "jobs_per_s")
        sqlite = get("tiny jobs", "jobmonitor, SQLite, 1 server", "jobs_per_s")
        peer = get("tiny jobs", "procrastinate, 2 worker processes", "jobs_per_s")
        if two and peer:
            lines.append(f"tiny jobs, 2 nodes vs procrastinate (2 workers): {two / peer:.1f}x "
                         "(target >= 10x)")
        if two and sqlite:
            lines.append(f"tiny jobs, 2 nodes vs SQLite: {two / sqlite:.2f}x (target >= 0.5x)")
        pg_stream = get("stream", "jobmonitor, PostgreSQL, 1 node", "lines_per_s")
        sqlite_stream = get("stream", "jobmonitor, SQLite", "lines_per_s")
        if pg_stream and sqlite_stream:
            lines.append(f"stream, PostgreSQL vs SQLite: {pg_stream / sqlite_stream:.2f}x "
                         "(target >= 0.5x)")
        for (scenario, _), figures in r.items():
            if scenario == "cross-node fan-out":
                lines.append(f"cross-node fan-out: {figures['lines_per_s'] / 1e6:.2f}M lines/s "
                             f"(target >= 1M), p99 delay {figures['p99_delay_ms']:.0f} ms "
                             "(target <= 100 ms)")
        return lines


async def _database(url: str, name: str) -> str:
    """A database of its own for procrastinate (its tables go in ``public``)."""
    import asyncpg

    connection = await asyncpg.connect(url)
    try:
        if not await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return url.rsplit("/", 1)[0] + "/" + name


async def main_async(args: argparse.Namespace) -> int:
    raise_fd_limit()
    server = None
    url = args.postgres
    if url is None:
        bin_dir = find_bin_dir()
        if bin_dir is None:
            print("cluster: PostgreSQL's server binaries were not found "
                  "(install Debian's postgresql)", file=sys.stderr)
            return 2
        server = PostgresServer(bin_dir, fsync=True)
        server.init()
        server.start()
        url = server.url()
    try:
        bench = Bench(url, args)
        print(f"cluster benchmarks: {args.runs} run(s) each, medians", flush=True)
        for scenario in args.scenarios:
            await getattr(bench, scenario)()
        print()
        for line in bench.verdict():
            print(line)
    finally:
        if server is not None:
            server.stop()
            server.remove()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", help="a PostgreSQL URL to use instead of starting one")
    parser.add_argument("--quick", action="store_true", help="small sizes, one run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--stream-lines", type=int, default=500_000)
    parser.add_argument("--fanout-lines", type=int, default=100_000)
    parser.add_argument("--paced-lines", type=int, default=50_000)
    parser.add_argument("--watchers", type=int, default=100)
    parser.add_argument("--scenarios", nargs="+", default=["tiny", "stream", "fanout"],
                        choices=["tiny", "stream", "fanout"])
    args = parser.parse_args()
    if args.quick:
        args.runs, args.jobs, args.stream_lines, args.fanout_lines, args.watchers = (
            1, 500, 50_000, 10_000, 10)
        args.paced_lines = 20_000
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
