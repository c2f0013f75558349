"""Helpers for the robustness tests: counting resources, raising the fd limit."""

from __future__ import annotations

import asyncio
import gc
import os
import resource

import pytest

from jobmonitor import Server


def open_fds() -> int:
    """File descriptors this process has open now, once garbage is collected: a
    socket or pipe an earlier test left to the collector would otherwise be counted
    here and be gone at the next count."""
    gc.collect()
    return len(os.listdir("/proc/self/fd"))


def need_fds(count: int, ceiling: int = 8192) -> None:
    """Raise the soft limit on open files to ``count`` if it is lower (never past the
    hard limit or ``ceiling``); skip the test if that is not enough."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= count:
        return
    target = min(count, ceiling, ceiling if hard == resource.RLIM_INFINITY else hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < count:
        pytest.skip(f"needs {count} open files, the limit is {target}")


async def no_connections(server: Server, timeout_s: float = 10.0) -> None:
    """Wait until the server has no connection left."""
    await asyncio.wait_for(server.wait_connections_closed(), timeout_s)


def other_tasks() -> set[asyncio.Task]:
    """The loop's tasks, without the one asking."""
    return asyncio.all_tasks() - {asyncio.current_task()}


async def task_count(server: Server) -> int:
    """The loop's other tasks, once the server's store has nothing left to write (its
    committer waits for more changes in a helper task that comes and goes)."""
    await server.engine._store.flush()
    return len(other_tasks())
