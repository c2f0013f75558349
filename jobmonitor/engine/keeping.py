"""What the engine keeps in its store: the jobs a stopped server left
unfinished, taken up again at a start (or a dead node's, by a cluster's node);
when what changed is stored; and the purge of finished jobs older than
``keep_days``.  A part of ``Engine`` (see ``parts``)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from ..errors import StoreUnavailable
from ..store.base import Recordable
from ..wire.records import JobRecord
from ..wire.states import JobState, Outcome
from . import lifecycle
from .job import Job
from .parts import EngineParts

__all__ = ["Keeping", "PURGE_INTERVAL_S"]

log = logging.getLogger("jobmonitor.engine")

#: Seconds between two purges of the jobs older than ``keep_days``.
PURGE_INTERVAL_S = 3600.0


class Keeping(EngineParts):
    """The engine's dealings with its store (a part of ``Engine``)."""

    def _recover(self, record: JobRecord, dead_node: str | None = None) -> None:
        """Take up a job a stopped server left unfinished (``dead_node``: a
        cluster's node that stopped while it ran the job)."""
        job = self._adopt(record)
        handler = self._runner.handlers.get(record.project)
        was_running = record.started is not None
        if handler is None:
            job.error(f"No handler for project {record.project!r} after a server restart")
            self._runner.finish(job, Outcome.FAILED)
        elif not was_running:
            if record.status is JobState.QUEUED:
                self._runner.queue_recovered(job, handler)
            elif record.status is JobState.CREATED:  # (queued by start() if due by now)
                if record.run_at is None:
                    lifecycle.fall_due(job)
                    self._runner.append(job)
                else:
                    self._due.add(job)
        elif handler.retry_on_restart:
            lifecycle.interrupt(job, dead_node)
            lifecycle.requeue(job)
            self._runner.append(job)
        else:
            lifecycle.interrupt(job, dead_node)
            self._runner.finish(job, Outcome.FAILED)

    def when_stored(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once what has changed so far is stored: at the end of
        this loop turn, or with a durable store after its next commit."""
        if self._store.durable:
            self._store.call_when_stored(callback)
        else:
            (self._loop or asyncio.get_running_loop()).call_soon(callback)

    def _persisted(self, item: Recordable, stored_lines: int) -> None:
        if isinstance(item, Job):
            self.jobs.stored(item, stored_lines, self._config.max_lines_in_memory)

    async def purge_expired(self) -> int:
        """Delete finished jobs older than ``keep_days``; return how many the store had."""
        cutoff = time.time() - self._config.keep_days * 86400
        self.jobs.expire(cutoff)
        await self._store.flush()
        purged = await self._store.purge(cutoff)
        if purged:
            log.info("deleted %d jobs older than %g days", purged, self._config.keep_days)
        return purged

    async def _purge_loop(self) -> None:
        while self._config.keep_days > 0:  # (a reload may set it to 0: keep all)
            try:
                await self.purge_expired()
            except StoreUnavailable:
                pass  # (the store logs its failing once; the next round tries again)
            except Exception:
                log.exception("purging old jobs failed")
            await asyncio.sleep(PURGE_INTERVAL_S)

