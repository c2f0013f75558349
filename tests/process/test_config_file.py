"""jobmonitor.toml: reading and checking it, and `jobmonitor serve --config` for real."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from jobmonitor import Config, ConfigError, Outcome
from jobmonitor.client import Client, ReplyError
from jobmonitor.config_file import load_config_file
from jobmonitor.programs import Variable
from jobmonitor.users import hash_password

from .test_cli import ROOT, ServerProcess

EXAMPLE = ROOT / "examples" / "jobmonitor.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "jobmonitor.toml"
    path.write_text(text)
    return path


def test_settings_and_projects_are_read(tmp_path):
    file = load_config_file(write(tmp_path, """
[server]
port = 7500
max_running = 2
packet_timeout_s = 5          # an int where a float is wanted is fine
jobs = ["tests/support/jobs.py"]
allow_anonymous_network = false

[projects."Build Docs"]
command = ["make", "-C", "{dir}", "html"]
variables = ["dir"]
cwd = "/srv/docs"
env = { LANG = "C.UTF-8" }
timeout_s = 600

[projects.list]
command = ["ls"]
retry_on_restart = true

[projects.render]
command = ["render", "{output_dir}/{name}", "{size}"]
output_dir = "renders"
variables.size = {}
[projects.render.variables.name]
kind = "name"
pattern = "[a-z]+[.]pdf"
"""))
    assert file.config == Config(port=7500, max_running=2, packet_timeout_s=5.0,
                                 jobs=("tests/support/jobs.py",))
    docs, listing, render = file.programs
    assert dict(render.variables) == {"size": Variable(),
                                      "name": Variable(kind="name", pattern="[a-z]+[.]pdf")}
    assert docs.project == "Build Docs" and docs.command == ("make", "-C", "{dir}", "html")
    assert list(docs.variables) == ["dir"] and docs.cwd == "/srv/docs"
    assert dict(docs.env) == {"LANG": "C.UTF-8"} and docs.timeout_s == 600.0
    assert listing.project == "list" and dict(listing.variables) == {}
    assert listing.retry_on_restart and not docs.retry_on_restart


def test_users_are_read(tmp_path):
    digest = hash_password("pw")
    file = load_config_file(write(tmp_path, f"""
[users.ann]
password_hash = "{digest}"
[users.root]
password_hash = "{digest}"
role = "admin"
"""))
    assert [(u.name, u.role) for u in file.config.users] == [("ann", "user"), ("root", "admin")]


def test_queues_and_schedules_are_read(tmp_path):
    from jobmonitor.queueing import QueueSettings

    file = load_config_file(write(tmp_path, """
[server]
allow_new_queues = false

[queues.reports]
max_running = 2

[queues."night-shift"]
paused = true

[schedules.nightly]
cron = "30 2 * * 1-5"
timezone = "Europe/Paris"
project = "Build Docs"
variables = { dir = "docs" }
queue = "reports"
priority = 7
job_name = "nightly docs"
catch_up = "skip"

[projects."Build Docs"]
command = ["make", "-C", "{dir}", "html"]
variables = ["dir"]
queue = "reports"
"""))
    config = file.config
    assert config.queues == (QueueSettings("reports", 2), QueueSettings("night-shift",
                                                                         paused=True))
    assert not config.allow_new_queues
    [schedule] = config.schedules
    assert (schedule.name, schedule.cron, schedule.timezone, schedule.project, schedule.queue,
            schedule.priority, schedule.catch_up) == (
        "nightly", "30 2 * * 1-5", "Europe/Paris", "Build Docs", "reports", 7, "skip")
    assert schedule.params() == {"dir": "docs", "JobName": "nightly docs"}
    assert file.programs[0].queue == "reports"


def test_the_example_file_loads():
    file = load_config_file(EXAMPLE)
    assert [program.project for program in file.programs] == ["Checksum", "Archive"]


@pytest.mark.parametrize(("text", "message"), [
    ("portt = 1", "unknown key portt (known: projects, queues, schedules, server, users)"),
    ("[server]\nmax_runing = 2", "unknown key server.max_runing (did you mean "
                                 "server.max_running?) (known: "),
    ("[server]\nprot = 1\nhots = 'x'", "unknown key server.hots (did you mean server.host?), "
                                      "server.prot (did you mean server.port?) (known: "),
    ("[server]\nqwertyuiop = 1", "unknown key server.qwertyuiop (known: "),
    ('[projects.x]\ncommand = ["ls"]\ntimeout = 5',
     "unknown key projects.x.timeout (did you mean projects.x.timeout_s?) (known: "),
    ('[projects.x]\ncommand = ["ls"]\n[projects.x.variables.name]\npatern = "a"',
     "unknown key projects.x.variables.name.patern (did you mean "
     "projects.x.variables.name.pattern?) (known: kind, pattern)"),
    ("[user.ann]\npassword_hash = 'x'", "unknown key user (did you mean users?) (known: "
                                        "projects, queues, schedules, server, users)"),
    ("[server]\nusers = []", "unknown key server.users"),
    ("[server]\nport = '7400'", "server.port: must be a whole number, got '7400'"),
    ("[server]\nport = true", "server.port: must be a whole number"),
    ("[server]\nport = 70000", "server.port: must be 0..65535"),
    ("[server]\nmax_running = 0", "server.max_running: must be greater than 0"),
    ("[server]\nidle_timeout_s = nan", "server.idle_timeout_s: must be a finite number, got nan"),
    ("[server]\nkeep_days = inf", "server.keep_days: must be a finite number, got inf"),
    ("[server]\nlinger_s = 'long'", "server.linger_s: must be a number"),
    ("[server]\njobs = 'x.py'", "server.jobs: must be a list of strings"),
    ("[server]\nallow_anonymous_network = 1", "server.allow_anonymous_network: must be true"),
    ("server = 1", "server: must be a table"),
    ('[projects."Build Docs"]\nvariables = []', 'projects."Build Docs".command: missing'),
    ('[projects."Build Docs"]\ncommand = ["a"]\nshell = true',
     'unknown key projects."Build Docs".shell'),
    ('[projects."Build Docs"]\ncommand = "make html"',
     'projects."Build Docs".command: must be a list of strings'),
    ('[projects.x]\ncommand = ["ls", "{dir}"]',
     "projects.x.command[1]: placeholder {dir} is not a declared variable"),
    ('[projects.x]\ncommand = ["ls"]\ntimeout_s = -1',
     "projects.x.timeout_s: must be a finite number greater than 0, got -1"),
    ('[projects.x]\ncommand = ["ls"]\nkill_grace_s = "5"',
     "projects.x.kill_grace_s: must be a finite number of 0 or more, got '5'"),
    ('[projects.x]\ncommand = ["ls"]\nkill_grace_s = inf',
     "projects.x.kill_grace_s: must be a finite number of 0 or more, got inf"),
    ('[projects.x]\ncommand = ["ls"]\nenv = { A = 1 }', "projects.x.env: must be a table of"),
    ('[projects.x]\ncommand = ["ls", "{name}"]\n[projects.x.variables.name]\npattern = "("',
     "projects.x.variables.name.pattern: must be a regular expression, got '(' (missing ), "
     "unterminated subpattern at position 0)"),
    ('[projects.x]\ncommand = ["ls"]\n[projects.x.variables.name]\npattern = ""',
     "projects.x.variables.name.pattern: must be a regular expression (leave it out for none)"),
    ('[projects.x]\ncommand = ["ls"]\n[projects.x.variables.name]\npattern = 5',
     "projects.x.variables.name.pattern: must be a string, got 5"),
    ('[projects.x]\ncommand = ["ls"]\n[projects.x.variables.name]\nkind = "file"',
     "projects.x.variables.name.kind: must be 'text' or 'name', got 'file'"),
    ('[projects.x]\ncommand = ["ls"]\n[projects.x.variables.name]\nregex = "a"',
     "unknown key projects.x.variables.name.regex (known: kind, pattern)"),
    ('[projects.x]\ncommand = ["ls"]\nvariables = { name = "name" }',
     "projects.x.variables.name: must be a table"),
    ('[projects.x]\ncommand = ["ls"]\nvariables = "name"',
     "projects.x.variables: must be a list of names or a table of variables, got 'name'"),
    ('[projects.x]\ncommand = ["ls"]\nvariables = ["a", 1]',
     "projects.x.variables: must be a list of names or a table of variables, got ['a', 1]"),
    ('[projects.x]\ncommand = ["ls"]\n[projects.x.variables."a b"]',
     "projects.x.variables: 'a b' is not a valid name"),
    ('[projects.x]\ncommand = ["touch", "{output_dir}/../{name}"]\noutput_dir = "o"\n'
     'variables = ["name"]', "projects.x.command[1]: leads out of the job's output folder "
                             "whatever the value of name (a path component is '..')"),
    ("[users.ann]\nrole = 'user'", "users.ann.password_hash: missing"),
    ("[users.ann]\npassword_hash = 'x'\npassword = 'pw'", "unknown key users.ann.password"),
    ("[users.ann]\npassword_hash = 'plain'", "users.ann.password_hash: not a hash"),
    ("[server\nport = 1", "not valid TOML"),
    ("[queues.q]\nmax_running = 0", "queues.q.max_running: must be a whole number of 1 or more"),
    ("[queues.q]\nlimit = 2", "unknown key queues.q.limit (known: max_running, paused)"),
    ("[queues.q]\npaused = 'yes'", "queues.q.paused: must be true or false, got 'yes'"),
    ('[queues."a b"]', 'queues."a b".name: a queue name must be 1 to 64 letters'),
    ("[schedules.s]\nproject = 'x'", "schedules.s.cron: missing"),
    ("[schedules.s]\ncron = '0 6 * * *'", "schedules.s.project: missing"),
    ("[schedules.s]\ncron = '0 6 * *'\nproject = 'x'", "schedules.s.cron: must have five"),
    ("[schedules.s]\ncron = '0 6 * * *'\nproject = 'x'\ntimezone = 'Nowhere'",
     "schedules.s.timezone: unknown time zone 'Nowhere'"),
    ("[schedules.s]\ncron = '0 6 * * *'\nproject = 'x'\ncatch_up = 'all'",
     "schedules.s.catch_up: must be once or skip, got 'all'"),
    ("[schedules.s]\ncron = '0 6 * * *'\nproject = 'x'\npriority = 10",
     "schedules.s.priority: must be a whole number 1 to 9, got 10"),
    ("[schedules.s]\ncron = '0 6 * * *'\nproject = 'x'\nvariables = { a = 1 }",
     "schedules.s.variables: must be a table of strings"),
    ("[server]\nallow_new_queues = false\n[schedules.s]\ncron = '0 6 * * *'\n"
     "project = 'x'\nqueue = 'y'", "schedules.s.queue: unknown queue 'y'"),
])
def test_bad_files_name_the_key(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config_file(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert message in str(caught.value)


def test_a_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read: No such file"):
        load_config_file(tmp_path / "nope.toml")


# -- the real `jobmonitor serve --config` -----------------------------------------------------


PROGRAMS = f"""
[server]
port = 1            # overridden by --port 0 on the command line
store = "memory://"
machine_name = "from-file"
jobs = ["tests/support/jobs.py"]

[projects.greet]
command = ["{sys.executable}", "-c", "import sys; print('hello', sys.argv[1])", "{{name}}"]
variables = ["name"]

[projects.touch]
command = ["{sys.executable}", "-c", "import sys; open(sys.argv[1], 'w')",
           "{{output_dir}}/{{name}}"]
output_dir = "out"
[projects.touch.variables.name]
kind = "name"
pattern = "[a-z]+"
"""


def test_serve_with_a_config_file_runs_program_projects(tmp_path):
    config = write(tmp_path, PROGRAMS.replace('"out"', json.dumps(str(tmp_path / "out"))))
    server = ServerProcess("--config", str(config), "--machine-name", "from-flag")
    try:
        async def use() -> None:
            async with Client("127.0.0.1", server.port) as client:
                tx = await client.submit("greet", {"name": "world; ls"})
                texts = [line.text async for line in tx]
                assert texts[:2] == ["Machine name: from-flag", "hello world; ls"]
                assert (await tx.result()).outcome is Outcome.SUCCESS
                assert (await (await client.submit("echo")).result()).ok  # from the file's jobs
                with pytest.raises(ReplyError) as caught:
                    await client.submit("greet", {"name": "x", "shell": "y"})
                assert caught.value.code == 5007
                for value, why in [
                        ("../../x", "is not a plain file name (kind \"name\"): it holds '/'"),
                        ("x1", "does not match its pattern [a-z]+")]:
                    with pytest.raises(ReplyError) as caught:
                        await client.submit("touch", {"name": value})
                    assert (caught.value.code, caught.value.text) == (
                        5007, f"Invalid variable value: name {why}")
                assert (await (await client.submit("touch", {"name": "x"})).result()).ok
                assert [path.name for path in (tmp_path / "out").rglob("*")] == ["T0000003", "x"]

        asyncio.run(use())
        assert server.stop() == 0
    finally:
        server.kill()


@pytest.mark.parametrize(("text", "message"), [
    ("[server]\nmax_runing = 2", "unknown key server.max_runing"),
    ('[projects.echo]\ncommand = ["ls"]\n[server]\njobs = ["tests/support/jobs.py"]',
     "job 'echo' is registered twice"),
    ('[projects.x]\ncommand = ["ls"]\n[projects.x.variables.name]\npattern = "[a-"',
     "projects.x.variables.name.pattern: must be a regular expression, got '[a-' "
     "(unterminated character set at position 0)"),
])
def test_serve_start_up_errors_from_the_file_are_one_line(tmp_path, text, message):
    import subprocess

    result = subprocess.run(
        [sys.executable, "-m", "jobmonitor", "serve", "--port", "0", "--config",
         str(write(tmp_path, text))],
        cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_every_program_key_is_documented():
    import dataclasses

    from jobmonitor.programs import Program, Variable

    doc = (ROOT / "docs" / "configuration.md").read_text()
    for field in dataclasses.fields(Program):
        if field.init and field.name != "project":
            assert f"| `{field.name}` |" in doc, field.name
    for field in dataclasses.fields(Variable):
        if field.init:
            assert f"| `{field.name}` |" in doc, field.name


async def test_the_example_archive_project_leaves_its_archive_as_an_output(tmp_path):
    import dataclasses
    import tarfile

    from jobmonitor import JobMonitor
    from jobmonitor.programs.program import add_programs

    programs = [dataclasses.replace(p, output_dir=str(tmp_path / "out"), cwd=str(ROOT))
                for p in load_config_file(EXAMPLE).programs]
    app = JobMonitor()
    add_programs(app, programs)
    async with app.serve(host="127.0.0.1", port=0, linger_s=1.0) as server:
        client = Client("127.0.0.1", server.port)
        tx = await client.submit("Archive", {"folder": "examples"})
        assert (await tx.result()).ok
        (output,) = await client.outputs(tx.transaction_id)
    archive = tmp_path / "out" / tx.transaction_id / "archive.tar.gz"
    assert output.name == "archive.tar.gz" and output.uri == archive.as_uri()
    with tarfile.open(archive) as opened:
        assert any(name.endswith("examples/jobmonitor.toml") for name in opened.getnames())
