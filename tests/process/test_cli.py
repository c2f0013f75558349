"""The real CLI process: start-up, the ready line, signals, errors, examples."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..support.helpers import exchange

ROOT = Path(__file__).resolve().parents[2]
READY = re.compile(r"jobmonitor listening on (\S+):(\d+)")


class ServerProcess:
    """``python -m jobmonitor serve`` as a child process."""

    def __init__(self, *args: str, memory_store: bool = True) -> None:
        if memory_store and "--store" not in args:
            args = ("--store", "memory://", *args)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jobmonitor", "serve", "--port", "0", *args],
            cwd=ROOT, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        )
        self.log: list[str] = []
        self.port = self._wait_ready()

    def _wait_ready(self) -> int:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)
            match = READY.search(line)
            if match:
                return int(match.group(2))
        raise AssertionError(f"server exited before it was ready: {''.join(self.log)}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()

    def stop(self, signum: int = signal.SIGTERM, timeout_s: float = 15) -> int:
        self.proc.send_signal(signum)
        try:
            _, err = self.proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        self.log.append(err)
        return self.proc.returncode


@pytest.fixture
def cli_server() -> Iterator[ServerProcess]:
    server = ServerProcess("--jobs", "examples/demo_jobs.py", "--machine-name", "demo-host",
                           "--shutdown-grace-s", "0.5")
    yield server
    server.kill()


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "jobmonitor", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=30)


def readme_block(after: str) -> list[str]:
    """The lines of the first fenced block in README.md that follows ``after``."""
    text = (ROOT / "README.md").read_text()
    where = text.index(after)
    start = text.index("\n", text.rindex("```", 0, where)) + 1
    return text[start:text.index("```", where)].splitlines()


async def test_netcat_example_prints_what_the_readme_shows(cli_server):
    packet = (ROOT / "examples" / "submit-monitor.xml").read_bytes()
    lines = await exchange(cli_server.port, packet)
    shown = [line for line in readme_block("nc 127.0.0.1 7400 < examples/submit-monitor.xml")
             if not line.startswith("$")]
    assert lines == shown
    assert cli_server.stop() == 0


async def test_sigterm_cancels_running_jobs_and_exits_zero(cli_server):
    from ..support.helpers import Session, submit

    session = await Session.open(cli_server.port, submit("long"))
    tid = (await session.line()).removeprefix("R0000000: ")
    assert await session.line() == "J0000100: Machine name: demo-host"
    cli_server.proc.send_signal(signal.SIGINT)
    rest = await session.rest()
    assert rest[-3:] == ["J0005004: Job cancelled: the server is shutting down.",
                         "J0000023: Job cancelled by user.", f"J0000001: Transaction {tid} ended"]
    await session.close()
    _, err = cli_server.proc.communicate(timeout=15)  # SIGINT alone stops it
    assert cli_server.proc.returncode == 0
    assert "jobmonitor stopped" in err


def test_python_example_script_prints_the_stream(cli_server):
    result = subprocess.run(
        [sys.executable, "examples/watch.py", "127.0.0.1", str(cli_server.port), "partial"],
        cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "R0000000: T0000001",
        "J0000100: Machine name: demo-host",
        "J0000100: Composing record 1",
        "J0005000- Evaluation failed for variable: FormatPriceJS",
        "J0005000: Script result was null, line 48, column 4",
        "J0000100: Composing record 3",
        "J0000021: Job only partially completed.",
        "J0000001: Transaction T0000001 ended",
    ]


def test_embedding_example_runs():
    result = subprocess.run([sys.executable, "examples/embed.py"], cwd=ROOT,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "R0000000: T0000001"
    assert lines[2:] == ["J0000100: Hello, jobmonitor!", "J0000020: Job completed successfully.",
                         "J0000001: Transaction T0000001 ended"]


def test_ready_line_shown_even_at_warning_level():
    server = ServerProcess("--jobs", "tests/support/jobs.py", "--log-level", "warning")
    try:
        assert server.port > 0
        assert server.stop() == 0
    finally:
        server.kill()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--jobs", "no_such_module_xyz"], "--jobs 'no_such_module_xyz': no module named"),
        (["--jobs", "missing/file.py"], "no such file 'missing/file.py'"),
        (["--jobs", "tests/support/jobs.py:nothing"], "has no attribute 'nothing'"),
        (["--jobs", "tests/support/jobs.py:releases"], "is a dict, not a JobMonitor"),
        (["--jobs", "tests/support/jobs.py", "--jobs", "tests.support.jobs"],
         "job 'echo' is registered twice"),
        (["--max-running", "0"], "max_running: must be greater than 0"),
        (["--idle-timeout-s", "nan"], "idle_timeout_s: must be a finite number, got nan"),
        (["--linger-s", "inf"], "linger_s: must be a finite number, got inf"),
        (["--log-level", "loud"], "log_level: unknown level 'loud'"),
    ],
)
def test_start_up_errors_are_one_clear_line(args, message):
    result = run_cli("serve", "--port", "0", "--store", "memory://", *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_address_in_use_is_a_clear_error(cli_server):
    result = run_cli("serve", "--port", str(cli_server.port), "--store", "memory://",
                     "--jobs", "tests/support/jobs.py")
    assert result.returncode == 2
    assert "cannot start" in result.stderr and "Traceback" not in result.stderr


def test_python_dash_m_and_console_script_agree():
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == "jobmonitor 0.1.0"
    script = Path(sys.executable).with_name("jobmonitor")
    if script.exists():
        assert subprocess.run([str(script), "--version"], capture_output=True, text=True,
                              timeout=30).stdout == result.stdout


def test_started_server_is_usable_by_plain_blocking_sockets(cli_server):
    import socket

    packet = (ROOT / "examples" / "status.xml").read_bytes()
    with socket.create_connection(("127.0.0.1", cli_server.port), timeout=10) as sock:
        sock.sendall(packet)
        data = b""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    assert data == b"R0005009: Unknown transaction: T0000001\r\n"


def readme_code(heading: str) -> str:
    """The first ```python block after a README heading."""
    text = (ROOT / "README.md").read_text()
    start = text.index("```python\n", text.index(heading)) + len("```python\n")
    return text[start:text.index("```", start)]


def test_readme_python_client_example(cli_server):
    code = readme_code("## Watch a job from Python").replace("port=7400",
                                                             f"port={cli_server.port}")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-2:] == ["J0000021: Job only partially completed.",
                                               "J0000001: Transaction T0000001 ended"]


async def test_readme_job_example_serves(tmp_path):
    jobs_file = tmp_path / "myjobs.py"
    jobs_file.write_text(readme_code("## Write jobs"))
    server = ServerProcess("--jobs", str(jobs_file), "--machine-name", "m")
    try:
        from ..support.helpers import submit

        lines = await exchange(server.port, submit("Sample Project.pf", JobName="Flyer"))
        assert lines[1:] == [
            "J0000100: Machine name: m",
            "J0000100: Composing Flyer",
            "J0000110: Progress: 1/2 (50%)",
            "J0005000- Evaluation failed",
            "J0005000: Script result was null",
            "J0000021: Job only partially completed.",
            "J0000001: Transaction T0000001 ended",
        ]
        assert server.stop() == 0
    finally:
        server.kill()


def test_configuration_doc_lists_every_setting():
    import dataclasses

    from jobmonitor.config import Config

    doc = (ROOT / "docs" / "configuration.md").read_text()
    table = subprocess.run([sys.executable, "scripts/config_table.py"], cwd=ROOT,
                           capture_output=True, text=True, check=True, timeout=30).stdout
    assert table.strip() in doc, "regenerate the table with scripts/config_table.py"
    for field in dataclasses.fields(Config):
        assert f"| `{field.name}` |" in doc, field.name


# -- hash-password ----------------------------------------------------------------------


def test_hash_password_reads_the_first_line_of_standard_input():
    from jobmonitor.users import verify_password

    result = subprocess.run([sys.executable, "-m", "jobmonitor", "hash-password"], cwd=ROOT,
                            input="s3cret\nignored\n", capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0 and result.stderr == ""
    assert verify_password("s3cret", result.stdout.strip())


#: An answer that is Ctrl-D at the start of a line: the end of the input.
CTRL_D = "\x04"


def on_a_terminal(*answers: str, command: tuple[str, ...] = ("hash-password",)
                        ) -> tuple[int, str]:
    """Run hash-password (or ``command``) on a pseudo-terminal of its own; answer
    each prompt (with a line, or ``CTRL_D``)."""
    import pty

    pid, terminal = pty.fork()
    if pid == 0:  # the child: its controlling terminal is the pty
        os.chdir(ROOT)
        os.execv(sys.executable, [sys.executable, "-m", "jobmonitor", *command])
    output = b""
    try:
        for prompts, answer in enumerate(answers, 1):
            while output.count(b":") < prompts:  # "Password:", then "Again:"
                ready, _, _ = select.select([terminal], [], [], 30)
                assert ready, f"no prompt within 30 s: {output!r}"
                output += os.read(terminal, 1024)
            os.write(terminal, answer.encode() + (b"" if answer == CTRL_D else b"\n"))
        while True:
            ready, _, _ = select.select([terminal], [], [], 30)
            assert ready, f"no end within 30 s: {output!r}"
            try:
                chunk = os.read(terminal, 1024)
            except OSError:  # the child has exited
                break
            if not chunk:
                break
            output += chunk
    finally:
        os.close(terminal)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), output.decode()


def test_hash_password_asks_twice_on_a_terminal_without_echo():
    from jobmonitor.users import verify_password

    status, output = on_a_terminal("s3cret", "s3cret")
    assert status == 0
    assert "Password:" in output and "Again:" in output and "s3cret" not in output
    assert verify_password("s3cret", output.split()[-1])
    status, output = on_a_terminal("s3cret", "other")
    assert status == 2 and "jobmonitor: the passwords differ" in output


def test_hash_password_end_of_input_at_a_prompt_is_one_line():
    for answers in ([CTRL_D], ["s3cret", CTRL_D]):
        status, output = on_a_terminal(*answers)
        assert status == 2 and "Traceback" not in output, output
        assert output.splitlines()[-1] == "jobmonitor: no password on standard input"


def test_jobs_module_in_the_working_folder_is_found_by_name(tmp_path):
    (tmp_path / "nightly_jobs.py").write_text(
        "from jobmonitor import JobMonitor\napp = JobMonitor()\n\n"
        "@app.job('hello')\nasync def hello(job):\n    job.info('hi')\n")
    # As the console script runs: the working folder is not on the path.
    script = "import sys; sys.path.remove(''); from jobmonitor.cli import main; sys.exit(main())"
    proc = subprocess.Popen([sys.executable, "-c", script, "serve", "--port", "0",
                             "--store", "memory://", "--jobs", "nightly_jobs:app"],
                            cwd=tmp_path, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            text=True)
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if READY.search(line) or "jobmonitor:" in line:
                break
        assert READY.search(line), line
    finally:
        proc.kill()
        proc.communicate()
