"""Running totals of what the engine did, for the metrics endpoint.

Plain integers in dicts, updated where the engine already passes by (a job's
history event, a stream's send, a read of stored lines): counting costs a dict
update per job event and an addition per write, and a scrape reads them as
they are.  Projects are keys as the jobs name them; whoever exports the counts
decides which names may become labels.
"""

from __future__ import annotations

from ..wire.records import HistoryEvent
from ..wire.states import Outcome

__all__ = ["JobCounters", "SUBMIT_EVENT", "FINISH_EVENTS", "COUNTED_EVENTS"]

#: The history event a new job starts with.
SUBMIT_EVENT = "queued"
#: The history events that end a job (its ``outcome`` says how).
FINISH_EVENTS = frozenset({"complete", "failed", "cancelled"})
#: The only events ``JobCounters.job_event`` counts: a caller may skip the others.
COUNTED_EVENTS = FINISH_EVENTS | {SUBMIT_EVENT}


class JobCounters:
    """Jobs submitted and finished per project, and lines handed to clients."""

    __slots__ = ("submitted", "finished", "lines_sent")

    def __init__(self) -> None:
        #: Jobs submitted, by project.
        self.submitted: dict[str, int] = {}
        #: Jobs finished, by (project, outcome).
        self.finished: dict[tuple[str, Outcome], int] = {}
        #: Job lines handed to clients: streamed to monitors, or read back.
        self.lines_sent = 0

    def job_event(self, project: str, event: HistoryEvent, outcome: Outcome | None) -> None:
        """Count a job's history event (``outcome`` is set once the job has one)."""
        status = event.status
        if status == SUBMIT_EVENT and event.stage == "job":
            self.submitted[project] = self.submitted.get(project, 0) + 1
        elif outcome is not None and status in FINISH_EVENTS:
            key = (project, outcome)
            self.finished[key] = self.finished.get(key, 0) + 1
