"""What a program project takes from a job: variable rules and paths under output_dir.

The values are the submitter's: each rule is tried over a real socket against a
real server, refused with one exact R line before anything runs.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest

from jobmonitor import ConfigError, JobMonitor, Outcome, RequestError
from jobmonitor.client import Client
from jobmonitor.programs import Program, Variable, add_programs

from ..support.helpers import exchange, submit

PY = sys.executable
# Writes "ran" to the file named by its first argument (no braces: see test_programs).
WRITE = "import sys; open(sys.argv[1], 'w').write('ran'); print('wrote', sys.argv[1])"
ARGV = "import json, sys; print(json.dumps(sys.argv[1:]))"
READ = "import sys; print(open(sys.argv[1]).read())"
# First run: leave a link to the folder named by argv[2] in the output folder and
# fail; a run again writes through it to the file named by argv[1].
LINK = """
import os, sys
link = os.path.join(os.environ["JOBMONITOR_OUTPUT_DIR"], "link")
if not os.path.lexists(link):
    os.symlink(sys.argv[2], link)
    sys.exit(3)
open(sys.argv[1], "w").write("ran")
"""
BAD = "R0005007: Invalid variable value: "

# -- rules, without a server ------------------------------------------------------------------


@pytest.mark.parametrize(("rule", "value", "why"), [
    (Variable(kind="name"), ".", "is not a plain file name (kind \"name\"): it is '.'"),
    (Variable(kind="name"), "..", "is not a plain file name (kind \"name\"): it is '..'"),
    (Variable(kind="name"), "a/b", "is not a plain file name (kind \"name\"): it holds '/'"),
    (Variable(kind="name"), "a\\b", "is not a plain file name (kind \"name\"): it holds '\\'"),
    (Variable(kind="name"), "-rf", "is not a plain file name (kind \"name\"): it starts with '-'"),
    (Variable(kind="name"), "a\nb", 'is not a plain file name (kind "name"): it holds a control '
                                    'character'),
    (Variable(kind="name"), "a\x7f", 'is not a plain file name (kind "name"): it holds a '
                                     'control character'),
    (Variable(kind="name"), "x" * 256, 'is not a plain file name (kind "name"): it is longer '
                                       'than 255 bytes'),
    (Variable(kind="name"), "é" * 128, 'is not a plain file name (kind "name"): it is longer '
                                       'than 255 bytes'),
    (Variable(pattern="[a-z]+"), "abc1", "does not match its pattern [a-z]+"),
    (Variable(pattern="a|b"), "ab", "does not match its pattern a|b"),  # the whole value
    (Variable(kind="name", pattern="[a-z./]+"), "a/b", "is not a plain file name (kind \"name\"): "
                                                       "it holds '/'"),
    (Variable(kind="name", pattern="[a-z]+"), "A", "does not match its pattern [a-z]+"),
    (Variable(pattern="x" * 100), "y", "does not match its pattern " + "x" * 77 + "..."),
])
def test_a_value_that_breaks_a_rule_is_refused_naming_the_variable_and_the_rule(
        rule, value, why):
    program = Program("p", ("tool", "--in={v}"), variables={"v": rule})
    with pytest.raises(RequestError) as caught:
        program.check({"v": value})
    assert caught.value.reply_text == f"Invalid variable value: v {why}"


@pytest.mark.parametrize("rule", [Variable(), Variable(kind="name"), Variable(pattern=".*")])
@pytest.mark.parametrize("value", ["", " ", "\t\n"])
def test_a_blank_value_is_missing_whatever_the_rules(rule, value):
    program = Program("p", ("tool", "--in={v}"), variables={"v": rule})
    with pytest.raises(RequestError) as caught:
        program.check({"v": value})
    assert caught.value.reply_text == "Missing required variable: v (its value is blank)"


def test_the_rules_still_say_why_an_empty_value_breaks_them():
    # (Program.check refuses a blank value before asking the rules.)
    assert Variable(kind="name").refusal("") == (
        'is not a plain file name (kind "name"): it is empty')
    assert Variable(pattern="[a-z]+").refusal("") == "does not match its pattern [a-z]+"


@pytest.mark.parametrize(("rule", "value"), [
    (Variable(), "../-anything\tat all"),
    (Variable(kind="name"), "report 1.pdf"),
    (Variable(kind="name"), "é" * 127),
    (Variable(kind="name"), "...."),
    (Variable(pattern="[a-z]+"), "abc"),
    (Variable(pattern="(?i)[a-z]+"), "ABC"),
])
def test_a_value_that_keeps_the_rules_is_taken(rule, value):
    Program("p", ("tool", "--in={v}"), variables={"v": rule}).check({"v": value})


@pytest.mark.parametrize(("make", "message"), [
    (lambda: Variable(kind="file"), "kind: must be 'text' or 'name', got 'file'"),
    (lambda: Variable(pattern="("), "pattern: must be a regular expression, got '(' (missing ), "
                                    "unterminated subpattern at position 0)"),
    (lambda: Variable(pattern=""), "pattern: must be a regular expression (leave it out for "
                                   "none), got ''"),
    (lambda: Program("p", ("ls",), variables={"a": "name"}),
     "variables.a: must be a Variable, got 'name'"),
    (lambda: Program("p", ("ls",), variables="abc"),
     "variables: must be a list of names, or a mapping of each name to its Variable, got 'abc'"),
    (lambda: Program("p", ("ls",), variables={"a b": Variable()}),
     "variables: 'a b' is not a valid name"),
    (lambda: Program("p", ("x", "{output_dir}/../{a}"), variables=("a",), output_dir="o"),
     "command[1]: leads out of the job's output folder whatever the value of a (a path "
     "component is '..'); a path from {output_dir} that takes a variable must stay inside it"),
    (lambda: Program("p", ("x", "--o={output_dir}.{a}"), variables=("a",), output_dir="o"),
     "command[1]: leads out of the job's output folder whatever the value of a (the path must "
     "go on from {output_dir} with '/'); a path from {output_dir} that takes a variable must "
     "stay inside it"),
    (lambda: Program("p", ("x", "{output_dir}{transaction_id}/{a}"), variables=("a",),
                     output_dir="o"), "command[1]: leads out of the job's output folder"),
    (lambda: Program("p", ("x", "{output_dir}{a}/x/../.."), variables=("a",), output_dir="o"),
     "(a path component is '..')"),
])
def test_bad_rules_are_config_errors(make, message):
    with pytest.raises(ConfigError) as caught:
        make()
    assert message in str(caught.value)


def test_paths_the_command_itself_keeps_inside_are_taken():
    # Without a variable after {output_dir} the path is the command's own business;
    # with one, literal text that stays inside is fine.
    for item in ("{output_dir}/..", "{output_dir}/{a}", "{output_dir}{a}", "--o={output_dir}/{a}",
                 "{output_dir}/..{a}", "cd {output_dir}/{a} && ls .. x/..y"):
        Program("p", ("x", item), variables=("a",), output_dir="o")


def test_variables_read_back_as_rules_and_survive_replace():
    listed = Program("p", ("ls", "{a}"), variables=("a",))
    assert dict(listed.variables) == {"a": Variable()} and list(listed.variables) == ["a"]
    ruled = Program("p", ("ls", "{b}", "{a}"),
                    variables={"b": Variable(kind="name"), "a": Variable()})
    assert list(ruled.variables) == ["b", "a"]
    moved = dataclasses.replace(ruled, output_dir="o")
    assert moved.variables == ruled.variables
    with pytest.raises(RequestError, match="b is not a plain file name"):
        moved.check({"a": "x", "b": "x/y"})


@pytest.mark.parametrize(("item", "values", "blamed", "why"), [
    ("{output_dir}/{a}", {"a": "../x"}, "a", "a path component is '..'"),
    ("{output_dir}/{a}", {"a": "x/../../y"}, "a", "a path component is '..'"),
    ("{output_dir}/{a}", {"a": ".."}, "a", "a path component is '..'"),
    ("{output_dir}{a}", {"a": "x"}, "a", "the path must go on from {output_dir} with '/'"),
    ("{output_dir}{a}{b}", {"a": "x", "b": "/y"}, "a", "the path must go on from {output_dir} "
                                                       "with '/'"),
    ("{output_dir}/.{a}{b}", {"a": ".", "b": "/x"}, "a", "a path component is '..'"),
    ("{output_dir}/.{a}{b}", {"a": "x", "b": "y"}, None, None),
    ("{output_dir}/..{a}", {"a": "/b"}, "a", "a path component is '..'"),
    ("{output_dir}/{a}.{b}", {"a": ".", "b": "/z"}, "a", "a path component is '..'"),
    ("--out={output_dir}/{a}/{b}.pdf", {"a": "..", "b": "x"}, "a", "a path component is '..'"),
    ("{output_dir}/{a}/{b}", {"a": "/abs", "b": "x"}, None, None),  # still inside: //abs/x
])
def test_a_path_from_output_dir_must_stay_in_the_job_folder(item, values, blamed, why):
    program = Program("p", ("x", item), variables=dict.fromkeys(values, Variable()),
                      output_dir="o")
    if blamed is None:
        program.check(values)
        return
    with pytest.raises(RequestError) as caught:
        program.check(values)
    assert caught.value.detail == f"{blamed} would lead out of the job's output folder ({why})"


# -- over real sockets -------------------------------------------------------------------------


@pytest.fixture
def folders(tmp_path: Path) -> dict[str, Path]:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "notes.txt").write_text("the notes")
    (tmp_path / "secret.toml").write_text("password_hash = 'scrypt$...'")
    (tmp_path / "outside").mkdir()
    return {"root": tmp_path, "out": tmp_path / "out", "shared": shared,
            "outside": tmp_path / "outside"}


def programs(folders: dict[str, Path]) -> list[Program]:
    out = str(folders["out"])
    return [
        Program("touch-name", (PY, "-c", WRITE, "{output_dir}/{name}"), output_dir=out,
                variables={"name": Variable(kind="name")}),
        Program("touch", (PY, "-c", WRITE, "{output_dir}/{name}"), output_dir=out,
                variables=("name",)),
        Program("touch-joined", (PY, "-c", WRITE, "{output_dir}{name}"), output_dir=out,
                variables=("name",)),
        Program("read", (PY, "-c", READ, "{file}"), cwd=str(folders["shared"]),
                variables={"file": Variable(kind="name", pattern=r"[a-z]+\.txt")}),
        Program("dash", (PY, "-c", ARGV, "{name}"), allow_leading_dash=True,
                variables={"name": Variable(kind="name")}),
        Program("linked", (PY, "-c", LINK, "{output_dir}/{name}/x", str(folders["outside"])),
                output_dir=out, retries=1, variables=("name",)),
    ]


@pytest.fixture
async def port(folders):
    app = JobMonitor()
    add_programs(app, programs(folders))
    async with app.serve(host="127.0.0.1", port=0, linger_s=1.0, shutdown_grace_s=1.0) as server:
        yield server.port


def files_under(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*")}


REFUSED = [
    ("touch-name", "../../../x", "name is not a plain file name (kind \"name\"): it holds '/'"),
    ("touch-name", "..", "name is not a plain file name (kind \"name\"): it is '..'"),
    ("touch-name", "-rf", "name is not a plain file name (kind \"name\"): it starts with '-'"),
    ("touch-name", "a\\b", "name is not a plain file name (kind \"name\"): it holds '\\'"),
    ("touch-name", "a\tb", 'name is not a plain file name (kind "name"): it holds a control '
                           'character'),
    ("touch", "../../../x", "name would lead out of the job's output folder (a path component "
                            "is '..')"),
    ("touch", "a/../../x", "name would lead out of the job's output folder (a path component "
                           "is '..')"),
    ("touch-joined", "-sibling", "name would lead out of the job's output folder (the path must "
                                 "go on from {output_dir} with '/')"),
    ("read", "../secret.toml", "file is not a plain file name (kind \"name\"): it holds '/'"),
    ("read", "secret.toml", r"file does not match its pattern [a-z]+\.txt"),
    ("dash", "-rf", "name is not a plain file name (kind \"name\"): it starts with '-'"),
]


@pytest.mark.parametrize(("project", "value", "detail"), REFUSED,
                         ids=[f"{project}={value!r}" for project, value, _ in REFUSED])
async def test_a_refused_value_is_one_r_line_and_nothing_runs(port, folders, project, value,
                                                               detail):
    before = files_under(folders["root"])
    variable = "file" if project == "read" else "name"
    lines = await exchange(port, submit(project, **{variable: value}))
    assert lines == [BAD + detail]
    assert files_under(folders["root"]) == before  # the program never ran
    assert await Client("127.0.0.1", port).list_jobs(all=True) == []


@pytest.mark.parametrize("value", ["", "   "])
async def test_a_blank_value_is_refused_as_missing_and_nothing_runs(port, folders, value):
    # The docs' R0005006 for "a required variable is absent or blank": a program
    # given an empty argument may take it as "the current folder", or "everything".
    before = files_under(folders["root"])
    for project in ("touch", "touch-name", "dash"):
        lines = await exchange(port, submit(project, name=value))
        assert lines == ["R0005006: Missing required variable: name (its value is blank)"]
    assert files_under(folders["root"]) == before  # no program ran
    assert await Client("127.0.0.1", port).list_jobs(all=True) == []


@pytest.mark.parametrize(("project", "value", "written"), [
    ("touch-name", "report 1.txt", "out/T0000001/report 1.txt"),
    ("touch", "report.txt", "out/T0000001/report.txt"),
    ("touch-joined", "/report.txt", "out/T0000001/report.txt"),
])
async def test_a_value_that_keeps_the_rules_runs(port, folders, project, value, written):
    tx = await Client("127.0.0.1", port).submit(project, {"name": value})
    assert (await tx.result()).outcome is Outcome.SUCCESS
    assert (folders["root"] / written).read_text() == "ran"


async def test_a_value_stays_one_argument_and_a_plain_name_reads_only_its_folder(port):
    client = Client("127.0.0.1", port)
    tx = await client.submit("dash", {"name": "a b --force; rm -rf ."})
    assert [line.text async for line in tx][1] == json.dumps(["a b --force; rm -rf ."])
    tx = await client.submit("read", {"file": "notes.txt"})
    assert [line.text async for line in tx][1] == "the notes"


async def test_a_path_through_a_link_the_program_left_fails_the_run(port, folders):
    # The first run leaves out/T0000001/link -> outside and fails; the run again
    # would write outside/x through it.
    tx = await Client("127.0.0.1", port).submit("linked", {"name": "link"})
    texts = [line.text async for line in tx]
    assert texts[-3:] == ["name would lead out of the job's output folder (through a symbolic "
                          "link)", "Job failed.", f"Transaction {tx.transaction_id} ended"]
    assert "Job queued to run again (attempt 2 of 2)." in texts
    assert list(folders["outside"].iterdir()) == []
