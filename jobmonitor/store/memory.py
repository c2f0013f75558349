"""The memory store: jobs live only in the engine's tables, for one process."""

from __future__ import annotations

from .base import Recordable, Recovery, Store

__all__ = ["MemoryStore"]


class MemoryStore(Store):
    """Keeps nothing: jobs live only in the engine's tables, for one process."""

    durable = False

    async def open(self) -> Recovery:
        return Recovery()

    async def close(self, *, keep_lock: bool = False) -> None:
        return None

    async def add(self, job: Recordable) -> None:
        return None

    def changed(self, job: Recordable, urgent: bool = False) -> None:
        return None
