"""``jobmonitor serve`` runs on uvloop by default, on asyncio with ``--loop asyncio``.

Each server says at start which loop it runs on, and serves on either: a
monitored job, and successive commands on a kept connection.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from jobmonitor import Outcome
from jobmonitor.client import SyncClient

from .test_cli import ROOT, ServerProcess

#: Runs the CLI as if uvloop were not installed.
WITHOUT_UVLOOP = ("import sys; sys.modules['uvloop'] = None; from jobmonitor.cli import main; "
                  "sys.exit(main(sys.argv[1:]))")


@pytest.mark.parametrize("args, loop", [((), "uvloop"), (("--loop", "uvloop"), "uvloop"),
                                        (("--loop", "asyncio"), "asyncio")],
                         ids=["default", "uvloop", "asyncio"])
def test_serve_says_which_loop_it_runs_on_and_serves_on_it(args, loop):
    if loop == "uvloop":
        pytest.importorskip("uvloop")
    server = ServerProcess("--jobs", "examples/demo_jobs.py", *args)
    try:
        assert server.proc.stderr is not None
        said = server.proc.stderr.readline()  # the line after the ready line
        assert f"jobmonitor.cli: event loop: {loop}" in said, said
        with SyncClient("127.0.0.1", server.port) as client:
            tx = client.submit("count", {"Count": "3", "Delay": "0"})
            assert tx.result().outcome is Outcome.SUCCESS
            assert client.queue_length().running == 0
            assert client.status(tx.transaction_id).lines == 9  # (with the ended line)
        assert server.stop() == 0
    finally:
        server.kill()


def test_without_uvloop_the_default_is_asyncio_and_asking_for_uvloop_is_an_error():
    def serve(*args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-c", WITHOUT_UVLOOP, "serve", "--port", "0", "--store",
             "memory://", *args], cwd=ROOT, stderr=subprocess.PIPE, text=True)

    refused = serve("--loop", "uvloop")
    _, err = refused.communicate(timeout=30)
    assert refused.returncode == 2
    assert err.strip().splitlines()[-1] == (
        "jobmonitor: --loop uvloop: uvloop is not installed (pip install uvloop)")
    default = serve()
    try:
        assert default.stderr is not None
        lines = [default.stderr.readline() for _ in range(3)]  # (a warning: no jobs)
        assert lines[-1].rstrip().endswith("event loop: asyncio (uvloop is not installed)")
    finally:
        default.kill()
        default.communicate()
