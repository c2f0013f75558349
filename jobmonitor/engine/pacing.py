"""Holding an async job that says lines faster than the store writes them to
the store's pace, without its help.

A job that calls ``checkpoint`` already waits there while more than
``job.MAX_UNSTORED_LINES`` of its lines are not yet stored.  One that never
does left a backlog as large as it could say lines: everything it said before
the store caught up stayed in memory (a 3 million-line job grew the server by
up to 370 MiB).  ``paced`` runs a handler's coroutine as its task would, and
each time the handler only lets others run (a bare yield, ``await
asyncio.sleep(0)``) while more than ``MAX_BACKLOG_LINES`` of its lines wait
for the store, it waits first, until half as many do, as a checkpoint would.
Only there: a handler waiting on something of its own (a future, a sleep, a
read) is never kept from it.
"""

from __future__ import annotations

import types
from collections.abc import Awaitable, Generator
from typing import Any, Protocol

__all__ = ["paced", "MAX_BACKLOG_LINES"]

#: A job's unstored lines past which it waits at its bare yields.
MAX_BACKLOG_LINES = 100_000


class _Backlog(Protocol):
    def wait_stored(self, most_unstored: int) -> Any: ...


@types.coroutine
def paced(handler: Awaitable[Any], stream: _Backlog,
          most_unstored: int | None = None) -> Generator[Any, Any, Any]:
    """Run ``handler`` (awaited by its task), waiting at its bare yields while more
    than ``most_unstored`` (``MAX_BACKLOG_LINES``) of ``stream``'s lines are not
    yet stored."""
    most = MAX_BACKLOG_LINES if most_unstored is None else most_unstored
    steps = handler.__await__()
    send, throw = steps.send, steps.throw
    value: Any = None
    error: BaseException | None = None
    try:
        while True:
            try:
                yielded = send(value) if error is None else throw(error)
            except StopIteration as stop:
                return stop.value
            value = error = None
            try:
                if yielded is None:
                    waiter = stream.wait_stored(most)
                    if waiter is not None:
                        yield from waiter  # (a cancel comes out here, into the handler)
                value = yield yielded
            except GeneratorExit:
                raise  # (closed: the finally closes the handler too)
            except BaseException as exc:  # noqa: BLE001 - thrown in by the task: the handler's
                error = exc
    finally:
        steps.close()
