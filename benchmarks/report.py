"""Reports: the Markdown table printed by ``run.py`` and the JSON written beside it."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness import Result, Sizes

__all__ = ["markdown_table", "results_json", "format_value", "OTHERS_CPU", "NOISY_PERCENT"]

OTHERS_CPU = "others_cpu_pct"
NOISY_PERCENT = 20.0

_UNITS = {"lines_per_s": "lines/s", "jobs_per_s": "jobs/s", "p50_ms": "ms", "p99_ms": "ms",
          "submits_per_s": "submits/s", "submit_p50_ms": "ms", "submit_p99_ms": "ms",
          "kb_per_conn": "KiB/conn", "release_s": "s", "elapsed_s": "s", "setup_s": "s"}
_UNIT_SUFFIXES = ("_per_s", "_per_conn", "_ms", "_s")
# In the JSON, not in the table: durations of whole phases, and the noise gauge.
_NOT_TABULATED = ("elapsed_s", "submit_elapsed_s", "submit_drain_s", OTHERS_CPU)


def metric_label(name: str) -> str:
    """``p99_ms`` -> ``p99 (ms)``, ``submit_p99_ms`` -> ``submit p99 (ms)``."""
    unit = _UNITS.get(name)
    if unit is None:
        return name
    stem = next((name[:-len(s)] for s in _UNIT_SUFFIXES if name.endswith(s)), name)
    return f"{stem.replace('_', ' ')} ({unit})"


def format_value(value: float) -> str:
    if abs(value) >= 1_000_000:
        return f"{value / 1_000_000:.2f}M"
    if abs(value) >= 10_000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"


def markdown_table(results: Sequence[Result]) -> str:
    """One row per scenario, target and metric: median, min and max over the runs."""
    rows = ["| scenario | target | metric | median | min | max | runs |",
            "|---|---|---|---:|---:|---:|---:|"]
    noisy = False
    for result in results:
        if result.status != "ok" and not result.samples:
            rows.append(f"| {result.scenario} | {result.target} | {result.status} | "
                        f"{result.message} | | | 0 |")
            continue
        note = "" if result.status == "ok" else f" ({result.status})"
        summary = result.summary()
        if summary.get(OTHERS_CPU, {}).get("max", 0.0) > NOISY_PERCENT:
            note += " \\*"
            noisy = True
        for name, stats in summary.items():
            if name in _NOT_TABULATED:
                continue
            rows.append(f"| {result.scenario} | {result.target}{note} | {metric_label(name)} | "
                        f"{format_value(stats['median'])} | {format_value(stats['min'])} | "
                        f"{format_value(stats['max'])} | {len(stats['samples'])} |")
    if noisy:
        rows.append(f"\n\\* other processes used more than {NOISY_PERCENT:g}% of a core "
                    f"during some of these runs ({OTHERS_CPU} in the JSON): treat as noisy.")
    return "\n".join(rows)


def results_json(results: Sequence[Result], sizes: Sizes, extra: dict[str, Any]) -> str:
    meta = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "sizes": dataclasses.asdict(sizes),
        **extra,
    }
    body = [{"scenario": r.scenario, "target": r.target, "status": r.status,
             "message": r.message, "metrics": r.summary()} for r in results]
    return json.dumps({"meta": meta, "results": body}, indent=2)
