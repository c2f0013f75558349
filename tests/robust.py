"""Helpers for the robustness tests: counting resources, raising the fd limit."""

from __future__ import annotations

import asyncio
import os
import resource

from jobmonitor import Server


def open_fds() -> int:
    """File descriptors this process has open now."""
    return len(os.listdir("/proc/self/fd"))


def ensure_fd_limit(needed: int, ceiling: int = 8192) -> int:
    """Raise the soft fd limit to ``needed`` (never past the hard limit or ``ceiling``).

    Returns the limit in force; the caller skips when it is still too low.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return soft
    target = min(needed, ceiling, hard if hard != resource.RLIM_INFINITY else ceiling)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


async def no_connections(server: Server, timeout_s: float = 10.0) -> None:
    """Wait until the server has no connection left."""
    await asyncio.wait_for(server._no_connections.wait(), timeout_s)


def other_tasks() -> set[asyncio.Task]:
    """The loop's tasks, without the one asking."""
    return asyncio.all_tasks() - {asyncio.current_task()}


async def task_count(server: Server) -> int:
    """The loop's other tasks, once the server's store has nothing left to write (its
    committer waits for more changes in a helper task that comes and goes)."""
    await server.engine._store.flush()
    return len(other_tasks())
