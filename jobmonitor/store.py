"""Where jobs are kept: the store interface and the in-memory store.

The engine owns the live ``Job`` objects; a store makes them outlive the
process.  ``add_job`` returns only once the job is durable (the server
acknowledges a submit after it); everything else may be batched.  The memory
store keeps nothing beyond the engine's own tables, so it only hands out
transaction numbers.
"""

from __future__ import annotations

import abc

from .job import Job

__all__ = ["Store", "MemoryStore", "open_store"]


class Store(abc.ABC):
    """Persistence for jobs and their lines."""

    #: True when jobs survive a restart (queued jobs are kept at shutdown).
    durable: bool = False

    @abc.abstractmethod
    async def open(self) -> int:
        """Open the store; return the highest transaction number ever used."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Flush everything pending and close."""

    @abc.abstractmethod
    async def add_job(self, job: Job) -> None:
        """Record a new job; return once it is durable."""

    @abc.abstractmethod
    def job_changed(self, job: Job) -> None:
        """The job's state, progress or lines changed (may be batched)."""


class MemoryStore(Store):
    """Keeps nothing: jobs live only in the engine's tables."""

    durable = False

    async def open(self) -> int:
        return 0

    async def close(self) -> None:
        return None

    async def add_job(self, job: Job) -> None:
        return None

    def job_changed(self, job: Job) -> None:
        return None


def open_store(url: str) -> Store:
    """Make the store a URL names (``memory://``).

    Raises:
        ConfigError: the URL names no known store.
    """
    from .errors import ConfigError

    if url in ("memory://", "memory"):
        return MemoryStore()
    raise ConfigError(f"unknown store URL {url!r} (expected memory://)")
