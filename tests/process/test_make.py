"""What `make serve` does from a fresh clone (a dry run: nothing is installed)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from .test_cli import ROOT

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def dry_run(tmp_path, target: str) -> list[str]:
    """The commands ``make TARGET`` would run in a clone without a .venv."""
    for name in ("Makefile", "setup.cfg", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    # (under `make test` the outer make's variables would make this one a sub-make,
    # which prints the folders it enters)
    env = {name: value for name, value in os.environ.items()
           if name not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    result = subprocess.run(["make", "--no-print-directory", "-n", target], cwd=tmp_path,
                            capture_output=True, text=True, timeout=30, check=True, env=env)
    return result.stdout.splitlines()


def test_make_serve_installs_only_what_serving_needs(tmp_path):
    commands = dry_run(tmp_path, "serve")
    installs = " ".join(command for command in commands if "pip" in command)
    # jobmonitor and lxml, not the test tools (mypy, hypothesis, ...), and pip is
    # not upgraded first: a fresh clone serves in seconds.  With the venv's own
    # setuptools, wheel and no isolated build environment; else the usual build.
    pip = "PIP_COMPILE=false .venv/bin/python -m pip install -q --disable-pip-version-check"
    assert f"then {pip} wheel && {pip} --no-build-isolation -e .;" in installs
    assert f"else {pip} -e .; fi" in installs
    assert "[test]" not in installs and "--upgrade" not in installs
    assert commands[0] == "python3 -m venv .venv"
    assert commands[-1].startswith(".venv/bin/jobmonitor serve ")


def test_make_test_still_installs_the_test_tools(tmp_path):
    installs = [command for command in dry_run(tmp_path, "test") if "pip" in command]
    assert installs == [".venv/bin/python -m pip install -q --disable-pip-version-check "
                        "-e '.[test]'"]
