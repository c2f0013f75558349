"""The real `jobmonitor` client commands against a real server process."""

from __future__ import annotations

import asyncio
import io
import json
import os
import pty
import re
import select
import shutil
import subprocess
import sys

import pytest

from jobmonitor.cli.output import EXIT_CODES, LivePrinter, display_text, render_bar
from jobmonitor.cli.tables import table
from jobmonitor.client import Progress, StreamLine

from ..server.test_client import scripted_server, unused_port  # noqa: F401  (a fixture)
from ..server.test_security import certificate  # noqa: F401  (a fixture)
from .test_cli import CTRL_D, ROOT, ServerProcess, cli_server, on_a_terminal  # noqa: F401  (a fixture)

COUNT = [
    "R0000000: T0000001",
    "J0000100: Machine name: demo-host",
    "J0000100: Composing record 1",
    "J0000110: Progress: 1/2 (50%)",
    "J0000100: Composing record 2",
    "J0000110: Progress: 2/2 (100%)",
    "J0000020: Job completed successfully.",
    "J0000001: Transaction T0000001 ended",
]


def cli(port: int | None, *args: str, env: dict[str, str] | None = None,
        stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m jobmonitor ARGS [--port PORT]`` and wait for it."""
    command = [sys.executable, "-m", "jobmonitor", *args]
    if port is not None:
        command += ["--port", str(port)]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=30,
                          env={**os.environ, **(env or {})}, input=stdin)


def started(port: int, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "jobmonitor", *args, "--port", str(port)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def read_until(proc: subprocess.Popen[str], wanted: str) -> list[str]:
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        if lines[-1] == wanted:
            return lines
    raise AssertionError(f"{wanted!r} never came: {lines}")


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    return lines[0]


# -- submit and its exit codes -----------------------------------------------------------


def test_submit_streams_the_lines_and_exits_zero(cli_server):
    result = cli(cli_server.port, "submit", "count", "-v", "Count=2", "-v", "Delay=0")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == COUNT
    assert result.stderr == ""


@pytest.mark.parametrize(("project", "status"), [("partial", 3), ("fail", 1)])
def test_exit_status_follows_the_outcome(cli_server, project, status):
    result = cli(cli_server.port, "submit", project)
    assert result.returncode == status
    assert result.stdout.splitlines()[-2].startswith("J00000")


def test_cancelled_job_exits_four(cli_server):
    follower = started(cli_server.port, "submit", "long")
    try:
        read_until(follower, "J0000100: Machine name: demo-host")
        cancel = cli(cli_server.port, "cancel", "T0000001")
        # A sentence, as suspend, resume and delete print: the job stops at its
        # next await (a program after SIGTERM), so "requested".
        assert (cancel.returncode, cancel.stdout) == (0, "T0000001 cancel requested\n")
        out, _ = follower.communicate(timeout=30)
    finally:
        follower.kill()
    assert follower.returncode == 4
    assert out.splitlines()[-2:] == ["J0000023: Job cancelled by user.",
                                     "J0000001: Transaction T0000001 ended"]


@pytest.mark.parametrize("json_lines", [False, True])
def test_a_job_the_shutdown_cancelled_exits_five(cli_server, json_lines):
    # It exited 4, as if someone had cancelled it: a script could not tell a
    # job to submit again from one a user stopped.
    follower = started(cli_server.port, "submit", "long", *(["--json"] if json_lines else []))
    try:
        assert follower.stdout is not None
        assert "T0000001" in follower.stdout.readline()  # submitted: the job runs
        assert cli_server.stop() == 0  # shutdown_grace_s 0.5, then its cancel
        out, _ = follower.communicate(timeout=30)
    finally:
        follower.kill()
    assert follower.returncode == 5
    if json_lines:
        assert json.loads(out.splitlines()[-1]) == {
            "event": "result", "transaction_id": "T0000001", "outcome": "cancelled",
            "exit_code": 5}
    else:
        assert out.splitlines()[-3:] == ["J0005004: Job cancelled: the server is shutting down.",
                                         "J0000023: Job cancelled by user.",
                                         "J0000001: Transaction T0000001 ended"]


def test_json_lines_for_programs(cli_server):
    result = cli(cli_server.port, "submit", "partial", "--job-name", "J", "--json")
    assert result.returncode == 3
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert events[0] == {"event": "submitted", "transaction_id": "T0000001"}
    assert events[3] == {"event": "line", "transaction_id": "T0000001", "number": 3,
                         "code": 5000, "text": "Evaluation failed for variable: FormatPriceJS",
                         "is_error": True, "more": True}
    assert events[-1] == {"event": "result", "transaction_id": "T0000001",
                          "outcome": "partial", "exit_code": 3}


def test_no_monitor_prints_the_id_then_watch_follows(cli_server):
    submitted = cli(cli_server.port, "submit", "count", "-v", "Count=2", "-v", "Delay=0",
                    "--no-monitor")
    assert (submitted.returncode, submitted.stdout) == (0, "T0000001\n")
    watched = cli(cli_server.port, "watch", "T0000001")
    assert watched.returncode == 0 and watched.stdout.splitlines() == COUNT
    later = cli(cli_server.port, "watch", "T0000001", "--from-line", "6")
    assert later.stdout.splitlines() == [COUNT[0], *COUNT[6:]]
    as_json = cli(cli_server.port, "watch", "T0000001", "--from-line", "6", "--json")
    assert [json.loads(line)["event"] for line in as_json.stdout.splitlines()] == [
        "watching", "line", "line", "result"]


def test_watch_from_past_the_end_exits_with_the_outcome(cli_server):
    assert cli(cli_server.port, "submit", "partial").returncode == 3
    late = cli(cli_server.port, "watch", "T0000001", "--from-line", "99")
    assert (late.returncode, late.stdout, late.stderr) == (3, "R0000000: T0000001\n", "")


def test_job_token_submits_once(cli_server):
    first = cli(cli_server.port, "submit", "count", "-v", "Count=1", "--job-token", "k",
                "--no-monitor")
    again = cli(cli_server.port, "submit", "count", "-v", "Count=1", "--job-token", "k",
                "--no-monitor")
    assert first.stdout == again.stdout == "T0000001\n"


# -- the other commands ---------------------------------------------------------------------


def test_status_info_and_list(cli_server):
    cli(cli_server.port, "submit", "report", "--job-name", "Q3")
    text = cli(cli_server.port, "status", "T0000001")
    assert text.returncode == 0
    assert "Status: Completed" in text.stdout.splitlines()
    as_json = json.loads(cli(cli_server.port, "status", "T0000001", "--format", "json").stdout)
    assert as_json["Id"] == "T0000001" and as_json["Status"] == 3
    xml = cli(cli_server.port, "status", "T0000001", "--format", "xml").stdout
    assert xml.startswith("<JobStatus>") and "<Status>Completed</Status>" in xml
    info = json.loads(cli(cli_server.port, "info", "T0000001", "--format", "json").stdout)
    assert [event["Stage"] for event in info["History"]][2] == "evaluation"

    assert cli(cli_server.port, "list").stdout.splitlines() == [
        "TRANSACTION  STATUS  PROJECT  JOB NAME"]
    assert cli(cli_server.port, "list", "--all").stdout.splitlines() == [
        "TRANSACTION  STATUS     PROJECT  JOB NAME",
        "T0000001     Completed  report   Q3"]
    listed = json.loads(cli(cli_server.port, "list", "--all", "--json").stdout)
    assert [job["Id"] for job in listed] == ["T0000001"]


def test_outputs_queue_log_delete_and_restart(cli_server):
    cli(cli_server.port, "submit", "report", "--job-name", "Q3")
    cli(cli_server.port, "submit", "count", "-v", "Count=0")
    outputs = cli(cli_server.port, "outputs", "T0000001")
    assert (outputs.returncode, outputs.stdout.splitlines()) == (0, [
        "NAME        MEDIA TYPE       URI",
        "report.pdf  application/pdf  file:///srv/output/report.pdf"])
    assert json.loads(cli(cli_server.port, "outputs", "T0000001", "--json").stdout) == [
        {"Name": "report.pdf", "Uri": "file:///srv/output/report.pdf",
         "MediaType": "application/pdf", "Partial": False}]
    assert outputs.stderr == ""  # (a job that completed: nothing partial to warn of)
    assert cli(cli_server.port, "outputs", "T0000002").stdout == "NAME  MEDIA TYPE  URI\n"
    assert cli(cli_server.port, "queue").stdout == "Queued: 0\nRunning: 0\n"
    assert cli(cli_server.port, "projects").stdout.splitlines() == [
        "blocking", "count", "fail", "long", "nightly", "partial", "report"]

    log = cli(cli_server.port, "log").stdout.splitlines()
    assert log[0].split() == ["TIME", "TRANSACTION", "PROJECT", "EVENT"]
    assert [line.split()[1:] for line in log[1:]] == [
        ["T0000001", "report", "queued"], ["T0000001", "report", "start"],
        ["T0000001", "report", "complete"], ["T0000002", "count", "queued"],
        ["T0000002", "count", "start"], ["T0000002", "count", "complete"]]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", line.split()[0])
               for line in log[1:])

    deleted = cli(cli_server.port, "delete", "T0000001")
    assert (deleted.returncode, deleted.stdout) == (0, "T0000001 deleted\n")
    assert one_error_line(cli(cli_server.port, "outputs", "T0000001")) == \
        "jobmonitor: R0005009: Unknown transaction: T0000001"
    restarted = cli(cli_server.port, "restart-server")
    assert (restarted.returncode, restarted.stdout) == (0, "Job engine restarted\n")


HALF = """
[projects.half]
command = [PYTHON, "-c",
           "import sys; open(sys.argv[1] + '/archive.tar.gz', 'wb').write(b'ha'); sys.exit(2)",
           "{output_dir}"]
output_dir = OUT
"""


def test_the_outputs_of_a_failed_job_are_listed_as_partial(tmp_path):
    config = tmp_path / "jobmonitor.toml"
    config.write_text(HALF.replace("PYTHON", json.dumps(sys.executable))
                      .replace("OUT", json.dumps(str(tmp_path / "out"))))
    server = ServerProcess("--config", str(config))
    try:
        assert cli(server.port, "submit", "half").returncode == 1  # failed
        archive = (tmp_path / "out" / "T0000001" / "archive.tar.gz").as_uri()
        listed = cli(server.port, "outputs", "T0000001")
        assert (listed.returncode, listed.stdout.splitlines()) == (0, [
            "NAME            MEDIA TYPE        URI",
            f"archive.tar.gz  application/gzip  {archive}"])
        assert listed.stderr == ("jobmonitor: the job failed or was cancelled: these outputs "
                                 "are partial\n")
        assert json.loads(cli(server.port, "outputs", "T0000001", "--json").stdout) == [
            {"Name": "archive.tar.gz", "Uri": archive, "MediaType": "application/gzip",
             "Partial": True}]
    finally:
        server.kill()


def test_watch_names_a_job_given_in_lower_case_in_its_canonical_form(cli_server):
    cli(cli_server.port, "submit", "count", "-v", "Count=2", "-v", "Delay=0")
    watched = cli(cli_server.port, "watch", "t0000001")
    assert (watched.returncode, watched.stdout.splitlines()) == (0, COUNT)
    as_json = cli(cli_server.port, "watch", "t0000001", "--json").stdout.splitlines()
    assert {json.loads(line)["transaction_id"] for line in as_json} == {"T0000001"}


def test_delete_refuses_a_running_job(cli_server):
    cli(cli_server.port, "submit", "count", "-v", "Count=100", "-v", "Delay=0.05",
        "--no-monitor")
    assert cli(cli_server.port, "queue").stdout == "Queued: 0\nRunning: 1\n"
    assert one_error_line(cli(cli_server.port, "delete", "T0000001")).startswith(
        "jobmonitor: R0005010: Invalid state for this request: T0000001 is Processing")
    cli(cli_server.port, "cancel", "T0000001")


def test_suspend_and_resume(cli_server):
    cli(cli_server.port, "submit", "count", "-v", "Count=100", "-v", "Delay=0.02",
        "--no-monitor")
    follower = started(cli_server.port, "watch", "T0000001")
    try:
        suspend = cli(cli_server.port, "suspend", "T0000001")
        assert (suspend.returncode, suspend.stdout) == (0, "T0000001 suspend requested\n")
        read_until(follower, "J0000130: Job suspended.")
        assert "Status: Suspended" in cli(cli_server.port, "status", "T0000001").stdout
        resume = cli(cli_server.port, "resume", "T0000001")
        assert (resume.returncode, resume.stdout) == (0, "T0000001 resumed\n")
        read_until(follower, "J0000131: Job resumed.")
        again = cli(cli_server.port, "resume", "T0000001")
        assert one_error_line(again).startswith("jobmonitor: R0005010: Invalid state")
        cli(cli_server.port, "cancel", "T0000001")
        follower.communicate(timeout=30)
    finally:
        follower.kill()
    assert follower.returncode == 4


# -- errors are one line and exit 2 ------------------------------------------------------------


def test_error_reply(cli_server):
    assert one_error_line(cli(cli_server.port, "submit", "nope")) == \
        "jobmonitor: R0005008: Unknown project: nope"
    assert one_error_line(cli(cli_server.port, "status", "T0000042")) == \
        "jobmonitor: R0005009: Unknown transaction: T0000042"


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("args", [("submit", "count", "-v", "Count=1", "-v", "Delay=0"),
                                  ("queue",), ("list",)])
def test_output_that_cannot_be_written_is_not_blamed_on_the_server(cli_server, args):
    command = [sys.executable, "-m", "jobmonitor", *args, "--port", str(cli_server.port)]
    with open("/dev/full", "w") as full:
        result = subprocess.run(command, cwd=ROOT, stdout=full, stderr=subprocess.PIPE,
                                text=True, timeout=30)
    assert (result.returncode, result.stderr) == (
        2, "jobmonitor: cannot write the output: No space left on device\n")


def test_refused_connection(unused_port):
    assert one_error_line(cli(unused_port, "list")) == (
        f"jobmonitor: cannot connect to 127.0.0.1:{unused_port}: connection refused "
        "(is the server running?)")


# The one-shot commands ask on a plain socket (client.blocking), the stream and list
# commands with the asyncio client: the same answers come to the same lines.
ASKED = [["status", "T0000001"], ["cancel", "T0000001"], ["queue"], ["outputs", "T0000001"],
         ["list"]]


@pytest.mark.parametrize("args", ASKED, ids=[args[0] for args in ASKED])
@pytest.mark.parametrize(("answer", "error"), [
    (b"HTTP/1.1 400 Bad Request\r\n\r\n", "HOST:PORT did not answer as a jobmonitor server: "
                                         "not a coded line: 'HTTP/1.1 400 Bad Request'"),
    (b"R0000000- Queued: 0\r\n", "cannot reach HOST:PORT: the server closed the connection "
                                  "before its reply was complete (if the server uses TLS, add "
                                  "--tls)"),
    (b"R0005009- Unknown transaction:\r\nR0005009: T0000001\r\n",
     "R0005009: Unknown transaction:\\x0aT0000001"),
    (b"R0000000- a\r\nJ0000100: b\r\n", "HOST:PORT did not answer as a jobmonitor server: "
                                         "unexpected line in a reply: b'J0000100: b\\r\\n'"),
])
async def test_an_answer_outside_the_protocol_is_one_line_whoever_asks(args, answer, error):
    async with scripted_server([answer]) as (port, packets):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "jobmonitor", *args, "--port", str(port), cwd=ROOT,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert (proc.returncode, out) == (2, b"")
    assert err.decode().replace(f"127.0.0.1:{port}", "HOST:PORT") == f"jobmonitor: {error}\n"
    assert len(packets) == 1 and packets[0].command in (
        "GetJobStatus", "CancelJob", "GetJobQueueLen", "RetrieveJob", "ListJobs")


@pytest.mark.parametrize("args", ASKED, ids=[args[0] for args in ASKED])
def test_a_refused_connection_is_one_line_whoever_asks(unused_port, args):
    assert one_error_line(cli(unused_port, *args)) == (
        f"jobmonitor: cannot connect to 127.0.0.1:{unused_port}: connection refused "
        "(is the server running?)")


def test_a_client_command_asks_without_asyncio_or_lxml(cli_server):
    # What makes `jobmonitor status` start fast: it imports neither (nor the server).
    code = ("import sys; from jobmonitor.cli import main; status = main(sys.argv[1:]); "
            "print(sorted(name for name in sys.modules if name.split('.')[0] in "
            "('asyncio', 'lxml', 'sqlite3', 'ssl', 'tomllib') or name.startswith(("
            "'jobmonitor.server', 'jobmonitor.engine', 'jobmonitor.store', 'jobmonitor.app', "
            "'jobmonitor.programs')))); sys.exit(status)")
    cli(cli_server.port, "submit", "count", "-v", "Count=1", "-v", "Delay=0")
    for args in (["status", "T0000001"], ["info", "T0000001"], ["queue"], ["projects"],
                 ["outputs", "T0000001"], ["log"], ["delete", "T0000001"]):
        result = subprocess.run([sys.executable, "-c", code, *args, "--port",
                                 str(cli_server.port)], cwd=ROOT, capture_output=True,
                                text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[-1] == "[]", args


def test_unknown_host():
    line = one_error_line(cli(7400, "list", "--host", "no-such-host.invalid"))
    assert line.startswith("jobmonitor: cannot reach no-such-host.invalid:7400: ")


@pytest.mark.parametrize(("args", "message"), [
    (["submit", "count", "-v", "Count"], "expected NAME=VALUE, got 'Count'"),
    (["watch", "T0000001", "--from-line", "0"], "expected a line number of 1 or more"),
    (["watch", "T0000001", "--from-line", "\u0661\u0662"],
     "expected a line number of 1 or more"),
    (["list", "--port", "\uff17\uff14\uff10\uff11"], "expected a port number 1..65535"),
    (["status", "T0000001", "--format", "yaml"], "invalid choice: 'yaml'"),
    (["list", "--port", "99999"], "expected a port number 1..65535, got '99999'"),
    (["list", "--cafile", "missing.pem"], "--cafile missing.pem: No such file"),
    (["queue", "--json"], "jobmonitor queue: unrecognized arguments: --json"),
    (["status", "T0000001", "T0000002"], "unrecognized arguments: T0000002"),
])
def test_bad_arguments(args, message):
    line = one_error_line(cli(None, *args))
    assert line.startswith("jobmonitor") and message in line


@pytest.mark.parametrize("args", [["--port", "7401", "queue"], ["--port=7401", "queue"],
                                  ["--tls", "list"], ["--port", "7401"]])
def test_an_option_before_the_command_says_where_it_goes(args):
    # argparse alone would take 7401 for the command's name ("invalid choice").
    assert one_error_line(cli(None, *args)) == (
        f"jobmonitor: options go after the command's name: jobmonitor COMMAND "
        f"{args[0].partition('=')[0]} ... (see jobmonitor --help)")


@pytest.mark.parametrize(("command", "suggested"), [("stauts", "status"), ("sever", "serve"),
                                                    ("cancle", "cancel"), ("outptus", "outputs")])
def test_an_unknown_command_suggests_the_nearest(command, suggested):
    assert one_error_line(cli(None, command, "T0000001")) == (
        f"jobmonitor: unknown command {command!r}: did you mean {suggested}? "
        "(see jobmonitor --help)")


def test_an_unknown_command_far_from_any_lists_them():
    line = one_error_line(cli(None, "xyzzy"))
    assert line.startswith("jobmonitor: unknown command 'xyzzy': the commands are serve, ")
    assert ", restart-server, queues, pause-queue, resume-queue, rerun (see jobmonitor --help)" \
        in line


def test_help_and_version_still_come_before_the_command():
    assert cli(None, "--version").stdout.startswith("jobmonitor ")
    assert "COMMAND" in cli(None, "--help").stdout


# -- a lost connection -------------------------------------------------------------------


def stderr_line(proc: subprocess.Popen[str], timeout_s: float = 10) -> str:
    """The next line the process writes on stderr, within ``timeout_s``."""
    assert proc.stderr is not None
    ready, _, _ = select.select([proc.stderr], [], [], timeout_s)
    assert ready, f"nothing on stderr for {timeout_s} s"
    return proc.stderr.readline()


def test_a_lost_connection_is_told_on_stderr_while_the_server_is_gone(tmp_path):
    """The server is killed mid-job: while it is gone, submit says on stderr that it is
    re-attaching and from which line; once a new server is up, that it is back.  Its
    stdout is what a watch of the whole job prints."""
    store = f"sqlite:///{tmp_path / 'jobs.db'}"
    server = ServerProcess("--jobs", "tests/support/jobs.py", "--store", store)
    port = server.port
    follower = started(port, "submit", "wait", "-v", "Key=never")
    restarted: list[ServerProcess] = []
    try:
        seen = read_until(follower, "J0000100: waiting")
        # An acknowledged submit is durable, and so is everything recorded before it.
        assert cli(port, "submit", "echo", "--no-monitor").returncode == 0
        server.proc.kill()
        server.proc.communicate(timeout=10)
        assert stderr_line(follower) == (
            f"jobmonitor: lost the connection to 127.0.0.1:{port}; re-attaching to "
            "T0000001 from line 3 (for up to 60 s)\n")
        restarted.append(ServerProcess("--jobs", "tests/support/jobs.py", "--store", store,
                                       "--port", str(port)))
        rest, err = follower.communicate(timeout=30)
        replay = cli(port, "watch", "T0000001")
    finally:
        follower.kill()
        server.kill()
        for process in restarted:
            process.kill()
    assert (follower.returncode, err) == (1, "jobmonitor: re-attached to T0000001\n")
    assert rest.splitlines() == ["J0005002: Job interrupted by a server restart",
                                 "J0000022: Job failed.",
                                 "J0000001: Transaction T0000001 ended"]
    assert (replay.stdout.splitlines(), replay.stderr) == (seen + rest.splitlines(), "")


#: A job's stream in one piece, and the same stream broken after line 2: the
#: submit's connection ends there, the re-attach (MonitorJob) gets the rest.
WHOLE_STREAM = (b"R0000000: T0000001\r\nJ0000100: Machine name: x\r\nJ0000100: one\r\n"
                b"J0000100: two\r\nJ0000020: Job completed successfully.\r\n"
                b"J0000001: Transaction T0000001 ended\r\n")
_CUT = WHOLE_STREAM.index(b"J0000100: two")
BROKEN_STREAM = (WHOLE_STREAM[:_CUT], b"R0000000: T0000001\r\n" + WHOLE_STREAM[_CUT:])


@pytest.mark.parametrize("mode", [(), ("--json",)], ids=["plain", "json"])
async def test_a_lost_connection_changes_stderr_only(mode):
    """Against a server that drops the stream after line 2, stdout is what it is when
    the stream never breaks (and stderr then is empty); stderr has the two notices."""
    async def submit(answers: list[bytes | None]
                     ) -> tuple[int | None, str, list[str], list[str | None]]:
        async with scripted_server(answers) as (port, packets):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "jobmonitor", "submit", "x", *mode, "--port", str(port),
                cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await asyncio.wait_for(proc.communicate(), 30)
        notices = err.decode().replace(f"127.0.0.1:{port}", "HOST:PORT").splitlines()
        return (proc.returncode, out.decode(), notices,
                [p.variables.get("_sys_FromLine") for p in packets])

    unbroken = await submit([WHOLE_STREAM])
    broken = await submit(list(BROKEN_STREAM))
    assert unbroken[0] == broken[0] == 0
    assert broken[1] == unbroken[1] and "Transaction T0000001 ended" in broken[1]
    assert (unbroken[2], unbroken[3]) == ([], [None])
    assert (broken[2], broken[3]) == ([
        ("jobmonitor: lost the connection to HOST:PORT; re-attaching to T0000001 from line 3 "
         "(for up to 60 s)"),
        "jobmonitor: re-attached to T0000001"], [None, "3"])
    doc = (ROOT / "docs" / "client.md").read_text()
    for notice in broken[2]:  # the documented lines are the ones printed
        assert "\n  " + notice.replace("HOST:PORT", "127.0.0.1:7400") + "\n" in doc


async def test_the_commands_send_their_packets_as_they_always_did():
    """One packet per connection: no command asks the server to keep it open."""
    async with scripted_server([WHOLE_STREAM, b"R0000000: T0000001\r\n"]) as (port, packets):
        for command in (["submit", "x"], ["cancel", "T0000001"]):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "jobmonitor", *command, "--port", str(port), cwd=ROOT,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
            assert await asyncio.wait_for(proc.wait(), 30) == 0
    assert [p.command for p in packets] == ["SubmitJob", "CancelJob"]
    assert not any(name.startswith("_sys_Keep") for p in packets for name in p.variables)


def test_address_from_the_environment(cli_server):
    env = {"JOBMONITOR_HOST": "127.0.0.1", "JOBMONITOR_PORT": str(cli_server.port)}
    assert cli(None, "list", env=env).returncode == 0
    bad = cli(None, "list", env={"JOBMONITOR_PORT": "http"})
    assert one_error_line(bad) == \
        "jobmonitor: JOBMONITOR_PORT: expected a port number 1..65535, got 'http'"


def test_server_text_is_printed_with_control_characters_escaped():
    server = ServerProcess("--jobs", "tests/support/jobs.py")
    try:
        result = cli(server.port, "submit", "control")
        assert result.returncode == 0
        assert not any(ch in result.stdout for ch in "\x00\x07\x1b\x7f\r\u2028")
        assert "J0000100: bell\\x07 escape\\x1b[2J nul\\x00 del\\x7f tab\tend" in result.stdout
    finally:
        server.kill()


async def test_raw_control_characters_from_a_rogue_server_are_escaped():
    async def rogue(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(4096)
        writer.write(b"R0000000: T0000001\r\nJ0000100: \x1b[2Jgone\x07\xc2\x9b\r\n"
                     b"J0000020: Job completed successfully.\r\n"
                     b"J0000001: Transaction T0000001 ended\r\n")
        await writer.drain()
        writer.close()

    listener = await asyncio.start_server(rogue, "127.0.0.1", 0)
    async with listener:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "jobmonitor", "submit", "x", "--port",
            str(listener.sockets[0].getsockname()[1]), cwd=ROOT,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0
    assert out.decode().splitlines()[1] == "J0000100: \\x1b[2Jgone\\x07\\x9b"


# -- a terminal gets a progress bar -----------------------------------------------------------


def read_pty(command: list[str]) -> tuple[int, str]:
    """Run ``command`` with its stdout on a pseudo-terminal; return status and output."""
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(command, cwd=ROOT, stdout=terminal, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, env={**os.environ, "TERM": "xterm",
                                                           "COLUMNS": "60"})
    os.close(terminal)
    chunks = []
    try:
        while True:
            ready, _, _ = select.select([controller], [], [], 30)
            assert ready, "no output from the client for 30 s"
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the terminal closed: the client has exited
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(controller)
    _, errors = proc.communicate(timeout=30)
    assert not errors
    return proc.returncode, b"".join(chunks).decode()


def test_progress_bar_on_a_terminal(cli_server):
    status, output = read_pty([sys.executable, "-m", "jobmonitor", "submit", "count",
                               "-v", "Count=2", "-v", "Delay=0", "--port", str(cli_server.port)])
    assert status == 0
    assert "J0000110" not in output  # progress lines drive the bar instead
    assert "\r\x1b[K[" in output and "100%  2/2" in output
    plain = [line.rsplit("\r\x1b[K", 1)[-1] for line in output.split("\r\n") if line]
    assert [line for line in plain if line.startswith(("R", "J"))] == [
        line for line in COUNT if "J0000110" not in line]


def test_render_bar():
    assert render_bar(Progress(1, 4, 25, "step\x1b"), 60) == \
        "[#####---------------]  25%  1/4  step\\x1b"
    assert render_bar(Progress(3, 0, 0, ""), 40) == "[-------------] 3 done"
    assert len(render_bar(Progress(1, 2, 50, "x" * 200), 30)) == 29


def test_render_bar_fits_wide_and_combining_characters():
    # Of 31 columns the bar leaves one for the cursor; "[#####-----]  50%  1/2  "
    # takes 24: six cells are left for the message.
    assert render_bar(Progress(1, 2, 50, "報告書作成中"), 31).endswith("]  50%  1/2  報告書")
    assert render_bar(Progress(1, 2, 50, "報x告書"), 31).endswith("  報x告")
    assert render_bar(Progress(1, 2, 50, "e\u0301" * 9), 31).endswith("  " + "e\u0301" * 6)
    assert render_bar(Progress(1, 2, 50, "a\tb\tcdefgh"), 31).endswith("  a b cd")


def test_a_progress_bar_cut_short_ends_its_line():
    out = io.StringIO()
    printer = LivePrinter(out)
    printer.line(StreamLine(2, 110, "Progress: 1/4 (25%)"))
    printer.close()
    assert out.getvalue().endswith("]  25%  1/4\n")
    printer.close()  # once only
    assert out.getvalue().count("\n") == 1


def test_a_notice_takes_the_progress_bars_line_and_the_bar_comes_back():
    out, err = io.StringIO(), io.StringIO()
    printer = LivePrinter(out, err)
    printer.notice("jobmonitor: before any bar")
    assert (out.getvalue(), err.getvalue()) == ("", "jobmonitor: before any bar\n")
    printer.line(StreamLine(2, 110, "Progress: 1/4 (25%)"))
    bar = out.getvalue()
    printer.notice("jobmonitor: re-attached to T0000001")
    assert out.getvalue() == bar + "\r\x1b[K" + bar.removeprefix("\r\x1b[K")
    assert err.getvalue().splitlines()[-1] == "jobmonitor: re-attached to T0000001"


def test_display_text_keeps_one_line_one_line():
    assert display_text("a\nb\u202ec\u200bd\x1be\tf") == "a\\x0ab\\u202ec\\u200bd\\x1be\tf"
    assert table(("A", "B"), [("x\ty", "z\nw")]) == ["A       B", "x\\x09y  z\\x0aw"]


def test_table_columns_line_up_in_terminal_cells():
    # "報告" fills four cells, like "abcd"; "e\u0301" one, like "x".
    assert table(("NAME", "N"), [("報告", "1"), ("e\u0301", "2"), ("abcd", "3")]) == [
        "NAME  N", "報告  1", "e\u0301     2", "abcd  3"]


def test_watch_from_the_ended_line_exits_with_the_outcome(cli_server):
    assert cli(cli_server.port, "submit", "partial").returncode == 3
    lines = len(cli(cli_server.port, "watch", "T0000001").stdout.splitlines()) - 1
    late = cli(cli_server.port, "watch", "T0000001", "--from-line", str(lines))
    assert (late.returncode, late.stdout) == (
        3, "R0000000: T0000001\nJ0000001: Transaction T0000001 ended\n")


def test_a_job_name_cannot_forge_a_row_of_the_list(cli_server):
    cli(cli_server.port, "submit", "report", "--no-monitor",
        "--job-name", "evil\nT0000999     Completed  payroll  forged")
    listed = cli(cli_server.port, "list", "--all").stdout.splitlines()
    assert len(listed) == 2
    assert listed[1].endswith("evil\\x0aT0000999     Completed  payroll  forged")


def test_list_filters_by_status_and_project(cli_server):
    cli(cli_server.port, "submit", "report", "--job-name", "Q3")
    cli(cli_server.port, "submit", "count", "-v", "Count=0")
    cli(cli_server.port, "submit", "fail")
    port, every = cli_server.port, ["list", "--all"]
    assert cli(port, *every, "--status", "completed").stdout.splitlines() == [
        "TRANSACTION  STATUS     PROJECT  JOB NAME",
        "T0000001     Completed  report   Q3",
        "T0000002     Completed  count"]
    assert cli(port, *every, "--status", "Completed", "--project", "count").stdout.splitlines() \
        == ["TRANSACTION  STATUS     PROJECT  JOB NAME", "T0000002     Completed  count"]
    assert [job["Id"] for job in json.loads(
        cli(port, *every, "--status", "failed", "--json").stdout)] == ["T0000003"]
    assert json.loads(cli(port, *every, "--project", "none", "--json").stdout) == []
    wrong = cli(port, *every, "--status", "done")
    assert wrong.returncode == 2 and "'done' is not a job state (one of Created, Queued" \
        in wrong.stderr


def test_list_cuts_long_job_names_to_the_terminal(cli_server):
    name = "quarterly-report-" * 6
    cli(cli_server.port, "submit", "report", "--job-name", name)
    status, output = read_pty([sys.executable, "-m", "jobmonitor", "list", "--all",
                               "--port", str(cli_server.port)])
    assert status == 0
    lines = output.splitlines()
    assert lines[1].startswith("T0000001     Completed  report   quarterly-report-")
    assert [len(line) for line in lines] == [len(lines[0]), 60]  # COLUMNS=60
    assert lines[1].endswith("\u2026")
    # not a terminal: whole names, for scripts
    assert cli(cli_server.port, "list", "--all").stdout.splitlines()[1].endswith(name)


def test_a_value_no_packet_can_carry_is_one_error_line(cli_server):
    assert one_error_line(cli(cli_server.port, "submit", "count", "-v", "B=\x01")) == (
        "jobmonitor: the value of variable 'B' contains U+0001, which XML cannot carry")


def test_exit_codes_are_documented():
    doc = (ROOT / "docs" / "client.md").read_text()
    for outcome, status in EXIT_CODES.items():
        assert f"| {status} | {outcome.value}" in doc


# -- the examples ---------------------------------------------------------------------------------


@pytest.fixture
def on_path(tmp_path) -> dict[str, str]:
    """An environment whose PATH has a ``jobmonitor`` command running this checkout."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    command = bin_dir / "jobmonitor"
    command.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m jobmonitor "$@"\n')
    command.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": str(ROOT)}


@pytest.mark.parametrize(("args", "status", "last"), [
    (["count", "Count=1", "Delay=0"], 0, "run-job: count succeeded"),
    (["partial"], 3, "run-job: partial only partially completed: check the errors above"),
    (["fail", "InputFile=my orders.csv"], 1, "run-job: fail failed"),
    (["nope"], 2, "run-job: could not run nope"),
])
def test_shell_script_example_branches_on_the_exit_code(cli_server, on_path, args, status,
                                                         last):
    result = subprocess.run(["sh", "examples/run-job.sh", *args], cwd=ROOT,
                            env={**on_path, "JOBMONITOR_PORT": str(cli_server.port)},
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == status
    assert result.stdout.splitlines()[-1] == last
    if args[0] == "fail":
        assert "Input file not found: my orders.csv" in result.stdout


def test_client_library_example(cli_server):
    result = subprocess.run([sys.executable, "examples/client.py", "127.0.0.1",
                             str(cli_server.port)], cwd=ROOT, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "submitted T0000001", "  33% done", "  66% done", "  100% done",
        "T0000001 (client demo): success, 9 lines",
        "cannot cancel: R0005010 T0000001 has already ended (Completed)"]


# -- every README example ----------------------------------------------------------------------


def readme_section(heading: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(heading)
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else len(text)]


def transcript(section: str) -> list[tuple[str, list[str]]]:
    """The ``$ command`` lines of a README section's plain fenced blocks, with their output."""
    steps: list[tuple[str, list[str]]] = []
    for block in section.split("```")[1::2]:
        if not block.startswith("\n"):  # ```python, ```toml: not a terminal session
            continue
        for line in block.strip("\n").splitlines():
            if line.startswith("$ "):
                steps.append((line[2:], []))
            else:
                steps[-1][1].append(line)
    return steps


def replay(steps: list[tuple[str, list[str]]], env: dict[str, str]) -> None:
    """Run the commands in one shell, in order; each must print what the README shows."""
    script = ["exec 2>&1"]
    for command, _ in steps:
        # `echo $?` must see the status of the command before it, not of the marker.
        script.append(f"{command}\nstatus=$?\necho '@@@'\n(exit $status)")
    result = subprocess.run(["sh", "-c", "\n".join(script)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    outputs = result.stdout.split("@@@\n")[:-1]
    assert len(outputs) == len(steps), result.stdout
    for (command, expected), output in zip(steps, outputs, strict=True):
        assert output.splitlines() == expected, command


def test_readme_cli_session(cli_server, on_path):
    steps = transcript(readme_section("## Use the `jobmonitor` command"))
    assert len(steps) == 6
    replay(steps, {**on_path, "JOBMONITOR_PORT": str(cli_server.port)})


def test_readme_program_projects_session(on_path):
    steps = transcript(readme_section("## Run programs as jobs"))
    assert steps[0] == ("jobmonitor serve --config examples/jobmonitor.toml", [])
    server = ServerProcess("--config", "examples/jobmonitor.toml", "--machine-name", "demo-host")
    try:
        replay(steps[1:], {**on_path, "JOBMONITOR_PORT": str(server.port)})
        assert server.stop() == 0
    finally:
        server.kill()


@pytest.mark.skipif(shutil.which("socat") is None, reason="needs socat")
def test_the_socat_example_in_the_client_doc_is_what_socat_does(cli_server, tmp_path):
    section = (ROOT / "docs" / "client.md").read_text()
    section = section[section.index("### Without the client: netcat and socat"):]
    packet = section[section.index("```xml\n") + len("```xml\n"):]
    (tmp_path / "long.xml").write_text(packet[:packet.index("```")])
    steps = transcript(section[:section.index("\n## ")])
    assert [command.split(" - ")[0] for command, _ in steps] == ["socat", "socat -t 3600"]
    for command, shown in steps:  # without -t the stream is cut after half a second
        command = command.replace("127.0.0.1:7400", f"127.0.0.1:{cli_server.port}")
        result = subprocess.run(command, shell=True, cwd=tmp_path, capture_output=True,
                                text=True, timeout=30)
        assert (result.returncode, result.stdout.splitlines()) == (0, shown), command


@pytest.mark.parametrize(("heading", "started"), [
    ("## Write jobs", "Serve it with `jobmonitor serve --jobs myjobs.py`"),
    ("## Run programs as jobs", "$ jobmonitor serve --config examples/jobmonitor.toml")])
def test_the_readme_stops_make_serve_before_it_starts_another_server(heading, started):
    # Read top to bottom, `make serve` still runs: a second server on its port and
    # database would stop at "address already in use" (or the database's lock).
    section = readme_section(heading)
    said = " ".join(section[:section.index(started) + 400].split())
    assert "`make serve`, Ctrl-C in its terminal" in said or \
        "after stopping `make serve` (Ctrl-C in its terminal)" in said
    if heading == "## Write jobs":  # or side by side, on a port and database of its own
        # (7401 is make serve's web page)
        assert "--port 7402 --store sqlite:///myjobs.db" in said


def test_readme_config_file_is_the_example_file():
    section = readme_section("## Run programs as jobs")
    block = section[section.index("```toml\n") + len("```toml\n"):]
    assert block[:block.index("```")] == (ROOT / "examples" / "jobmonitor.toml").read_text()


def test_readme_python_client_example(cli_server):
    section = readme_section("## Use the Python client")
    code = section[section.index("```python\n") + len("```python\n"):]
    code = code[:code.index("```")].replace("7400", str(cli_server.port))
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "1 Machine name: demo-host",
        "2 Composing record 1",
        "3 Evaluation failed for variable: FormatPriceJS",
        "4 Script result was null, line 48, column 4",
        "5 Composing record 3",
        "6 Job only partially completed.",
        "7 Transaction T0000001 ended",
        "partial",
        "Flyers",
    ]


# -- users and TLS ------------------------------------------------------------------------------


def test_user_password_from_the_environment(tmp_path):
    from jobmonitor.users import hash_password

    config = tmp_path / "jobmonitor.toml"
    config.write_text(f'[server]\njobs = ["examples/demo_jobs.py"]\n'
                      f'[users.ann]\npassword_hash = "{hash_password("ann-pw")}"\n')
    server = ServerProcess("--config", str(config))
    try:
        ok = cli(server.port, "submit", "partial", "--user", "ann",
                 env={"JOBMONITOR_PASSWORD": "ann-pw"})
        assert ok.returncode == 3
        listed = cli(server.port, "list", "--all", env={"JOBMONITOR_USER": "ann",
                                                        "JOBMONITOR_PASSWORD": "ann-pw"})
        assert listed.stdout.splitlines()[1].startswith("T0000001")
        wrong = cli(server.port, "list", "--user", "ann", env={"JOBMONITOR_PASSWORD": "x"})
        assert one_error_line(wrong) == \
            "jobmonitor: R0005012: Not authenticated: wrong user or password"
        missing = cli(server.port, "list", "--user", "ann", stdin="")
        assert one_error_line(missing) == \
            "jobmonitor: no password for ann: set JOBMONITOR_PASSWORD"
        for command in ("log", "restart-server"):  # for administrators only
            refused = cli(server.port, command, "--user", "ann",
                          env={"JOBMONITOR_PASSWORD": "ann-pw"})
            assert one_error_line(refused).startswith("jobmonitor: R0005013: Permission denied")
        anonymous = cli(server.port, "list")
        assert one_error_line(anonymous).startswith("jobmonitor: R0005012: Not authenticated")
        assert one_error_line(anonymous).endswith(
            " (give --user NAME, or set JOBMONITOR_USER and JOBMONITOR_PASSWORD)")
    finally:
        server.kill()


def test_end_of_input_at_the_password_prompt_is_one_line(unused_port):
    status, output = on_a_terminal(
        CTRL_D, command=("list", "--user", "ann", "--port", str(unused_port)))
    assert status == 2 and "Traceback" not in output, output
    assert output.splitlines()[-1] == "jobmonitor: no password for ann"


def test_tls_with_a_certificate_file(certificate):
    server = ServerProcess("--jobs", "examples/demo_jobs.py",
                           "--tls-cert", str(certificate / "cert.pem"),
                           "--tls-key", str(certificate / "key.pem"))
    try:
        result = cli(server.port, "submit", "partial", "--cafile", str(certificate / "ca.pem"))
        assert result.returncode == 3
        asked = cli(server.port, "status", "T0000001", "--cafile", str(certificate / "ca.pem"))
        assert asked.returncode == 0 and "Status: CompletedWithErrors" in asked.stdout
        for command in ("list", "queue"):  # the asyncio client; a plain socket
            untrusted = cli(server.port, command, "--tls")
            assert one_error_line(untrusted).startswith(
                f"jobmonitor: cannot reach 127.0.0.1:{server.port}: ")
            assert "certificate verify failed" in untrusted.stderr
            plain = cli(server.port, command)
            assert one_error_line(plain).endswith("(if the server uses TLS, add --tls)")
    finally:
        server.kill()
