"""``GET /metrics``: the server's numbers in the Prometheus text format (0.0.4).

Everything is read at scrape time from what the engine, the store and the
listeners already keep (``engine.counters``, the runner's counts, the store's
commit durations); nothing is counted for the metrics' sake on the job path
but a few integer additions.  The ``project`` label only ever holds a
project the server runs now: a job of a project no longer configured counts
under ``project=""``, so labels never come from what a client typed, and
never hold a transaction ID or a user name; the ``queue`` label likewise
holds only a configured queue (or ``default``), and ``""`` for the rest.  Every
series of a configured project or queue is exported from the start, at 0.
"""

from __future__ import annotations

from collections.abc import Iterable

from .._version import __version__
from ..engine.engine import Engine
from ..engine.queues import QueueRow
from ..store.timings import COMMIT_BUCKETS_S, Durations
from ..wire.states import JobState, Outcome

__all__ = ["render_metrics", "CONTENT_TYPE"]

#: What Prometheus expects, exactly (a malformed one fails the scrape).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def render_metrics(engine: Engine, commit_durations: Durations | None, *,
                   tcp_connections: int, http_connections: int,
                   queues: Iterable[str] = ()) -> str:
    """The whole exposition, one family after another; ``queues`` are the
    configured queues, each a ``queue`` label of its own."""
    projects = engine.handler_names()
    counters = engine.jobs.counters
    out: list[str] = []
    _family(out, "jobmonitor_build_info", "gauge", "The running version (always 1).",
            [(f'{{version="{_escape(__version__)}"}}', 1)])
    _family(out, "jobmonitor_jobs_submitted_total", "counter",
            "Jobs submitted and accepted, by project.",
            _by_project(projects, counters.submitted))
    _family(out, "jobmonitor_jobs_finished_total", "counter",
            "Jobs that ended, by project and outcome (success, partial, failed, cancelled).",
            _finished(projects, counters.finished))
    live = engine.jobs.live_jobs()
    _family(out, "jobmonitor_jobs_running", "gauge", "Jobs running now.",
            [("", engine.running_count)])
    _family(out, "jobmonitor_jobs_queued", "gauge", "Jobs waiting for a free slot.",
            [("", engine.queued_count)])
    _family(out, "jobmonitor_jobs_suspended", "gauge", "Jobs suspended now.",
            [("", sum(1 for job in live if job.state is JobState.SUSPENDED))])
    jobs, paused = _queues(engine.queue_rows(also=queues), set(queues))
    _family(out, "jobmonitor_queue_jobs", "gauge",
            "Jobs of each queue: waiting, running, scheduled (not due yet).", jobs)
    _family(out, "jobmonitor_queue_paused", "gauge", "1 while a queue is paused, else 0.",
            paused)
    _family(out, "jobmonitor_lines_sent_total", "counter",
            "Job lines handed to clients: streamed to monitors (TCP and server-sent "
            "events) or read back.", [("", counters.lines_sent)])
    _family(out, "jobmonitor_connections", "gauge", "Client connections open now.",
            [('{transport="tcp"}', tcp_connections), ('{transport="http"}', http_connections)])
    _family(out, "jobmonitor_monitors", "gauge",
            "Clients following a job's stream now (TCP monitors and event streams).",
            [("", engine.jobs.monitor_total())])
    _histogram(out, "jobmonitor_store_commit_duration_seconds",
               "Time one commit of the store takes (none for the memory store).",
               commit_durations or Durations(COMMIT_BUCKETS_S))
    return "".join(out)


def _family(out: list[str], name: str, kind: str, help_text: str,
            samples: Iterable[tuple[str, int | float]]) -> None:
    out.append(f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n")
    out.extend(f"{name}{labels} {_number(value)}\n" for labels, value in samples)


def _by_project(projects: list[str], counts: dict[str, int]) -> list[tuple[str, int]]:
    totals = dict.fromkeys(projects, 0)
    for project, count in counts.items():
        key = project if project in totals else ""
        totals[key] = totals.get(key, 0) + count
    return [(f'{{project="{_escape(project)}"}}', count) for project, count in totals.items()]


def _finished(projects: list[str], counts: dict[tuple[str, Outcome], int]
              ) -> list[tuple[str, int]]:
    totals = {(project, outcome): 0 for project in projects for outcome in Outcome}
    for (project, outcome), count in counts.items():
        key = (project if project in projects else "", outcome)
        totals[key] = totals.get(key, 0) + count
    return [(f'{{project="{_escape(project)}",outcome="{outcome.value}"}}', count)
            for (project, outcome), count in totals.items()]


def _queues(rows: list[QueueRow], named: set[str]
            ) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """Each configured queue's jobs by state, and whether it is paused; the jobs
    of queues a submit named without configuration count under ``queue=""``."""
    counts: dict[str, list[int]] = {name: [0, 0, 0] for name in sorted(named)}
    paused = []
    for row in rows:
        key = row.name if row.name in named else ""
        total = counts.setdefault(key, [0, 0, 0])
        for index, count in enumerate((row.waiting, row.running, row.scheduled)):
            total[index] += count
        if key:
            paused.append((f'{{queue="{_escape(key)}"}}', int(row.paused)))
    jobs = [(f'{{queue="{_escape(name)}",state="{state}"}}', total[index])
            for name, total in counts.items()
            for index, state in enumerate(("waiting", "running", "scheduled"))]
    return jobs, paused


def _histogram(out: list[str], name: str, help_text: str, durations: Durations) -> None:
    out.append(f"# HELP {name} {help_text}\n# TYPE {name} histogram\n")
    for bound, count in durations.cumulative():
        out.append(f'{name}_bucket{{le="{_number(bound)}"}} {count}\n')
    out.append(f"{name}_sum {_number(durations.total_s)}\n{name}_count {durations.count}\n")


def _number(value: int | float) -> str:
    if value == float("inf"):
        return "+Inf"
    return repr(value) if isinstance(value, float) else str(value)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
