"""The benchmark harnesses still run: every jobmonitor row of ``run.py`` and the
bare baseline, and ``cluster.py`` on the tests' PostgreSQL, at ``--quick`` sizes,
once each, so ``make bench`` cannot rot between its runs.  These check that
each scenario completes and measures something, never a speed."""

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


@pytest.mark.timeout(240)
def test_the_cluster_benchmark_runs_at_quick_sizes(postgres_server):
    argv = [sys.executable, str(ROOT / "benchmarks" / "cluster.py"), "--quick",
            "--postgres", postgres_server.url()]
    finished = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert finished.returncode == 0, (finished.stdout + finished.stderr)[-3000:]
    for row in ("tiny jobs            jobmonitor, PostgreSQL, 2 nodes",
                "stream               jobmonitor, PostgreSQL, 1 node",
                "cross-node fan-out   job on node B, 10 watchers on node A",
                "tiny jobs, 2 nodes vs SQLite:"):
        assert row in finished.stdout, finished.stdout[-3000:]
