"""Run the comparison benchmarks: jobmonitor, its peers and the bare asyncio baseline.

    python benchmarks/run.py                       # every scenario, full sizes
    python benchmarks/run.py --quick --scenario stream
    python benchmarks/run.py --scenario jobs --runs 3 --target gearmand

Prints progress on stderr and a Markdown table (median, min and max over the
runs) on stdout, then how the runs measure up to the project's goals
(``targets.GOALS``), and writes every sample to ``benchmarks/results/latest.json``
(or ``--json FILE``).  A target whose server is missing (a peer not
installed, jobmonitor not importable yet) is skipped with the reason.  Exit
status 1 if any measurement failed or timed out, else 0.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness import (
    FULL_SIZES,
    QUICK_SIZES,
    SCENARIOS,
    Result,
    Sizes,
    Target,
    markdown_table,
    measure,
    raise_fd_limit,
    results_json,
    run_on_loop,
)
from peers import BeanstalkdTarget, GearmandTarget
from targets import BareTarget, JobmonitorTarget, goal_table

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "latest.json"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true",
                        help="small sizes and 2 runs: a smoke test of a few seconds")
    parser.add_argument("--scenario", action="append", choices=SCENARIOS,
                        help="run only this scenario (repeatable; default: all)")
    parser.add_argument("--target", action="append", metavar="TEXT",
                        help="run only targets whose name contains TEXT (repeatable)")
    parser.add_argument("--runs", type=int, help="runs per scenario and target")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, metavar="FILE",
                        help=f"where to write the results (default: {DEFAULT_JSON})")
    sizes = parser.add_argument_group("sizes (defaults: full, or --quick)")
    sizes.add_argument("--stream-lines", type=int, help="lines of the stream job (200000)")
    sizes.add_argument("--fanout-lines", type=int, help="lines of the fan-out job (200000)")
    sizes.add_argument("--fanout-watchers", type=int, help="clients watching it (100)")
    sizes.add_argument("--jobs", type=int,
                       help="tiny jobs in the jobs scenario: monitored, then as many "
                            "fire and forget (20000)")
    sizes.add_argument("--clients", type=int, help="concurrent clients submitting them (50)")
    sizes.add_argument("--held", type=int, help="connections held open on a job (5000)")
    sizes.add_argument("--timeout-s", type=float, help="hard limit of one run (120)")
    sizes.add_argument("--noisy-retries", type=int,
                       help="repeat a run while other processes keep a core more than 20%% "
                            "busy, up to this many times (2; 0 with --quick)")
    setup = parser.add_argument_group("set-up")
    setup.add_argument("--loop", choices=("auto", "asyncio", "uvloop"), default="auto",
                       help="event loop of the load generator and peer workers "
                            "(auto: uvloop when installed)")
    setup.add_argument("--peer-workers", type=int, default=8,
                       help="worker connections for gearmand and beanstalkd (8)")
    setup.add_argument("--gearmand-threads", type=int, default=4,
                       help="gearmand I/O threads (4, its default)")
    setup.add_argument("--jobmonitor-store", action="append", metavar="STORE",
                       help="--store of the jobmonitor server, repeatable: memory:// or "
                            "sqlite (a new database per run); default: both")
    setup.add_argument("--list", action="store_true", help="list the targets and exit")
    return parser


def choose_loop(name: str) -> str:
    if name != "auto":
        return name
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def build_targets(args: argparse.Namespace, loop: str) -> list[Target]:
    stream_only = frozenset({"stream"})
    targets: list[Target] = []
    # Every held job runs at once (it waits for its release): room for all of them.
    room = max(10_000, (args.held or FULL_SIZES.held) + 100)
    for store in args.jobmonitor_store or ("memory://", "sqlite"):
        targets += [JobmonitorTarget(store=store, max_running=room),
                    JobmonitorTarget(store=store, kept=True)]
        if store != "memory://":  # and at the other durability (the jobs scenario only)
            targets += [JobmonitorTarget(store=store, synchronous="normal",
                                         scenarios=frozenset({"jobs"})),
                        JobmonitorTarget(store=store, synchronous="normal", kept=True)]
    targets += [
        GearmandTarget(args.peer_workers, loop, threads=args.gearmand_threads),
        GearmandTarget(args.peer_workers, loop, threads=args.gearmand_threads,
                       persistent=True),
        BeanstalkdTarget(args.peer_workers, loop),
        BeanstalkdTarget(args.peer_workers, loop, pipelined=True),
        BeanstalkdTarget(args.peer_workers, loop, per_connection=True),
        BeanstalkdTarget(args.peer_workers, loop, durable=True),
        BeanstalkdTarget(args.peer_workers, loop, durable=True, fsync=False),
        BeanstalkdTarget(args.peer_workers, loop, durable=True, per_connection=True),
    ]
    for server_loop in ("asyncio", "uvloop"):
        targets += [
            BareTarget(server_loop, 1, stream_only),
            BareTarget(server_loop, 1000, stream_only),
            BareTarget(server_loop, 1000, frozenset({"fanout", "jobs", "held"})),
        ]
    if args.target:
        targets = [t for t in targets if any(text in t.name for text in args.target)]
    return targets


def build_sizes(args: argparse.Namespace) -> Sizes:
    base = QUICK_SIZES if args.quick else FULL_SIZES
    return base.replace(stream_lines=args.stream_lines, fanout_lines=args.fanout_lines,
                        fanout_watchers=args.fanout_watchers, jobs=args.jobs,
                        clients=args.clients, held=args.held, runs=args.runs,
                        timeout_s=args.timeout_s, noisy_retries=args.noisy_retries)


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def run_all(targets: list[Target], scenarios: list[str], sizes: Sizes) -> list[Result]:
    results = []
    for scenario in scenarios:
        for target in targets:
            if scenario in target.scenarios:
                log(f"{scenario}: {target.name}")
                results.append(await measure(target, scenario, sizes, log))
    return results


def main() -> int:
    args = build_parser().parse_args()
    loop = choose_loop(args.loop)
    targets = build_targets(args, loop)
    if args.list:
        for target in targets:
            reason = target.unavailable()
            print(f"{target.name}: {', '.join(sorted(target.scenarios))}"
                  f"{' (skipped: ' + reason + ')' if reason else ''}")
        return 0
    sizes = build_sizes(args)
    scenarios = [s for s in SCENARIOS if not args.scenario or s in args.scenario]
    # Each held job is a connection at both ends, and another for the peers' workers.
    wanted = 2 * sizes.held + 4096
    if "held" in scenarios and raise_fd_limit(wanted) < wanted:
        log(f"the open-file limit stays below {wanted}: held beyond about "
            f"{(raise_fd_limit() - 4096) // 2} connections will fail here")
    else:
        raise_fd_limit()
    results = run_on_loop(loop, run_all(targets, scenarios, sizes))
    table = markdown_table(results)
    print(table)
    print()
    print(goal_table(results))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    described = {t.name: t.description for t in targets if t.description}
    args.json.write_text(results_json(results, sizes, {
        "load_generator_loop": loop, "quick": args.quick, "targets": described}) + "\n")
    log(f"results written to {args.json}")
    return 1 if any(r.status in ("error", "timeout") for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
