"""The benchmark harness still runs: every jobmonitor row and the bare baseline
at ``--quick`` sizes, once each, so ``make bench`` cannot rot between its runs.
This checks that each scenario completes and measures something, never a speed."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .test_cli import ROOT

RUN = ROOT / "benchmarks" / "run.py"


@pytest.mark.timeout(240)  # (about 25 s alone: every scenario of six targets)
def test_every_jobmonitor_row_and_the_bare_baseline_run_at_quick_sizes(tmp_path):
    results = tmp_path / "results.json"
    argv = [sys.executable, str(RUN), "--quick", "--runs", "1", "--json", str(results),
            "--target", "jobmonitor", "--target", "bare uvloop"]
    finished = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert finished.returncode == 0, finished.stderr[-2000:]
    rows = json.loads(results.read_text())["results"]
    ran = {(row["scenario"], row["target"]) for row in rows}
    # The kept-connection and durable rows of issue 21 as well as the first ones.
    assert {("stream", "jobmonitor"), ("stream", "jobmonitor (sqlite)"),
            ("fanout", "jobmonitor"), ("held", "jobmonitor"), ("jobs", "jobmonitor"),
            ("jobs", "jobmonitor (kept conns)"), ("jobs", "jobmonitor (sqlite, kept conns)"),
            ("jobs", "jobmonitor (sqlite normal)"), ("jobs", "bare uvloop")} <= ran
    for row in rows:
        assert row["status"] == "ok", row
        for name, metric in row["metrics"].items():
            assert metric["samples"] and metric["min"] >= 0, (row["target"], name)
    rates = {(row["scenario"], row["target"]): row["metrics"] for row in rows}
    assert rates[("jobs", "jobmonitor (kept conns)")]["jobs_per_s"]["median"] > 0
    assert rates[("jobs", "jobmonitor (kept conns)")]["submits_per_s"]["median"] > 0
    assert rates[("stream", "jobmonitor (sqlite)")]["lines_per_s"]["median"] > 0
    # The goals table comes after the results.
    assert "| goal | ours | theirs | ratio | target | met |" in finished.stdout
