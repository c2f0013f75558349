"""How long a client command takes, next to what the same question costs on a raw socket.

Starts a real server (``jobmonitor serve --store memory:// --port 0`` with the
demo jobs), runs one job on it, then times, each ``--runs`` times in turn:

- ``python -c pass``: the interpreter's own start-up, the floor for any command;
- ``jobmonitor status T0000001``: the client command, a process of its own, as a
  user or a script runs it (wall time from start to exit);
- a raw socket round trip: connect, send the same ``GetJobStatus`` packet,
  read the reply to the server's close, from inside this process.

The difference between the command and the raw round trip is what the command
costs on top of the question itself: the interpreter, its imports, argument
parsing and printing.  ``python -X importtime -m jobmonitor status ...`` shows
where the imports go.  Prints a table: the minimum, median and maximum wall
time in milliseconds, and for the processes the median CPU time they used
(user and system: on a shared machine, where other work stretches the wall
time, it says what the command itself costs).  Exit status 1 if the command's
median wall time is above ``--budget-ms``.

    python benchmarks/cli_startup.py                 # 20 runs each
    python benchmarks/cli_startup.py --runs 50 --budget-ms 150

Standard library only; the server and the command run with this interpreter
(a venv's ``python`` runs its own ``jobmonitor``; ``--module`` runs
``python -m jobmonitor`` in this checkout instead, to compare two checkouts).
The processes may write their bytecode caches (``PYTHONDONTWRITEBYTECODE`` is
dropped for them), as a user's Python does: compiling every module at every
start would double the command's time.  Every run is bounded in time, and the
server is stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
READY = re.compile(r"jobmonitor listening on (\S+):(\d+)")
STATUS_PACKET = (b'<job_command name="GetJobStatus"><job_variables>'
                 b'<var name="_sys_TransactionID">T0000001</var>'
                 b'</job_variables></job_command>')
RUN_TIMEOUT_S = 30.0


def start_server() -> tuple[subprocess.Popen[str], int]:
    """The server, once it says it listens; and its port."""
    server = subprocess.Popen(
        [sys.executable, "-m", "jobmonitor", "serve", "--port", "0", "--store", "memory://",
         "--jobs", "examples/demo_jobs.py"],
        cwd=ROOT, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert server.stderr is not None
    deadline = time.monotonic() + RUN_TIMEOUT_S
    for line in server.stderr:
        match = READY.search(line)
        if match:
            return server, int(match.group(2))
        if time.monotonic() > deadline:
            break
    server.kill()
    raise SystemExit("the server did not start")


def command_line(module: bool) -> list[str]:
    """The ``jobmonitor`` console script next to this interpreter (what a venv
    user runs), else (or with ``module``) ``python -m jobmonitor``."""
    if module:
        return [sys.executable, "-m", "jobmonitor"]
    script = Path(sys.executable).with_name("jobmonitor")
    if script.exists():
        return [str(script)]
    found = shutil.which("jobmonitor")
    return [found] if found else [sys.executable, "-m", "jobmonitor"]


def timed(run: Callable[[], None]) -> tuple[float, float]:
    """Wall time and the CPU time of the processes it waited for, in ms."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    run()
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall * 1000, cpu * 1000


def run_process(argv: list[str], env: dict[str, str]) -> Callable[[], None]:
    def run() -> None:
        subprocess.run(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, check=True,
                       timeout=RUN_TIMEOUT_S)
    return run


def raw_round_trip(port: int) -> Callable[[], None]:
    def run() -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=RUN_TIMEOUT_S) as sock:
            sock.sendall(STATUS_PACKET)
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
        if not reply.startswith(b"R0000000"):
            raise SystemExit(f"unexpected reply: {reply[:80]!r}")
    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="runs of each (default 20)")
    parser.add_argument("--budget-ms", type=float, default=150.0,
                        help="the command's median must stay under this (default 150)")
    parser.add_argument("--module", action="store_true",
                        help="run `python -m jobmonitor` in this checkout, not the console script")
    args = parser.parse_args()
    server, port = start_server()
    try:
        env = {name: value for name, value in os.environ.items()
               if name != "PYTHONDONTWRITEBYTECODE"}
        env["JOBMONITOR_PORT"] = str(port)
        jobmonitor = command_line(args.module)
        run_process([*jobmonitor, "submit", "count", "-v", "Count=1", "-v", "Delay=0"], env)()
        cases = {
            "python -c pass": run_process([sys.executable, "-c", "pass"], env),
            "jobmonitor status T0000001": run_process([*jobmonitor, "status", "T0000001"], env),
            "raw socket round trip": raw_round_trip(port),
        }
        for run in cases.values():  # once each first: page cache, bytecode files
            run()
        samples: dict[str, list[float]] = {name: [] for name in cases}
        cpu: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(max(args.runs, 1)):  # interleaved: a busy moment hits them all
            for name, run in cases.items():
                wall_ms, cpu_ms = timed(run)
                samples[name].append(wall_ms)
                cpu[name].append(cpu_ms)
    finally:
        server.terminate()
        try:
            server.communicate(timeout=RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            server.kill()
    print(f"{'wall time, ms':28}  {'min':>7}  {'median':>7}  {'max':>7}  {'CPU median':>10}")
    for name, values in samples.items():
        used = f"{statistics.median(cpu[name]):10.1f}" if any(cpu[name]) else f"{'-':>10}"
        print(f"{name:28}  {min(values):7.1f}  {statistics.median(values):7.1f}  "
              f"{max(values):7.1f}  {used}")
    median = statistics.median(samples["jobmonitor status T0000001"])
    if median > args.budget_ms:
        print(f"the command's median, {median:.0f} ms, is above the budget of "
              f"{args.budget_ms:g} ms", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
