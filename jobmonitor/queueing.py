"""Queues and recurring schedules, as the configuration holds them.

A queue is a named waiting line with its own ``max_running`` and a paused
flag (``[queues."NAME"]`` in the config file); a schedule makes one job at
each time its five-field cron expression names (``[schedules."NAME"]``).
These are plain checked values: running them is the engine's part
(``engine.queues``, ``engine.schedule``).  Cron expressions are read by
``cronsim`` (a small, well-tested parser with time-zone and DST handling),
never by hand.
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from cronsim import CronSim, CronSimError

from .errors import ConfigError

__all__ = ["QueueSettings", "ScheduleSettings", "DEFAULT_QUEUE", "DEFAULT_PRIORITY",
           "PRIORITIES", "CATCH_UP", "queue_name_refusal", "cron_times"]

#: The queue of a job that names none (and whose project names none).
DEFAULT_QUEUE = "default"
#: Priorities run from 1 (lowest) to 9 (highest); a job that names none gets 5.
PRIORITIES = range(1, 10)
DEFAULT_PRIORITY = 5
#: What a schedule does about due times missed while the server was down.
CATCH_UP = ("once", "skip")
#: A queue name: letters, digits and ``. _ - : @ /``, at most 64 characters (it is
#: a cell of ``ListQueues``, so no spaces, tabs or line breaks).
_QUEUE_NAME = re.compile(r"[\w.:@/-]{1,64}")


def queue_name_refusal(name: str) -> str | None:
    """Why ``name`` cannot name a queue, or None when it can."""
    if _QUEUE_NAME.fullmatch(name) is None:
        return ("must be 1 to 64 letters, digits or . _ - : @ / (no spaces), "
                f"got {name[:80]!r}")
    return None


@dataclass(frozen=True, slots=True)
class QueueSettings:
    """One configured queue.  ``max_running`` None: only the server's cap."""

    name: str
    max_running: int | None = None
    paused: bool = False

    def __post_init__(self) -> None:
        refusal = queue_name_refusal(self.name)
        if refusal is not None:
            raise ConfigError(f"name: a queue name {refusal}")
        limit = self.max_running
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool)
                                  or limit < 1):
            raise ConfigError(f"max_running: must be a whole number of 1 or more, got {limit!r}")


@dataclass(frozen=True, slots=True)
class ScheduleSettings:
    """One recurring schedule: a job of ``project`` at each time ``cron`` names
    (in ``timezone``), with these job ``variables``, in ``queue`` (None: the
    project's) at ``priority``.  ``catch_up``: a due time missed while the
    server was down runs once at its start (``once``) or not at all (``skip``).

    Raises (on construction):
        ConfigError: a bad field; the message starts with the field's name.
    """

    name: str
    cron: str
    project: str
    timezone: str = "UTC"
    variables: Mapping[str, str] = field(default_factory=dict)
    queue: str | None = None
    priority: int = DEFAULT_PRIORITY
    job_name: str | None = None
    catch_up: str = "once"
    zone: dt.tzinfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.cron.split()) != 5:
            raise ConfigError(f"cron: must have five fields (minute hour day month weekday), "
                              f"got {self.cron!r}")
        try:
            object.__setattr__(self, "zone", zoneinfo.ZoneInfo(self.timezone))
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"timezone: unknown time zone {self.timezone!r}") from None
        try:
            CronSim(self.cron, dt.datetime.now(self.zone))
        except CronSimError as exc:
            raise ConfigError(f"cron: {self.cron!r} is not a cron expression: {exc}") from None
        if not self.project.strip():
            raise ConfigError("project: must not be empty")
        if self.queue is not None and queue_name_refusal(self.queue) is not None:
            raise ConfigError(f"queue: {queue_name_refusal(self.queue)}")
        if (not isinstance(self.priority, int) or isinstance(self.priority, bool)
                or self.priority not in PRIORITIES):
            raise ConfigError(f"priority: must be a whole number 1 to 9, got {self.priority!r}")
        if self.catch_up not in CATCH_UP:
            raise ConfigError(f"catch_up: must be once or skip, got {self.catch_up!r}")
        if not all(isinstance(v, str) for v in self.variables.values()):
            raise ConfigError("variables: must be a table of strings")
        object.__setattr__(self, "variables", MappingProxyType(dict(self.variables)))

    def params(self) -> dict[str, str]:
        """The job variables of each job it makes (``JobName`` from ``job_name``)."""
        params = dict(self.variables)
        if self.job_name:
            params["JobName"] = self.job_name
        return params


def cron_times(settings: ScheduleSettings, after: float, *, reverse: bool = False
               ) -> Iterator[float]:
    """The schedule's due times (POSIX seconds) after ``after``, earliest first;
    with ``reverse``, those at or before ``after``, latest first."""
    start = dt.datetime.fromtimestamp(after, settings.zone)
    if reverse:  # (cronsim's reverse steps strictly before its start)
        start = start.replace(microsecond=0) + dt.timedelta(seconds=1)
    for when in CronSim(settings.cron, start, reverse=reverse):
        yield when.timestamp()
