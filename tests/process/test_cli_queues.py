"""The real `jobmonitor` queue commands: queues, pause-queue, resume-queue, rerun, and
submit's --queue, --priority, --at and --delay."""

from __future__ import annotations

import json

from .test_cli import cli_server  # noqa: F401  (a fixture)
from .test_cli_client import cli, one_error_line


def test_submit_to_a_queue_later_then_list_pause_and_resume(cli_server):
    port = cli_server.port
    later = cli(port, "submit", "count", "-v", "Count=1", "--queue", "reports", "--priority",
                "7", "--at", "2099-01-01T00:00:00+01:00", "--no-monitor")
    assert later.returncode == 0, later.stderr
    tid = later.stdout.strip()
    status = cli(port, "status", tid, "--format", "json")
    data = json.loads(status.stdout)
    assert (data["Status"], data["Queue"], data["Priority"], data["Due"]) == (
        0, "reports", 7, "2098-12-31T23:00:00Z")
    assert cli(port, "pause-queue", "reports").stdout == "Queue reports paused\n"
    listing = cli(port, "queues")
    assert listing.stdout.splitlines() == [
        "QUEUE    WAITING  RUNNING  MAX RUNNING  PAUSED  SCHEDULED",
        "default  0        0        8            no      0",
        "reports  0        0        8            yes     1"]
    assert json.loads(cli(port, "queues", "--json").stdout)[1] == {
        "Name": "reports", "Waiting": 0, "Running": 0, "MaxRunning": 8, "Paused": True,
        "Scheduled": 1}
    assert cli(port, "resume-queue", "reports").stdout == "Queue reports resumed\n"
    assert cli(port, "cancel", tid).returncode == 0


def test_rerun_streams_the_new_job(cli_server):
    port = cli_server.port
    first = cli(port, "submit", "count", "-v", "Count=1", "-v", "Delay=0", "--delay", "0")
    assert first.returncode == 0, first.stderr
    tid = first.stdout.splitlines()[0].removeprefix("R0000000: ")
    again = cli(port, "rerun", tid)
    assert again.returncode == 0, again.stderr
    lines = again.stdout.splitlines()
    assert lines[0] == "R0000000: T0000002"
    assert lines[2] == f"J0000134: Job runs {tid} again."
    assert lines[-2:] == ["J0000020: Job completed successfully.",
                          "J0000001: Transaction T0000002 ended"]
    quiet = cli(port, "rerun", tid, "--no-monitor")
    assert quiet.stdout == "T0000003\n"


def test_bad_values_are_one_line(cli_server):
    port = cli_server.port
    assert "argument --priority: expected a priority 1 to 9, got '10'" in one_error_line(
        cli(port, "submit", "count", "--priority", "10"))
    assert "expected an ISO 8601 time with a time zone" in one_error_line(
        cli(port, "submit", "count", "--at", "2026-12-24T06:00:00"))
    assert "argument --delay: not allowed with argument --at" in one_error_line(
        cli(port, "submit", "count", "--at", "2026-12-24T06:00:00Z", "--delay", "5"))
    assert "expected a number of seconds of 0 or more, got '-5'" in one_error_line(
        cli(port, "submit", "count", "--delay=-5"))
    assert one_error_line(cli(port, "submit", "count", "--queue", "a b")) == (
        "jobmonitor: R0005007: Invalid variable value: _sys_QueueName must be 1 to 64 "
        "letters, digits or . _ - : @ / (no spaces), got 'a b'")
    assert one_error_line(cli(port, "rerun", "T0000099")) == (
        "jobmonitor: R0005009: Unknown transaction: T0000099")
