"""The HTTP face's speed: event streams against the TCP stream, many watchers, wrk.

Scenarios (each starts a fresh ``jobmonitor serve`` with ``--http-port`` on the
memory store, uvloop when installed, and stops it):

* ``sse``: one job sends N lines to one client, over TCP (a monitored
  ``SubmitJob``) and over server-sent events (``GET .../events``): lines/s at the
  client from the job's release to its last line; the ratio SSE / TCP.
* ``watchers``: W event streams watch one job, which is released once every one
  has its first event, then sends N lines to all: seconds to the last stream's
  ``end``, lines/s delivered, server RSS per watcher.
* ``wrk``: ``GET /api/v1/jobs/T0000001`` with wrk (Debian's ``wrk``) against the
  server, then against a bare h11 server (``--bare``, in this file) answering the
  same bytes; requests/s of each and the ratio.

Usage::

    python benchmarks/http_bench.py                   # all three, default sizes
    python benchmarks/http_bench.py --scenario sse --lines 20000 --runs 3

Prints one Markdown table on stdout.  Standard library, h11 and wrk only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from processes import free_port, raise_fd_limit, rss_kb

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 120.0


# -- the server -------------------------------------------------------------------------


class Served:
    """``jobmonitor serve`` with an HTTP port, as a child process."""

    def __init__(self) -> None:
        self.port, self.http_port = free_port(), free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jobmonitor", "serve", "--store", "memory://",
             "--port", str(self.port), "--http-port", str(self.http_port), "--jobs",
             "benchmarks/bench_jobs.py", "--max-running", "100", "--log-level", "warning"],
            cwd=ROOT, stderr=subprocess.PIPE, text=True)
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if "HTTP listening on" in line:
                return
        raise RuntimeError("the server did not start")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def packet(command: str, **variables: str) -> bytes:
    items = "".join(f'<var name="{k}">{v}</var>' for k, v in variables.items())
    return (f'<job_command name="{command}"><job_variables>{items}</job_variables>'
            f'</job_command>').encode()


async def tcp_exchange(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    answer = await asyncio.wait_for(reader.read(), TIMEOUT_S)
    writer.close()
    return answer


async def submit_held(served: Served, lines: int, release: str) -> str:
    answer = await tcp_exchange(served.port, packet(
        "SubmitJob", ProjectName="bench.fanout", lines=str(lines), release=release))
    return answer.decode().split(": ", 1)[1].strip()


async def open_events(served: Served, transaction_id: str
                      ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", served.http_port)
    writer.write(f"GET /api/v1/jobs/{transaction_id}/events HTTP/1.1\r\nHost: x\r\n"
                 f"Accept: text/event-stream\r\n\r\n".encode())
    await asyncio.wait_for(reader.readuntil(b"id: 1\n"), TIMEOUT_S)  # attached
    return reader, writer


async def read_events_to_end(reader: asyncio.StreamReader) -> int:
    """Read an event stream to its ``end`` event; return the number of line events."""
    count, tail = 0, b""
    while True:
        chunk = await asyncio.wait_for(reader.read(1 << 20), TIMEOUT_S)
        if not chunk:
            raise RuntimeError("the stream ended without an end event")
        count += chunk.count(b"event: line\n")
        if b"event: end\n" in tail + chunk:
            return count
        tail = chunk[-16:]


# -- scenarios --------------------------------------------------------------------------


async def sse_against_tcp(served: Served, lines: int, folder: str) -> dict[str, float]:
    # TCP: a monitored submit of a held job; released once its reply is in.
    release = os.path.join(folder, "tcp")
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    writer.write(packet("SubmitJob", ProjectName="bench.fanout", lines=str(lines),
                        release=release, _sys_ClientJobMonitor="true"))
    await asyncio.wait_for(reader.readuntil(b"\r\n"), TIMEOUT_S)
    start = time.perf_counter()
    Path(release).touch()
    data = await asyncio.wait_for(reader.read(), TIMEOUT_S)
    tcp_s = time.perf_counter() - start
    writer.close()
    assert data.endswith(b" ended\r\n"), data[-80:]
    # SSE: the same job, watched by one event stream.
    release = os.path.join(folder, "sse")
    transaction_id = await submit_held(served, lines, release)
    reader, writer = await open_events(served, transaction_id)
    start = time.perf_counter()
    Path(release).touch()
    count = await read_events_to_end(reader)
    sse_s = time.perf_counter() - start
    writer.close()
    assert count >= lines, count
    tcp_rate, sse_rate = lines / tcp_s, lines / sse_s
    return {"tcp lines/s": tcp_rate, "sse lines/s": sse_rate, "sse / tcp": sse_rate / tcp_rate}


async def many_watchers(served: Served, watchers: int, lines: int,
                        folder: str) -> dict[str, float]:
    release = os.path.join(folder, "watchers")
    transaction_id = await submit_held(served, lines, release)
    before = rss_kb(served.proc.pid)
    streams = []
    for start in range(0, watchers, 100):  # (a burst of 1 000 connects fills the backlog)
        streams += await asyncio.gather(*(open_events(served, transaction_id)
                                          for _ in range(start, min(watchers, start + 100))))
    held_kb = rss_kb(served.proc.pid) - before
    began = time.perf_counter()
    Path(release).touch()
    counts = await asyncio.gather(*(read_events_to_end(reader) for reader, _ in streams))
    elapsed = time.perf_counter() - began
    for _, writer in streams:
        writer.close()
    assert min(counts) >= lines, min(counts)
    return {"watchers": watchers, "seconds to the last end": elapsed,
            "lines/s delivered": watchers * lines / elapsed,
            "KiB per held watcher": held_kb / watchers}


def wrk(url: str, seconds: int, connections: int) -> float:
    result = subprocess.run(["wrk", "-t", "2", "-c", str(connections), "-d", f"{seconds}s",
                             url], capture_output=True, text=True, timeout=seconds + 60)
    found = re.search(r"Requests/sec:\s+([\d.]+)", result.stdout)
    if not found or "Non-2xx" in result.stdout:
        raise RuntimeError(f"wrk failed: {result.stdout}{result.stderr}")
    return float(found.group(1))


async def wrk_against_bare(served: Served, seconds: int, connections: int) -> dict[str, float]:
    await tcp_exchange(served.port, packet("SubmitJob", ProjectName="bench.tiny"))
    path = "/api/v1/jobs/T0000001"
    reader, writer = await asyncio.open_connection("127.0.0.1", served.http_port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    answer = await asyncio.wait_for(reader.read(), TIMEOUT_S)
    writer.close()
    _head, _, _body = answer.partition(b"\r\n\r\n")
    ours = wrk(f"http://127.0.0.1:{served.http_port}{path}", seconds, connections)
    with tempfile.NamedTemporaryFile() as saved:
        saved.write(answer)
        saved.flush()
        port = free_port()
        bare = subprocess.Popen([sys.executable, __file__, "--bare", saved.name, "--port",
                                 str(port)], stderr=subprocess.PIPE, text=True)
        try:
            assert bare.stderr is not None and "ready" in bare.stderr.readline()
            theirs = wrk(f"http://127.0.0.1:{port}{path}", seconds, connections)
        finally:
            bare.terminate()
            bare.wait()
    return {"jobmonitor req/s": ours, "bare h11 req/s": theirs, "jobmonitor / bare": ours / theirs}


# -- the bare h11 server ------------------------------------------------------------------


def serve_bare(saved: str, port: int) -> None:
    """Answer every request with the headers and body of a saved jobmonitor answer."""
    import h11

    head, _, body = Path(saved).read_bytes().partition(b"\r\n\r\n")
    headers = [tuple(line.split(b": ", 1)) for line in head.split(b"\r\n")[1:]]
    headers = [(k, v) for k, v in headers if k.lower() not in (b"connection", b"date")]

    class Bare(asyncio.Protocol):
        def connection_made(self, transport):  # type: ignore[no-untyped-def]
            self.transport, self.conn = transport, h11.Connection(h11.SERVER)

        def data_received(self, data):  # type: ignore[no-untyped-def]
            self.conn.receive_data(data)
            while True:
                event = self.conn.next_event()
                if event is h11.NEED_DATA or event is h11.PAUSED:
                    return
                if isinstance(event, h11.EndOfMessage):
                    send = self.conn.send
                    self.transport.write(send(h11.Response(status_code=200, headers=headers,
                                                           reason=b"OK"))
                                         + send(h11.Data(data=body)) + send(h11.EndOfMessage()))
                    self.conn.start_next_cycle()
                elif isinstance(event, h11.ConnectionClosed):
                    self.transport.close()
                    return

    async def main() -> None:
        loop = asyncio.get_running_loop()
        await loop.create_server(Bare, "127.0.0.1", port, backlog=1024)
        print("ready", file=sys.stderr, flush=True)
        await asyncio.sleep(3600)

    try:
        import uvloop
        uvloop.run(main())
    except ImportError:
        asyncio.run(main())


# -- the runner -------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> list[tuple[str, str, float, float, float]]:
    rows = []
    for scenario in args.scenario:
        samples: dict[str, list[float]] = {}
        for _ in range(args.runs):
            served = Served()
            try:
                with tempfile.TemporaryDirectory() as folder:
                    if scenario == "sse":
                        result = await sse_against_tcp(served, args.lines, folder)
                    elif scenario == "watchers":
                        result = await many_watchers(served, args.watchers,
                                                     args.watcher_lines, folder)
                    else:
                        result = await wrk_against_bare(served, args.seconds, args.connections)
            finally:
                served.stop()
            for key, value in result.items():
                samples.setdefault(key, []).append(value)
        for key, values in samples.items():
            rows.append((scenario, key, statistics.median(values), min(values), max(values)))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", action="append", choices=("sse", "watchers", "wrk"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--watchers", type=int, default=1000)
    parser.add_argument("--watcher-lines", type=int, default=1000)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--bare", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare:
        serve_bare(args.bare, args.port)
        return 0
    args.scenario = args.scenario or ["sse", "watchers", "wrk"]
    if "wrk" in args.scenario and shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install wrk): skipping the wrk scenario",
              file=sys.stderr)
        args.scenario.remove("wrk")
    raise_fd_limit()
    rows = asyncio.run(run(args))
    print("| scenario | metric | median | min | max |\n|---|---|---|---|---|")
    for scenario, key, median, low, high in rows:
        print(f"| {scenario} | {key} | {median:,.2f} | {low:,.2f} | {high:,.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
