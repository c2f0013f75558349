"""``start_eagerly``: a coroutine's first step runs at once; a task only if it waits."""

from __future__ import annotations

import asyncio

import pytest

from jobmonitor.server.eager import start_eagerly


async def test_a_coroutine_that_never_waits_runs_now_without_a_task() -> None:
    steps: list[str] = []

    async def quick() -> None:
        steps.append("ran")

    assert start_eagerly(asyncio.get_running_loop(), quick()) is None
    assert steps == ["ran"]


async def test_a_coroutine_that_waits_continues_in_a_task_with_its_result() -> None:
    loop = asyncio.get_running_loop()
    gate = loop.create_future()
    steps: list[str] = []

    async def slow() -> str:
        steps.append("first")
        value = await gate
        steps.append("second")
        await asyncio.sleep(0)  # a bare yield to the loop passes through too
        return value + "!"

    task = start_eagerly(loop, slow())
    assert steps == ["first"] and task is not None and not task.done()
    gate.set_result("done")
    assert await task == "done!"
    assert steps == ["first", "second"]


async def test_cancelling_the_task_reaches_the_coroutine() -> None:
    loop = asyncio.get_running_loop()
    seen: list[str] = []

    async def waiting() -> None:
        try:
            await loop.create_future()
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    task = start_eagerly(loop, waiting())
    assert task is not None
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == ["cancelled"]


async def test_errors_come_out_of_the_first_step_or_the_task() -> None:
    loop = asyncio.get_running_loop()

    async def fails_at_once() -> None:
        raise ValueError("first step")

    with pytest.raises(ValueError, match="first step"):
        start_eagerly(loop, fails_at_once())

    async def fails_later() -> None:
        await asyncio.sleep(0)
        raise ValueError("later")

    task = start_eagerly(loop, fails_later())
    assert task is not None
    with pytest.raises(ValueError, match="later"):
        await task
