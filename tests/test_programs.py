"""Program jobs: argv templates without a server, then real programs behind a real server."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from jobmonitor import ConfigError, JobMonitor, Outcome, Reply, RequestError
from jobmonitor.client import Client, ReplyError
from jobmonitor.programs import MAX_LINE_BYTES, Program, add_programs, media_type

from .conftest import MACHINE

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
    ({"command": ("ls",), "timeout_s": 0}, "timeout_s: must be greater than 0"),
    ({"command": ("ls",), "kill_grace_s": -1}, "kill_grace_s: must not be negative"),
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


# -- real programs behind a real server -----------------------------------------------------

ARGV = "import json, sys; print(json.dumps(sys.argv[1:]))"
MIXED = """
import sys
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
print(os.environ["JOBMONITOR_OUTPUT_DIR"] == str(out), os.environ["JOBMONITOR_TRANSACTION_ID"])
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
        ("report.txt", (folder / "report.txt").as_uri(), "text/plain")]


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
