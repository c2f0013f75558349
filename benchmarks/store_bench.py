"""The durable stores on their own: SQLite against PostgreSQL, one node.

    python benchmarks/store_bench.py                  # 20000 jobs, 200 submitters
    python benchmarks/store_bench.py --jobs 2000 --runs 1
    python benchmarks/store_bench.py --postgres postgresql://USER@HOST/DB

What the engine asks of a store for each job, without the engine or the
network: ``add`` (the acknowledged submit: the store's group commit made it
durable) from many submitters at once, then three lines and the end of the job
(``changed``) and a ``flush``.  The submits are timed (jobs/s acknowledged),
then the whole life.  SQLite writes a new file in a temporary folder with
``synchronous=FULL``; PostgreSQL is either the URL given or a server this
script starts in a temporary folder (Debian's server binaries, as the tests
do) with fsync on, each run on a fresh schema.  Prints a Markdown table of the
median over the runs.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from jobmonitor.store.base import Store  # noqa: E402
from jobmonitor.store.postgres.connect import parse_url  # noqa: E402
from jobmonitor.store.postgres.store import PostgresStore  # noqa: E402
from jobmonitor.store.shared import SharedStore  # noqa: E402
from jobmonitor.store.sqlite.store import SqliteStore  # noqa: E402
from tests.support.postgres import PostgresServer, find_bin_dir  # noqa: E402
from tests.unit.store.test_conformance import FakeJob, job  # noqa: E402


async def one_run(make: Callable[[], Store], jobs: int, submitters: int) -> tuple[float, float]:
    """(acknowledged submits per second, whole lives per second)."""
    store = make()
    await store.open()
    try:
        items = [job(number) for number in range(1, jobs + 1)]
        add = store.add_held if isinstance(store, SharedStore) else store.add
        started = time.perf_counter()

        async def submitter(mine: list[FakeJob]) -> None:
            for item in mine:
                await add(item)

        await asyncio.gather(*(submitter(items[i::submitters]) for i in range(submitters)))
        submitted = time.perf_counter()
        for item in items:
            item.say("one", "two", "three")
            item.finish(time.time())
            store.changed(item)
        await store.flush()
        ended = time.perf_counter()
    finally:
        await store.close()
    return jobs / (submitted - started), jobs / (ended - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--submitters", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--store", action="append", choices=("sqlite", "postgresql"),
                        help="only this store (repeatable; default: both)")
    parser.add_argument("--postgres", metavar="URL",
                        help="a PostgreSQL to use (default: start one in a temporary folder)")
    args = parser.parse_args()
    server = None
    if args.postgres is None:
        bin_dir = find_bin_dir()
        if bin_dir is None:
            print("PostgreSQL's server binaries are not installed", file=sys.stderr)
            return 1
        server = PostgresServer(bin_dir, fsync=True)
        server.init()
        server.start()
    try:
        base = args.postgres or server.url()  # type: ignore[union-attr]
        folder = Path(tempfile.mkdtemp(prefix="jobmonitor-bench-"))
        counter = iter(range(1, 1000))

        def sqlite() -> Store:
            return SqliteStore(str(folder / f"jobs{next(counter)}.db"))

        def postgres() -> Store:
            settings = parse_url(f"{base.split('?')[0]}?schema=bench_{next(counter)}")
            return PostgresStore(settings, node_name="bench")

        print(f"{args.jobs} jobs, {args.submitters} submitters, median of {args.runs} runs\n")
        print("| store | submits acknowledged / s | whole lives / s |")
        print("| --- | ---: | ---: |")
        for name, make in (("sqlite (synchronous=FULL)", sqlite),
                           ("postgresql (fsync on)", postgres)):
            if args.store and name.split()[0] not in args.store:
                continue
            results = [asyncio.run(one_run(make, args.jobs, args.submitters))
                       for _ in range(args.runs)]
            print(f"| {name} | {statistics.median(r[0] for r in results):,.0f} | "
                  f"{statistics.median(r[1] for r in results):,.0f} |", flush=True)
    finally:
        if server is not None:
            server.stop()
            server.remove()
    return 0


if __name__ == "__main__":
    sys.exit(main())
