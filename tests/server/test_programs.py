"""Program jobs: argv templates without a server, then real programs behind a real server."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path

import pytest

from jobmonitor import ConfigError, JobMonitor, Outcome, Reply, RequestError
from jobmonitor.client import Client, ReplyError
from jobmonitor.programs import outputs as outputs_module
from jobmonitor.programs.outputs import media_type
from jobmonitor.programs.process import MAX_LINE_BYTES
from jobmonitor.programs.program import Program, add_programs

from ..conftest import MACHINE
from ..process.test_cli import ServerProcess
from ..support.helpers import exchange, xml_packet

PY = sys.executable

# -- templates and checks, without a server -------------------------------------------


def test_placeholders_fill_single_argv_items():
    program = Program("p", ("tool", "-C", "{dir}", "--out={dir}/x", "{{literal}}", "{a}{b}"),
                      variables=("dir", "a", "b"))
    values = {"dir": "my docs; rm -rf /", "a": "", "b": "$(x) *"}
    assert program.argv(values) == ["tool", "-C", "my docs; rm -rf /",
                                    "--out=my docs; rm -rf //x", "{literal}", "$(x) *"]


@pytest.mark.parametrize(("fields", "message"), [
    ({"command": ()}, "command: must be a non-empty list of strings"),
    ({"command": ("ls", "{dir}")}, "command[1]: placeholder {dir} is not a declared variable"),
    ({"command": ("ls", "{output_dir}")}, "placeholder {output_dir} is not a declared"),
    ({"command": ("ls", "{dir")}, "command[1]: lone '{'"),
    ({"command": ("ls", "a}b")}, "command[1]: lone '}'"),
    ({"command": ("ls", "{dir!r}"), "variables": ("dir",)}, "placeholder {dir!r}"),
    ({"command": ("ls",), "variables": ("two words",)}, "variables: 'two words' is not a valid"),
    ({"command": ("ls",), "variables": ("a", "a")}, "variables: 'a' is listed twice"),
    ({"command": ("ls",), "variables": ("output_dir",)}, "is listed twice or is reserved"),
    ({"command": ("ls",), "timeout_s": 0}, "timeout_s: must be a finite number greater than 0"),
    ({"command": ("ls",), "kill_grace_s": -1},
     "kill_grace_s: must be a finite number of 0 or more, got -1"),
    ({"command": ("ls",), "kill_grace_s": float("inf")},
     "kill_grace_s: must be a finite number of 0 or more, got inf"),
    ({"command": ("ls",), "kill_grace_s": "5"},
     "kill_grace_s: must be a finite number of 0 or more, got '5'"),
    # the operating system cannot pass these: refused at start-up, not by every job
    ({"command": ("ls", "a\x00b")}, "command[1]: contains a NUL character"),
    ({"command": ("ls",), "env": {"": "x"}}, "env: '' is not a valid name"),
    ({"command": ("ls",), "env": {"A=B": "x"}}, "env: 'A=B' is not a valid name"),
    ({"command": ("ls",), "env": {"A\x00": "x"}}, "env: 'A\\x00' is not a valid name"),
    ({"command": ("ls",), "env": {"A": "x\x00y"}}, "env: the value of 'A' contains a NUL"),
    ({"command": ("ls",), "cwd": "/tmp\x00"}, "cwd: contains a NUL character"),
    ({"command": ("ls",), "output_dir": "out\x00"}, "output_dir: contains a NUL character"),
    ({"command": ("",)}, "command[0]: the program to run must not be empty"),
    ({"command": (" ", "x")}, "command[0]: the program to run must not be empty"),
    ({"command": ("ls",), "cwd": ""}, "cwd: must not be empty (leave it out for none)"),
    ({"command": ("ls",), "output_dir": " "}, "output_dir: must not be empty"),
])
def test_bad_programs_are_config_errors_naming_the_field(fields, message):
    with pytest.raises(ConfigError, match=None) as caught:
        Program("p", **fields)
    assert message in str(caught.value)


def test_builtin_placeholders():
    program = Program("p", ("x", "{transaction_id}", "{output_dir}"), output_dir="out")
    assert program.argv({"transaction_id": "T0000001", "output_dir": "/o"}) == \
        ["x", "T0000001", "/o"]
    assert program.job_output_dir("T0000001") == (Path("out") / "T0000001").absolute()


@pytest.mark.parametrize(("params", "code", "detail"), [
    ({"dir": "d", "extra": "1"}, Reply.INVALID_VALUE, "takes no variable extra (it takes: dir)"),
    ({}, Reply.MISSING_VARIABLE, "dir"),
    ({"dir": "--delete"}, Reply.INVALID_VALUE, "dir must not start with '-'"),
    ({"dir": "a\x00b"}, Reply.INVALID_VALUE, "NUL"),
    # names the client made up are quoted on one short line
    ({"dir": "d", "a\nb": "1", "x" * 500: "1"}, Reply.INVALID_VALUE,
     "takes no variable a b, " + "x" * 72 + "... (it takes: dir)"),
])
def test_check_refuses_bad_variables(params, code, detail):
    program = Program("p", ("ls", "{dir}"), variables=("dir",))
    with pytest.raises(RequestError) as caught:
        program.check({"ProjectName": "p", "JobName": "j", **params})
    assert caught.value.code is code and detail in caught.value.detail


def test_check_allows_dashes_inside_an_item_or_when_told():
    Program("p", ("ls", "--dir={dir}"), variables=("dir",)).check({"dir": "-x"})
    Program("p", ("ls", "{dir}"), variables=("dir",), allow_leading_dash=True).check({"dir": "-x"})


def test_the_dash_check_looks_at_the_filled_argument():
    program = Program("p", ("ls", "{a}{b}", "{transaction_id}{c}"), variables=("a", "b", "c"))
    program.check({"a": "x", "b": "-rf", "c": "-c"})  # after text: not an option
    with pytest.raises(RequestError) as caught:
        program.check({"a": "-x", "b": "y", "c": "z"})
    assert caught.value.detail.startswith("a must not start with '-'")


async def test_a_nul_character_at_start_fails_the_job_without_a_traceback():
    from jobmonitor import JobFailed
    from jobmonitor.programs.process import start_program

    with pytest.raises(JobFailed, match="cannot run tr\x00ue: embedded null byte"):
        await start_program(["tr\x00ue"], None, {})


# -- real programs behind a real server -----------------------------------------------------

ARGV = "import json, sys; print(json.dumps(sys.argv[1:]))"
MIXED = """
import sys
import threading
for n in range(1, 4):
    print("out %d" % n, flush=True)
    print("err %d" % n, file=sys.stderr, flush=True)
sys.exit(int(sys.argv[1]))
"""  # no braces: in a command, { and } are placeholders ({{ and }} are literal braces)
TERM = """
import signal, sys, time
def stop(*_):
    print("got TERM", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
print("ready", flush=True)
time.sleep(60)
"""
STUBBORN = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
time.sleep(60)
"""
TICKS = """
import os, sys, time
print(os.getpid(), flush=True)
for n in range(1, int(sys.argv[1]) + 1):
    time.sleep(0.02)
    print("tick %d" % n, flush=True)
"""
WRITE = """
import os, pathlib, sys
out = pathlib.Path(sys.argv[1])
(out / "report.txt").write_text("hi")
(out / "data").mkdir()
(out / "data" / "rows.json").write_text("[]")
(out / "data-2.txt").write_text("")          # sorted after data/rows.json, as paths are
os.symlink(out / "report.txt", out / "link.txt")  # a link to a file is a file
os.symlink(out / "data", out / "folder-link")     # a link to a folder is not followed
os.mkfifo(out / "pipe")                           # not a regular file
print(os.environ["JOBMONITOR_OUTPUT_DIR"] == str(out), os.environ["JOBMONITOR_TRANSACTION_ID"])
"""

# A child that ignores SIGTERM (and holds no pipe of the job), of a program
# that does not: it exits on it.
ORPHAN = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import os, signal, time; "
                          "signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                          "print('ready', flush=True); os.close(1); os.close(2); "
                          "time.sleep(60)"])
print(child.pid, flush=True)
time.sleep(60)
"""
# A program that exits at once, leaving a child that holds its output open.
LEFT = """
import subprocess, sys
child = subprocess.Popen([sys.executable, "-c", "import time; print('ready', flush=True); "
                          "time.sleep(60)"])
print(child.pid, flush=True)
"""
# A child that leaves the program's process group (no stop reaches it) and
# holds its output open: a stop gives up reading after DRAIN_S.
ESCAPE = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                         start_new_session=True)
print(child.pid, flush=True)
time.sleep(60)
"""
STUBBORN_PID = """
import os, signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print(os.getpid(), flush=True)
time.sleep(60)
"""
UTF8 = "import sys; sys.stdout.buffer.write(b'x' + 'é'.encode() * 40000 + b'\\n')"
# A progress display: each step rewrites the line, after a CR (as curl and tqdm do).
PROGRESS = ("import sys, time; sys.stdout.write('\\rstep 1\\rstep 2'); sys.stdout.flush(); "
            "time.sleep(60)")
# Half an archive, then a failure (as tar leaves one when the disk fills up).
HALF = ("import sys; open(sys.argv[1] + '/archive.tar.gz', 'wb').write(b'half'); "
        "sys.exit(2)")
# Half an archive, then wait to be cancelled.
HALF_WAIT = ("import sys, time; open(sys.argv[1] + '/archive.tar.gz', 'wb').write(b'half'); "
             "print('ready', flush=True); time.sleep(60)")
ENVIRON = """
import os
for name in sorted(os.environ):
    if name.startswith("JOBMONITOR_"):
        print(name, os.environ[name])
print("OTHER", os.environ.get("OTHER"))
"""


def programs(tmp_path: Path) -> list[Program]:
    return [
        Program("argv", (PY, "-c", ARGV, "{name}", "--name={name}"), variables=("name",)),
        Program("mixed", (PY, "-c", MIXED, "{code}"), variables=("code",)),
        Program("term", (PY, "-c", TERM)),
        Program("stubborn", (PY, "-c", STUBBORN), kill_grace_s=0.2),
        Program("slow", (PY, "-c", STUBBORN), timeout_s=0.5, kill_grace_s=0.1),
        Program("ticks", (PY, "-c", TICKS, "{count}"), variables=("count",)),
        Program("write", (PY, "-c", WRITE, "{output_dir}"), output_dir=str(tmp_path / "out")),
        Program("where", (PY, "-c", "import os; print(os.getcwd()); print(os.environ['COLOR'])"),
                cwd=str(tmp_path), env={"COLOR": "blue"}),
        Program("long", (PY, "-c", f"print('x' * {MAX_LINE_BYTES * 2 + 5})")),
        Program("missing", (str(tmp_path / "no-such-program"),)),
        Program("nowhere", (PY, "-c", "pass"), cwd=str(tmp_path / "no-such-folder")),
        Program("orphan", (PY, "-c", ORPHAN), kill_grace_s=0.3),
        Program("left", (PY, "-c", LEFT), kill_grace_s=0.3),
        Program("escape", (PY, "-c", ESCAPE)),
        Program("late", (PY, "-c", STUBBORN_PID), timeout_s=0.3, kill_grace_s=1.0),
        Program("rt", (PY, "-c", "import os; os.kill(os.getpid(), 40)")),
        Program("utf8", (PY, "-c", UTF8)),
        Program("progress", (PY, "-c", PROGRESS), kill_grace_s=0.2),
        Program("environ", (PY, "-c", ENVIRON), env={"JOBMONITOR_MINE": "kept"},
                output_dir=str(tmp_path / "out")),
        Program("mixed-info", (PY, "-c", MIXED, "{code}"), variables=("code",), stderr="info"),
        Program("half", (PY, "-c", HALF, "{output_dir}"), output_dir=str(tmp_path / "out")),
        Program("half-wait", (PY, "-c", HALF_WAIT, "{output_dir}"),
                output_dir=str(tmp_path / "out"), kill_grace_s=0.2),
    ]


@pytest.fixture
async def client(tmp_path):
    app = JobMonitor()
    add_programs(app, programs(tmp_path))
    async with app.serve(host="127.0.0.1", port=0, machine_name=MACHINE, linger_s=1.0,
                         shutdown_grace_s=1.0) as server:
        yield Client("127.0.0.1", server.port)


async def texts(client: Client, project: str, **variables: str) -> tuple[list[str], Outcome]:
    tx = await client.submit(project, variables)
    lines = [line.wire_text() async for line in tx]
    return lines[1:-2], (await tx.result()).outcome


async def test_values_stay_single_arguments(client):
    value = "two words; $(rm -rf /) 'q' \"d\" *"
    lines, outcome = await texts(client, "argv", name=value)
    assert outcome is Outcome.SUCCESS
    assert json.loads(lines[0].removeprefix("J0000100: ")) == [value, f"--name={value}"]


@pytest.mark.parametrize(("code", "outcome"), [("0", Outcome.SUCCESS), ("3", Outcome.FAILED)])
async def test_stdout_is_info_stderr_is_error_exit_status_decides(client, code, outcome):
    lines, got = await texts(client, "mixed", code=code)
    assert got is outcome
    assert [line for line in lines if "out" in line] == [
        "J0000100: out 1", "J0000100: out 2", "J0000100: out 3"]
    assert [line for line in lines if "err" in line] == [
        "J0005000: err 1", "J0005000: err 2", "J0005000: err 3"]
    if code != "0":
        assert lines[-1] == f"J0005000: {PY} exited with status 3"


@pytest.mark.parametrize(("code", "outcome"), [("0", Outcome.SUCCESS), ("3", Outcome.FAILED)])
async def test_with_stderr_info_stderr_lines_are_information(client, code, outcome):
    # tar, curl, git and ffmpeg write their progress on stderr: a successful job
    # of theirs must not read as full of errors.
    lines, got = await texts(client, "mixed-info", code=code)
    assert got is outcome  # the exit status still decides
    assert sorted(line for line in lines if "out" in line or "err" in line) == [
        "J0000100: err 1", "J0000100: err 2", "J0000100: err 3",
        "J0000100: out 1", "J0000100: out 2", "J0000100: out 3"]
    if code != "0":  # the reason a job failed stays an error line
        assert lines[-1] == f"J0005000: {PY} exited with status 3"


def test_stderr_is_error_or_info():
    assert Program("p", ("ls",)).stderr == "error"
    with pytest.raises(ConfigError) as caught:
        Program("p", ("ls",), stderr="warning")
    assert str(caught.value) == "stderr: must be 'error' or 'info', got 'warning'"


async def test_lines_arrive_while_the_program_runs_and_cancel_sends_sigterm(client):
    tx = await client.submit("term")
    async for line in tx:
        if line.text == "ready":  # the program is still running: it waits for a signal
            await client.cancel(tx.transaction_id)
            break
    rest = [line.text async for line in tx]
    assert rest == ["got TERM", "Job cancelled by user.", f"Transaction {tx.transaction_id} ended"]
    assert (await tx.result()).outcome is Outcome.CANCELLED


async def test_a_program_ignoring_sigterm_is_killed(client):
    tx = await client.submit("stubborn")
    async for line in tx:
        if line.text == "ready":
            await client.cancel(tx.transaction_id)
    assert (await tx.result()).outcome is Outcome.CANCELLED


async def test_timeout_fails_the_job(client):
    lines, outcome = await texts(client, "slow")
    assert outcome is Outcome.FAILED
    assert lines == ["J0000100: ready", f"J0005000: {PY} timed out after 0.5 s"]


def process_state(pid: int) -> str:
    """A process's state letter (Linux): T when stopped."""
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]


async def wait_for_state(pid: int, states: str) -> str:
    """Wait (at most 5 s) until a signal sent to ``pid`` has taken effect."""
    for _ in range(500):
        state = process_state(pid)
        if state in states:
            return state
        await asyncio.sleep(0.01)
    raise AssertionError(f"process {pid} is {state!r}, not one of {states!r}")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
async def test_suspend_stops_a_running_program_and_resume_continues_it(client):
    tx = await client.submit("ticks", {"count": "20"})
    lines = [await tx.__anext__()]  # the machine line
    lines.append(await tx.__anext__())
    pid = int(lines[-1].text)
    answer = await client.suspend(tx.transaction_id)
    assert (answer.text, answer.requested) == (f"{tx.transaction_id} suspended", False)
    assert await wait_for_state(pid, "T") == "T"
    assert (await client.status(tx.transaction_id)).status == "Suspended"
    await asyncio.sleep(0.3)  # longer than the rest of its run: it stays stopped
    assert process_state(pid) == "T"
    assert (await client.resume(tx.transaction_id)).text == f"{tx.transaction_id} resumed"
    lines += [line async for line in tx]
    assert (await tx.result()).outcome is Outcome.SUCCESS
    texts = [line.wire_text() for line in lines]
    suspended = texts.index("J0000130: Job suspended.")
    resumed = texts.index("J0000131: Job resumed.")
    assert 2 <= suspended < resumed
    # every tick, once, in order; between the two notices only those already on
    # their way when the program stopped: a program left running would have
    # written 15 more during the 0.3 s (a tick every 20 ms)
    assert [t for t in texts if "tick" in t] == [f"J0000100: tick {n}" for n in range(1, 21)]
    assert resumed - suspended <= 8


async def test_a_suspended_program_does_not_time_out_until_resumed(client):
    tx = await client.submit("slow")  # times out after 0.5 s of running
    async for line in tx:
        if line.text == "ready":
            await client.suspend(tx.transaction_id)
            break
    await asyncio.sleep(0.8)
    assert (await client.status(tx.transaction_id)).status == "Suspended"
    await client.resume(tx.transaction_id)
    rest = [line.wire_text() async for line in tx]
    assert rest[-3:] == [f"J0005000: {PY} timed out after 0.5 s", "J0000022: Job failed.",
                         f"J0000001: Transaction {tx.transaction_id} ended"]
    assert "J0000131: Job resumed." in rest


async def test_cancelling_a_suspended_program_continues_it_to_take_sigterm(client):
    tx = await client.submit("term")
    async for line in tx:
        if line.text == "ready":
            await client.suspend(tx.transaction_id)
            break
    await client.cancel(tx.transaction_id)
    rest = [line.text async for line in tx]
    assert rest == ["Job suspended.", "got TERM", "Job cancelled by user.",
                    f"Transaction {tx.transaction_id} ended"]
    assert (await tx.result()).outcome is Outcome.CANCELLED


async def test_files_in_the_output_folder_are_the_outputs(client, tmp_path):
    lines, outcome = await texts(client, "write")
    assert outcome is Outcome.SUCCESS and lines == ["J0000100: True T0000001"]
    outputs = await client.outputs("T0000001")
    folder = tmp_path / "out" / "T0000001"
    assert [(o.name, o.uri, o.media_type) for o in outputs] == [
        ("data/rows.json", (folder / "data" / "rows.json").as_uri(), "application/json"),
        ("data-2.txt", (folder / "data-2.txt").as_uri(), "text/plain"),
        ("link.txt", (folder / "link.txt").as_uri(), "text/plain"),
        ("report.txt", (folder / "report.txt").as_uri(), "text/plain")]


async def test_the_outputs_of_a_job_that_completed_are_not_partial(client):
    _, outcome = await texts(client, "write")
    assert outcome is Outcome.SUCCESS
    assert not any(output.partial for output in await client.outputs("T0000001"))
    reply = await exchange(client.port, xml_packet("RetrieveJob",
                                                   {"_sys_TransactionID": "T0000001"}))
    assert reply[0] == "R0000000- 4 outputs"


async def test_the_outputs_of_a_failed_job_are_partial_everywhere_they_are_listed(client):
    _, outcome = await texts(client, "half")
    assert outcome is Outcome.FAILED
    await check_partial(client, "T0000001", "the job failed")


async def test_the_outputs_of_a_cancelled_job_are_partial(client):
    tx = await client.submit("half-wait")
    async for line in tx:
        if line.text == "ready":
            await client.cancel(tx.transaction_id)
    assert (await tx.result()).outcome is Outcome.CANCELLED
    await check_partial(client, tx.transaction_id, "the job was cancelled")


async def check_partial(client: Client, transaction_id: str, why: str) -> None:
    """RetrieveJob (text and JSON), the JSON and XML status and the client all say
    that the job's one output, half an archive, is partial."""
    ask = {"_sys_TransactionID": transaction_id}
    text = await exchange(client.port, xml_packet("RetrieveJob", ask))
    assert text[0] == f"R0000000- 1 outputs (partial: {why})"
    assert text[1].startswith("R0000000: archive.tar.gz\tfile://")
    (listed,) = json.loads((await exchange(client.port, xml_packet(
        "RetrieveJob", {**ask, "_sys_Format": "json"})))[0].removeprefix("R0000000: "))
    assert (listed["Name"], listed["Partial"]) == ("archive.tar.gz", True)
    status = json.loads((await exchange(client.port, xml_packet(
        "GetJobStatus", {**ask, "_sys_Format": "json"})))[0].removeprefix("R0000000: "))
    assert [output["Partial"] for output in status["JobData"]] == [True]
    xml = await exchange(client.port, xml_packet("GetJobInformation",
                                                 {**ask, "_sys_Format": "xml"}))
    assert "R0000000-       <Partial>true</Partial>" in xml
    (output,) = await client.outputs(transaction_id)
    assert (output.name, output.partial) == ("archive.tar.gz", True)
    (output,) = (await client.status(transaction_id)).outputs
    assert output.partial


async def test_the_output_folder_is_read_off_the_event_loop(client, monkeypatch):
    # A program may leave 100 000 files: listing them must not stop the server.
    readers = []

    def outputs_in(folder):
        readers.append(threading.get_ident())
        return outputs_in_before(folder)
    outputs_in_before = outputs_module._outputs_in
    monkeypatch.setattr(outputs_module, "_outputs_in", outputs_in)
    _lines, outcome = await texts(client, "write")
    assert outcome is Outcome.SUCCESS
    assert len(readers) == 1 and readers[0] != threading.get_ident()
    assert [o.name for o in await client.outputs("T0000001")][-1] == "report.txt"


async def test_cwd_and_env(client, tmp_path):
    lines, outcome = await texts(client, "where")
    assert outcome is Outcome.SUCCESS
    assert lines == [f"J0000100: {tmp_path}", "J0000100: blue"]


async def test_a_very_long_line_is_sent_in_pieces(client):
    lines, outcome = await texts(client, "long")
    assert outcome is Outcome.SUCCESS
    assert [len(line) - len("J0000100: ") for line in lines] == [MAX_LINE_BYTES,
                                                                 MAX_LINE_BYTES, 5]


async def test_a_program_that_cannot_start_fails(client, tmp_path):
    lines, outcome = await texts(client, "missing")
    assert outcome is Outcome.FAILED
    assert lines == [f"J0005000: cannot run {tmp_path / 'no-such-program'}: "
                     "No such file or directory"]


@pytest.mark.parametrize(("variables", "code"), [
    ({"name": "x", "other": "y"}, Reply.INVALID_VALUE),
    ({}, Reply.MISSING_VARIABLE),
    ({"name": "-rf"}, Reply.INVALID_VALUE),
])
async def test_bad_variables_are_an_error_reply(client, variables, code):
    with pytest.raises(ReplyError) as caught:
        await client.submit("argv", variables)
    assert caught.value.code == code
    assert await client.list_jobs(all=True) == []  # nothing was accepted


@pytest.mark.parametrize(("name", "expected"), [
    ("report.txt", "text/plain"), ("archive.tar.gz", "application/gzip"),
    ("dump.sql.xz", "application/x-xz"), ("rows.json.bz2", "application/x-bzip2"),
    ("archive.tar", "application/x-tar"), ("no-extension", None)])
def test_media_type_of_an_output_names_the_compressed_file(name, expected):
    assert media_type(name) == expected


# -- stopping every process of a program, found in review ---------------------------------


def gone(pid: int) -> bool:
    """Whether a process has exited (a zombie has: it waits only to be reaped)."""
    try:
        return process_state(pid) == "Z"
    except FileNotFoundError:
        return True


async def wait_gone(pid: int, within_s: float = 2.0) -> bool:
    for _ in range(int(within_s * 100)):
        if gone(pid):
            return True
        await asyncio.sleep(0.01)
    return gone(pid)


def kill_if_left(pid: int | None) -> None:
    if pid is not None and not gone(pid):
        os.kill(pid, signal.SIGKILL)


async def pid_line(tx, wanted: str = "ready") -> int:
    """Read up to the ``wanted`` line; the number the program printed before it."""
    pid = None
    async for line in tx:
        if line.text.isdigit():
            pid = int(line.text)
        if line.text == wanted:
            assert pid is not None
            return pid
    raise AssertionError(f"the job ended before {wanted!r}")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
@pytest.mark.parametrize("project", ["orphan", "left"])
async def test_cancel_stops_the_programs_children_too(client, project):
    # orphan: the program exits on SIGTERM, its child ignores it (it gets SIGKILL
    # after kill_grace_s); left: the program has exited already, its child still
    # runs (it gets SIGTERM).  Once the job has ended, neither child runs.
    tx = await client.submit(project)
    child = None
    try:
        child = await pid_line(tx)
        await client.cancel(tx.transaction_id)
        assert (await tx.result()).outcome is Outcome.CANCELLED
        assert await wait_gone(child, 0.5)
    finally:
        kill_if_left(child)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
async def test_a_cancel_while_a_timed_out_program_is_stopped_still_kills_it(client):
    tx = await client.submit("late")  # ignores SIGTERM: timeout 0.3 s, then 1 s of grace
    pid = None
    try:
        lines = []
        async for line in tx:
            lines.append(line.wire_text())
            if line.text.isdigit():
                pid = int(line.text)
                await asyncio.sleep(0.6)  # timed out: it is being stopped
                await client.cancel(tx.transaction_id)
        assert (await tx.result()).outcome is Outcome.CANCELLED
        assert lines[-3:] == [
            f"J0005000: {PY} timed out after 0.3 s", "J0000023: Job cancelled by user.",
            f"J0000001: Transaction {tx.transaction_id} ended"]
        assert await wait_gone(pid, 2.0)  # the stop went on: SIGKILL after the grace
    finally:
        kill_if_left(pid)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
async def test_giving_up_on_the_output_logs_nothing(client, monkeypatch, caplog):
    monkeypatch.setattr("jobmonitor.programs.process.DRAIN_S", 0.2)
    tx = await client.submit("escape")
    child = None
    try:
        async for line in tx:
            child = int(line.text) if line.text.isdigit() else child
            if child is not None:
                await client.cancel(tx.transaction_id)
                break
        assert (await tx.result()).outcome is Outcome.CANCELLED
        gc.collect()  # an unretrieved exception is logged when its future is collected
        await asyncio.sleep(0.1)
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    finally:
        kill_if_left(child)


async def test_a_signal_without_a_name_is_named_by_its_number(client):
    lines, outcome = await texts(client, "rt")
    assert outcome is Outcome.FAILED
    assert lines == [f"J0005000: {PY} was killed by signal 40"]


async def test_a_long_line_is_cut_between_characters(client):
    lines, outcome = await texts(client, "utf8")
    assert outcome is Outcome.SUCCESS
    pieces = [line.removeprefix("J0000100: ") for line in lines]
    assert len(pieces) == 2 and "".join(pieces) == "x" + "é" * 40000
    assert all(len(piece.encode()) <= MAX_LINE_BYTES for piece in pieces)


async def test_a_missing_folder_is_named_when_a_program_cannot_start(client, tmp_path):
    lines, outcome = await texts(client, "nowhere")
    assert outcome is Outcome.FAILED
    assert lines == [f"J0005000: cannot run {PY} in {tmp_path / 'no-such-folder'}: "
                     "No such file or directory"]


async def test_the_servers_jobmonitor_variables_are_not_passed_on(client, monkeypatch, tmp_path):
    monkeypatch.setenv("JOBMONITOR_PASSWORD", "secret")
    monkeypatch.setenv("JOBMONITOR_USER", "admin")
    monkeypatch.setenv("JOBMONITOR_OUTPUT_DIR", "/stale")
    monkeypatch.setenv("OTHER", "passed on")
    lines, outcome = await texts(client, "environ")
    assert outcome is Outcome.SUCCESS
    assert lines == ["J0000100: JOBMONITOR_MINE kept",
                     f"J0000100: JOBMONITOR_OUTPUT_DIR {tmp_path / 'out' / 'T0000001'}",
                     "J0000100: JOBMONITOR_TRANSACTION_ID T0000001", "J0000100: OTHER passed on"]


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="reads /proc")
async def test_no_pipe_or_pidfd_is_left_open(client):
    def open_kinds() -> list[str]:
        kinds = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue
            if target.startswith(("pipe:", "anon_inode:[pidfd]")):
                kinds.append(target.partition("[")[0])
        return sorted(kinds)

    before = open_kinds()
    for project in ("mixed", "missing", "nowhere"):
        await texts(client, project, **({"code": "0"} if project == "mixed" else {}))
    tx = await client.submit("term")
    async for line in tx:
        if line.text == "ready":
            await client.cancel(tx.transaction_id)
    assert (await tx.result()).outcome is Outcome.CANCELLED
    assert open_kinds() == before


# -- the real server (it runs on uvloop when that is installed) -----------------------------

SERVED = f"""
[projects.background]
command = ["/bin/sh", "-c", "sleep 20 >/dev/null 2>&1 </dev/null & echo started $!"]
timeout_s = 8

[projects.stubborn]
command = {json.dumps([PY, "-c", STUBBORN_PID])}
kill_grace_s = 30
"""


@pytest.fixture
def served(tmp_path):
    config = tmp_path / "jobmonitor.toml"
    config.write_text(SERVED)
    server = ServerProcess("--config", str(config), "--shutdown-grace-s", "0.2")
    yield server
    server.kill()


def test_a_background_child_with_its_own_output_does_not_hold_the_job(served):
    # Under uvloop the child inherited leaked copies of the job's pipes.
    async def run() -> tuple[list[str], Outcome, float]:
        client = Client("127.0.0.1", served.port)
        started = asyncio.get_running_loop().time()
        tx = await client.submit("background")
        texts = [line.text async for line in tx]
        return texts, (await tx.result()).outcome, asyncio.get_running_loop().time() - started

    sleeper = None
    try:
        texts, outcome, took_s = asyncio.run(asyncio.wait_for(run(), 15))
        sleeper = int(texts[1].removeprefix("started "))
        assert outcome is Outcome.SUCCESS and took_s < 3
    finally:
        kill_if_left(sleeper)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_a_server_stopping_kills_a_program_that_ignores_sigterm(served):
    # The server gives up on the job after runner.CANCEL_WAIT_S, long before the
    # program's kill_grace_s; the program must not outlive the server.
    async def started() -> int:
        async with Client("127.0.0.1", served.port) as client:
            tx = await client.submit("stubborn")
            async for line in tx:
                if line.text.isdigit():
                    return int(line.text)
        raise AssertionError("the job ended")

    pid = None
    try:
        pid = asyncio.run(asyncio.wait_for(started(), 10))
        assert served.stop() == 0
        assert asyncio.run(wait_gone(pid, 2.0))
    finally:
        kill_if_left(pid)


def test_retries_of_a_program_project_come_from_the_config():
    app = JobMonitor()
    add_programs(app, [Program("again", ("false",), retries=2, retry_delay_s=1.5)])
    handler = app.handlers["again"]
    assert (handler.retries, handler.retry_delay_s) == (2, 1.5)
    with pytest.raises(ConfigError, match="retries: must be a whole number of 0 or more"):
        Program("bad", ("false",), retries=-1)
    with pytest.raises(ConfigError, match="retry_delay_s: must be a finite number of 0 or more"):
        Program("bad", ("false",), retry_delay_s=float("inf"))


def handler(job):
    pass


# A bad value and the words it gets: the same from a config file's project table, a
# Program, add_job and @app.job (they differed: "retries: must not be negative, got -1"
# against "retries must be a whole number of 0 or more, not -1", a Program took
# retries=1.5 that add_programs then refused, timeout_s=inf only for a program, ...).
BAD_JOB_OPTIONS = [
    ("timeout_s", "0", 0, "timeout_s: must be a finite number greater than 0, got 0"),
    ("timeout_s", "-1", -1, "timeout_s: must be a finite number greater than 0, got -1"),
    ("timeout_s", "inf", float("inf"), "timeout_s: must be a finite number greater than 0, "
                                       "got inf"),
    ("timeout_s", "nan", float("nan"), "timeout_s: must be a finite number greater than 0, "
                                       "got nan"),
    ("timeout_s", '"5"', "5", "timeout_s: must be a finite number greater than 0, got '5'"),
    ("timeout_s", "true", True, "timeout_s: must be a finite number greater than 0, got True"),
    ("retries", "-1", -1, "retries: must be a whole number of 0 or more, got -1"),
    ("retries", "1.5", 1.5, "retries: must be a whole number of 0 or more, got 1.5"),
    ("retries", '"2"', "2", "retries: must be a whole number of 0 or more, got '2'"),
    ("retries", "true", True, "retries: must be a whole number of 0 or more, got True"),
    ("retry_delay_s", "-1", -1, "retry_delay_s: must be a finite number of 0 or more, got -1"),
    ("retry_delay_s", "-0.5", -0.5, "retry_delay_s: must be a finite number of 0 or more, "
                                    "got -0.5"),
    ("retry_delay_s", "inf", float("inf"), "retry_delay_s: must be a finite number of 0 or "
                                           "more, got inf"),
    ("retry_delay_s", "nan", float("nan"), "retry_delay_s: must be a finite number of 0 or "
                                           "more, got nan"),
    ("retry_delay_s", '"5"', "5", "retry_delay_s: must be a finite number of 0 or more, "
                                  "got '5'"),
]


@pytest.mark.parametrize(("key", "toml", "value", "message"), BAD_JOB_OPTIONS,
                         ids=[f"{key}={toml}" for key, toml, _, _ in BAD_JOB_OPTIONS])
def test_a_bad_job_option_reads_the_same_from_a_config_file_and_from_python(
        tmp_path, key, toml, value, message):
    from jobmonitor.config_file import load_config_file

    path = tmp_path / "jobmonitor.toml"
    path.write_text(f'[projects."Build Docs"]\ncommand = ["make"]\n{key} = {toml}\n')
    said = {}
    with pytest.raises(ConfigError) as caught:
        load_config_file(path)
    said["config file"] = str(caught.value).removeprefix(f'{path}: projects."Build Docs".')
    with pytest.raises(ConfigError) as caught:
        add_programs(JobMonitor(), [Program("Build Docs", ("make",), **{key: value})])
    said["Program"] = str(caught.value)
    with pytest.raises(ConfigError) as caught:
        JobMonitor().add_job("Build Docs", handler, **{key: value})
    said["add_job"] = str(caught.value).removeprefix("job 'Build Docs': ")
    with pytest.raises(ConfigError) as caught:
        JobMonitor().job("Build Docs", **{key: value})(handler)
    said["@app.job"] = str(caught.value).removeprefix("job 'Build Docs': ")
    assert said == dict.fromkeys(said, message)


def test_good_job_options_are_kept_as_the_engine_keeps_them(tmp_path):
    from jobmonitor.config_file import load_config_file

    path = tmp_path / "jobmonitor.toml"
    path.write_text('[projects.x]\ncommand = ["make"]\ntimeout_s = 60\nretries = 2\n'
                    'retry_delay_s = 1\n')
    [program] = load_config_file(path).programs
    app = JobMonitor()
    add_programs(app, [program])
    app.add_job("y", handler, timeout_s=60, retries=2, retry_delay_s=1)
    x, y = app.handlers["x"], app.handlers["y"]
    kept = [(program.timeout_s, program.retries, program.retry_delay_s),
            (y.timeout_s, y.retries, y.retry_delay_s)]
    assert kept == [(60.0, 2, 1.0)] * 2
    assert [tuple(map(type, options)) for options in kept] == [(float, int, float)] * 2
    # The engine keeps a program's time limit as it keeps a handler's: one limit.
    assert (x.timeout_s, x.retries, x.retry_delay_s) == (60.0, 2, 1.0)
    assert x.timeout_reason is not None


async def test_a_failing_program_runs_again(tmp_path):
    app = JobMonitor()
    marker = tmp_path / "ran"
    script = f"if [ -e {marker} ]; then echo second; else touch {marker}; echo first; exit 3; fi"
    add_programs(app, [Program("again", ("sh", "-c", script), retries=1)])
    async with app.serve(host="127.0.0.1", port=0) as server:
        tx = await Client("127.0.0.1", server.port).submit("again")
        texts_seen = [line.text async for line in tx]
    assert texts_seen[1:] == ["first", "sh exited with status 3",
                              "Job queued to run again (attempt 2 of 2).", "second",
                              "Job completed successfully.",
                              f"Transaction {tx.transaction_id} ended"]


async def test_a_program_run_again_lists_each_output_once(tmp_path):
    # Every run recorded the whole folder, which a run again shares with the
    # runs before it: report.txt was listed once per run.
    app = JobMonitor()
    script = ('echo hi > "$1/report.txt"; [ -e "$1/.ran" ] && exit 0; '
              'touch "$1/.ran"; exit 3')
    add_programs(app, [Program("again", ("sh", "-c", script, "sh", "{output_dir}"), retries=1,
                               output_dir=str(tmp_path / "out"))])
    async with app.serve(host="127.0.0.1", port=0) as server:
        client = Client("127.0.0.1", server.port)
        tx = await client.submit("again")
        assert "Job queued to run again (attempt 2 of 2)." in [line.text async for line in tx]
        assert (await tx.result()).outcome is Outcome.SUCCESS
        assert [o.name for o in await client.outputs(tx.transaction_id)] == [".ran", "report.txt"]


async def test_a_line_ended_by_a_lone_cr_is_sent_as_it_is_written(client):
    # Only LF ended a line: a progress display sent nothing until the program
    # wrote an LF or 64 KiB (then cut anywhere), or exited.
    tx = await client.submit("progress")

    async def first_step() -> str:
        async for line in tx:
            if line.text.startswith("step"):
                return line.wire_text()
        raise AssertionError("the job ended")

    try:
        assert await asyncio.wait_for(first_step(), 5) == "J0000100: step 1"
    finally:
        await client.cancel(tx.transaction_id)
    # Its last words; the stream is read to its end.
    assert [line.wire_text() async for line in tx][0] == "J0000100: step 2"  # noqa: RUF015
    assert (await tx.result()).outcome is Outcome.CANCELLED


async def test_lines_end_with_lf_crlf_or_a_lone_cr_across_reads():
    from jobmonitor.programs.process import _pump

    reader = asyncio.StreamReader()
    said: list[str] = []
    pump = asyncio.ensure_future(_pump(reader, said.append))
    for data in (b"a\r", b"\nb\rc\r\n", b"d\r", b"e\n\r\n", b"f\r"):
        reader.feed_data(data)  # a CR last in a read may be the first half of a CRLF
        for _ in range(3):
            await asyncio.sleep(0)
    reader.feed_eof()
    await pump
    assert said == ["a", "b", "c", "d", "e", "", "f"]


async def test_a_suspend_as_the_timeout_runs_out_leaves_the_program_to_be_stopped(monkeypatch):
    # Between timeout_s running out and the job seeing it, a SuspendJob stopped the
    # program (SIGSTOP) and the job: a program stopped when its SIGTERM came could
    # not act on it.  A run being stopped is not paused: the suspend stays a request.
    from jobmonitor.engine.run import Run

    app = JobMonitor()
    add_programs(app, [Program("term", (PY, "-c", TERM), timeout_s=0.3)])
    answers = []
    time_out = Run._time_out

    def time_out_then_suspend(run: Run) -> None:
        time_out(run)
        answers.append(server.engine.suspend(run.job))  # before the job sees the stop

    monkeypatch.setattr(Run, "_time_out", time_out_then_suspend)
    async with app.serve(host="127.0.0.1", port=0) as server:
        tx = await Client("127.0.0.1", server.port).submit("term")
        lines = [line.wire_text() async for line in tx]
    assert answers == [f"{tx.transaction_id} suspend requested"]
    assert lines[1:] == ["J0000100: ready", "J0000100: got TERM",
                         f"J0005000: {PY} timed out after 0.3 s", "J0000022: Job failed.",
                         f"J0000001: Transaction {tx.transaction_id} ended"]


async def test_a_first_run_refuses_an_output_folder_left_by_another_job(tmp_path):
    # The memory store numbers jobs from T0000001 at every start: the files an
    # earlier server's T0000001 left were listed as the new job's outputs, and
    # the new program wrote over them.
    app = JobMonitor()
    out = tmp_path / "out"
    add_programs(app, [Program("report", ("sh", "-c", 'echo new > "$1/report.txt"', "sh",
                                          "{output_dir}"), output_dir=str(out))])
    (out / "T0000001").mkdir(parents=True)
    (out / "T0000001" / "report.txt").write_text("old\n")
    async with app.serve(host="127.0.0.1", port=0) as server:
        client = Client("127.0.0.1", server.port)
        tx = await client.submit("report")
        lines = [line.wire_text() async for line in tx]
        assert lines[-3] == (f"J0005000: the output folder {out / 'T0000001'} already holds "
                             "files, left by an earlier job numbered T0000001; move them "
                             "away, or give this project another output_dir")
        assert (await tx.result()).outcome is Outcome.FAILED
        assert (out / "T0000001" / "report.txt").read_text() == "old\n"  # left as it was
        assert not await client.outputs(tx.transaction_id)
        # An empty folder (a job that left nothing) is no one's: the next job uses it.
        (out / "T0000002").mkdir()
        tx = await client.submit("report")
        assert (await tx.result()).outcome is Outcome.SUCCESS
        assert [o.name for o in await client.outputs(tx.transaction_id)] == ["report.txt"]
