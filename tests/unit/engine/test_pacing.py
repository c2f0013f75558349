"""``pacing.paced``: a handler's bare yields wait for the store while its backlog
is over the bound; nothing else about how the handler runs changes."""

from __future__ import annotations

import asyncio

import pytest

from jobmonitor.engine.pacing import paced


class Backlog:
    """A stream whose lines wait for the store while ``waiting`` is set."""

    def __init__(self) -> None:
        self.stored: asyncio.Future[None] | None = None
        self.asked: list[int] = []

    def wait_stored(self, most_unstored: int) -> asyncio.Future[None] | None:
        self.asked.append(most_unstored)
        return self.stored


async def test_a_bare_yield_waits_until_the_lines_are_stored():
    backlog = Backlog()
    backlog.stored = asyncio.get_running_loop().create_future()
    steps: list[str] = []

    async def handler() -> str:
        steps.append("said")
        await asyncio.sleep(0)
        steps.append("went on")
        return "done"

    task = asyncio.ensure_future(paced(handler(), backlog, 10))
    for _ in range(5):
        await asyncio.sleep(0)
    assert steps == ["said"] and backlog.asked == [10]
    backlog.stored.set_result(None)
    backlog.stored = None
    assert await asyncio.wait_for(task, 1) == "done"
    assert steps == ["said", "went on"]


async def test_a_handler_awaiting_its_own_future_is_not_held_back():
    backlog = Backlog()
    backlog.stored = asyncio.get_running_loop().create_future()  # (never done)
    own = asyncio.get_running_loop().create_future()

    async def handler() -> int:
        return await own + 1

    task = asyncio.ensure_future(paced(handler(), backlog))
    await asyncio.sleep(0)
    own.set_result(41)
    assert await asyncio.wait_for(task, 1) == 42
    assert backlog.asked == []


async def test_a_cancel_while_held_back_reaches_the_handler_at_its_yield():
    backlog = Backlog()
    backlog.stored = asyncio.get_running_loop().create_future()

    async def handler() -> str:
        try:
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            return "cancelled at the yield"
        return "not cancelled"

    task = asyncio.ensure_future(paced(handler(), backlog, 10))
    for _ in range(3):
        await asyncio.sleep(0)
    task.cancel()
    assert await asyncio.wait_for(task, 1) == "cancelled at the yield"


async def test_what_the_handler_raises_comes_out_as_it_is():
    async def handler() -> None:
        await asyncio.sleep(0)
        raise KeyError("x")

    with pytest.raises(KeyError, match="x"):
        await asyncio.wait_for(paced(handler(), Backlog()), 1)
