"""Run a coroutine's first step at once, and make a task only if it has to wait.

Most commands never wait: with the memory store a submit, a status query or a
cancel runs to its end without suspending.  Creating a task for each of them
costs a task object, its registration, a loop turn before it starts and one
after, all for nothing.  ``start_eagerly`` runs the coroutine right away in the
caller's turn; only when it yields (awaits something not yet done) does it wrap
the rest in a task, which carries on exactly where the coroutine stopped.

Python 3.12's ``eager_task_factory`` does this loop-wide; this is the same idea
for one call site, on 3.11.  The first step runs outside any task, so it must
not need ``asyncio.current_task()`` (``asyncio.timeout`` does): job handlers,
which may, always get a real task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator
from typing import Any, Generic, TypeVar

__all__ = ["start_eagerly"]

T = TypeVar("T")


def start_eagerly(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T], *,
                  eager: bool = True) -> asyncio.Task[T] | None:
    """Run ``coro`` until it first waits; return None if it finished, else the task
    that runs the rest.  Not ``eager``: a task from the start (a cluster's store
    reads the database at once, and its driver's timeouts need a task).

    An exception raised by the first step propagates to the caller.
    """
    if not eager:
        return loop.create_task(coro)
    try:
        yielded = coro.send(None)
    except StopIteration:
        return None
    return loop.create_task(_rest(_Continuation(coro, yielded)))


class _Continuation(Generic[T]):
    """An awaitable that hands the task what the coroutine yielded, then drives it."""

    __slots__ = ("_coro", "_yielded")

    def __init__(self, coro: Coroutine[Any, Any, T], yielded: Any) -> None:
        self._coro = coro
        self._yielded = yielded

    def __await__(self) -> Generator[Any, None, T]:
        coro, value = self._coro, self._yielded
        self._yielded = None
        while True:
            # The task sends None when the future we yielded is done, or throws in
            # what it must deliver (a cancellation); the coroutine takes either.
            try:
                sent = yield value
            except BaseException as exc:  # noqa: BLE001 - passed on, not handled
                try:
                    value = coro.throw(exc)
                except StopIteration as stop:
                    # StopIteration.value is typed Any; the coroutine's is a T.
                    return stop.value  # type: ignore[no-any-return]
            else:
                try:
                    value = coro.send(sent)
                except StopIteration as stop:
                    return stop.value  # type: ignore[no-any-return]  # as above


async def _rest(continuation: _Continuation[T]) -> T:
    return await continuation
