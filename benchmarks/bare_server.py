"""The bare asyncio baseline: the least a server must do to put jobmonitor's bytes on the wire.

An ``asyncio.Protocol`` per connection (no streams, no task unless the job
waits or streams) reads a packet up to ``</job_command>``, picks the command and variables
out with regular expressions (no XML parser, no validation, no job engine, no
store) and writes what jobmonitor would write: the ``R`` reply, a machine-name
line, the job's ``J0000100`` lines, the completion line and the ended line,
then closes.  It exists to show what the protocol costs on this machine
before any server design is involved.

Projects: ``bench.tiny`` (no lines), ``bench.stream`` (``lines`` lines),
``bench.hold`` (waits for ``group`` to be released), ``bench.fanout`` (waits
for ``group``, then sends ``lines`` lines to the submitter and every
``MonitorJob`` watcher) and ``bench.release`` (releases ``group``).

Run as a separate process by the benchmark runner::

    python benchmarks/bare_server.py --port 0 --loop uvloop --lines-per-write 1000

It logs ``bare listening on HOST:PORT`` on stderr when ready and exits on
SIGTERM, or by itself after ``--deadline-s``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import re
import signal
import socket
import sys

from harness import run_on_loop

LINE = b"J0000100: " + b"x" * 40 + b"\r\n"
MACHINE = f"J0000100: Machine name: {socket.gethostname()}\r\n".encode()
COMPLETED = b"J0000020: Job completed successfully.\r\n"
COMMAND = re.compile(rb'<job_command name="([^"]+)"')
VARIABLE = re.compile(rb'<var name="([^"]+)">([^<]*)</var>')
PACKET_END = b"</job_command>"
PACKET_LIMIT = 1 << 20
PACKET_TIMEOUT_S = 30.0


def ended(transaction_id: bytes) -> bytes:
    return COMPLETED + b"J0000001: Transaction " + transaction_id + b" ended\r\n"


class BareServer:
    """What all connections share: transaction numbers, release groups, fan-out jobs."""

    def __init__(self, lines_per_write: int) -> None:
        self.lines_per_write = lines_per_write
        self.transaction_ids = itertools.count(1)
        self.groups: dict[bytes, asyncio.Event] = {}
        self.fanout_jobs: dict[bytes, list[Connection]] = {}

    def group(self, name: bytes) -> asyncio.Event:
        event = self.groups.get(name)
        if event is None:
            event = self.groups[name] = asyncio.Event()
        return event


class Connection(asyncio.Protocol):
    """One client: buffer the packet, answer it; a task only for jobs that wait or stream."""

    def __init__(self, server: BareServer) -> None:
        self.server = server
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.writable: asyncio.Event | None = None  # made on the first pause only
        self.task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.timer = asyncio.get_running_loop().call_later(PACKET_TIMEOUT_S, transport.close)

    def data_received(self, data: bytes) -> None:
        if self.timer is None:
            return  # the packet is in: anything more is ignored
        self.buffer += data
        if PACKET_END in self.buffer[-len(data) - len(PACKET_END):]:
            self.timer.cancel()
            self.timer = None
            packet, self.buffer = self.buffer, b""
            self.dispatch(packet)
        elif len(self.buffer) > PACKET_LIMIT:
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.writable is not None:
            self.writable.set()  # a writer waiting on us must not wait for ever

    def pause_writing(self) -> None:
        if self.writable is None:
            self.writable = asyncio.Event()
        self.writable.clear()

    def resume_writing(self) -> None:
        if self.writable is not None:
            self.writable.set()

    async def drain(self) -> None:
        if self.writable is not None and not self.writable.is_set():
            await self.writable.wait()

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def dispatch(self, packet: bytes) -> None:
        command = COMMAND.search(packet)
        variables = dict(VARIABLE.findall(packet))
        name = command.group(1) if command else b""
        if name == b"SubmitJob":
            self.submit(variables)
        elif name == b"MonitorJob":
            self.monitor(variables.get(b"_sys_TransactionID", b""))
        else:
            self.write(b"R0005005: Unknown command\r\n")
            self.close()

    def submit(self, variables: dict[bytes, bytes]) -> None:
        project = variables.get(b"ProjectName", b"")
        if project == b"bench.release":
            self.server.group(variables.get(b"group", b"")).set()
            self.write(b"R0000000: T0000000\r\n")
            self.close()
            return
        transaction_id = b"T%07d" % next(self.server.transaction_ids)
        reply = b"R0000000: " + transaction_id + b"\r\n"
        if variables.get(b"_sys_ClientJobMonitor", b"").lower() != b"true":
            self.write(reply)
            self.close()
        elif project == b"bench.tiny":
            self.write(reply + MACHINE + ended(transaction_id))
            self.close()
        else:
            self.write(reply + MACHINE)
            if project == b"bench.hold":  # the one job that must stay small: no variables kept
                group = self.server.group(variables.get(b"group", b""))
                self.task = asyncio.ensure_future(self.hold(transaction_id, group))
                return
            job = {b"bench.stream": self.stream, b"bench.fanout": self.fanout}.get(project)
            if job is None:
                self.write(ended(transaction_id).replace(
                    b"J0000020: Job completed successfully.", b"J0000022: Job failed."))
                self.close()
                return
            self.task = asyncio.ensure_future(job(transaction_id, variables))

    async def stream(self, transaction_id: bytes, variables: dict[bytes, bytes]) -> None:
        lines = int(variables.get(b"lines", b"0"))
        per_write = max(1, self.server.lines_per_write)
        chunk = LINE * per_write
        for _ in range(lines // per_write):
            self.write(chunk)
            await self.drain()
        self.write(LINE * (lines % per_write) + ended(transaction_id))
        self.close()

    async def hold(self, transaction_id: bytes, group: asyncio.Event) -> None:
        await group.wait()  # bounded by the server's own deadline
        self.write(ended(transaction_id))
        self.close()

    async def fanout(self, transaction_id: bytes, variables: dict[bytes, bytes]) -> None:
        watchers = self.server.fanout_jobs[transaction_id] = [self]
        try:
            group = self.server.group(variables.get(b"group", b""))
            await group.wait()
            lines = int(variables.get(b"lines", b"0"))
            per_write = max(1, self.server.lines_per_write)
            chunk = LINE * per_write
            for size in [per_write] * (lines // per_write) + [lines % per_write]:
                data = chunk if size == per_write else LINE * size
                for watcher in watchers:
                    watcher.write(data)
                for watcher in watchers:
                    await watcher.drain()
            for watcher in watchers:
                watcher.write(ended(transaction_id))
                watcher.close()
        finally:
            del self.server.fanout_jobs[transaction_id]

    def monitor(self, transaction_id: bytes) -> None:
        watchers = self.server.fanout_jobs.get(transaction_id)
        if watchers is None:
            self.write(b"R0005009: Unknown transaction\r\n")
            self.close()
            return
        self.write(b"R0000000: " + transaction_id + b"\r\n" + MACHINE)
        watchers.append(self)


async def serve(host: str, port: int, lines_per_write: int, deadline_s: float) -> None:
    server = BareServer(lines_per_write)
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(lambda: Connection(server), host, port, backlog=4096)
    bound_host, bound_port = listener.sockets[0].getsockname()[:2]
    print(f"bare listening on {bound_host}:{bound_port}", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await asyncio.wait_for(stop.wait(), deadline_s)
    except TimeoutError:
        print("bare: deadline reached, exiting", file=sys.stderr, flush=True)
    listener.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--lines-per-write", type=int, default=1)
    parser.add_argument("--deadline-s", type=float, default=3600.0)
    args = parser.parse_args()
    run_on_loop(args.loop, serve(args.host, args.port, args.lines_per_write, args.deadline_s))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
