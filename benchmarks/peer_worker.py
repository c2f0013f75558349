"""Runs a peer's workers in their own process, as real gearman/beanstalkd workers are.

    python benchmarks/peer_worker.py gearman --port 4730 --connections 8
    python benchmarks/peer_worker.py beanstalk --port 11300 --connections 8

Prints ``peer worker ready`` on stderr once every connection is set up, and
exits on SIGTERM, when the server closes every connection, or after
``--deadline-s``, whichever comes first.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from harness import Endpoint, run_on_loop
from peers import beanstalk, gearman


async def _gearman(endpoint: Endpoint, connections: int, stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    pool: list[gearman.Worker] = []
    workers = []
    for _ in range(connections):
        _, worker = await loop.create_connection(lambda: gearman.Worker(pool),
                                                 endpoint.host, endpoint.port)
        workers.append(worker)
    print("peer worker ready", file=sys.stderr, flush=True)
    all_closed = asyncio.ensure_future(asyncio.gather(*(w.closed for w in workers)))
    await asyncio.wait([all_closed, asyncio.ensure_future(stop.wait())],
                       return_when=asyncio.FIRST_COMPLETED)
    for worker in workers:
        if worker.transport is not None:
            worker.transport.close()


async def _beanstalk(endpoint: Endpoint, connections: int, stop: asyncio.Event) -> None:
    ready = [asyncio.Event() for _ in range(connections)]
    tasks = [asyncio.ensure_future(beanstalk.worker(endpoint, stop, r)) for r in ready]
    await asyncio.gather(*(r.wait() for r in ready))
    print("peer worker ready", file=sys.stderr, flush=True)
    await asyncio.wait([asyncio.ensure_future(stop.wait()), *tasks],
                       return_when=asyncio.FIRST_COMPLETED)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def serve(kind: str, endpoint: Endpoint, connections: int, deadline_s: float) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    loop.call_later(deadline_s, stop.set)
    run = _gearman if kind == "gearman" else _beanstalk
    await run(endpoint, connections, stop)


def main() -> int:
    parser = argparse.ArgumentParser(description="Run benchmark workers for a peer server.")
    parser.add_argument("kind", choices=("gearman", "beanstalk"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--deadline-s", type=float, default=3600.0)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    args = parser.parse_args()
    endpoint = Endpoint(args.host, args.port, 0)
    run_on_loop(args.loop, serve(args.kind, endpoint, args.connections, args.deadline_s))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
