"""Coarse deadlines: late by at most a tick, one loop timer per tick."""

from __future__ import annotations

import asyncio

import pytest

from jobmonitor.server.deadlines import Deadlines

TICK_S = 0.02


async def test_a_deadline_fires_once_not_before_its_time_and_within_a_tick():
    loop = asyncio.get_running_loop()
    deadlines = Deadlines(loop, TICK_S)
    fired: list[float] = []
    when = loop.time() + 0.05
    deadlines.add(when, lambda: fired.append(loop.time()))
    await asyncio.sleep(0.05 + 3 * TICK_S)
    assert len(fired) == 1
    # Not early (beyond the loop's clock resolution), and at most a tick late
    # plus what a busy test machine adds.
    assert fired[0] >= when - 0.001
    assert len(deadlines) == 0


async def test_deadlines_in_one_tick_share_a_loop_timer(monkeypatch):
    loop = asyncio.get_running_loop()
    deadlines = Deadlines(loop, TICK_S)
    timers = []
    real_call_at = loop.call_at

    def counting_call_at(*args, **kwargs):
        timers.append(args)
        return real_call_at(*args, **kwargs)

    monkeypatch.setattr(loop, "call_at", counting_call_at)
    base = (int(loop.time() / TICK_S) + 10) * TICK_S  # the start of a tick, ahead
    fired = []
    for i in range(100):
        deadlines.add(base + TICK_S * (0.1 + i / 200), lambda i=i: fired.append(i))
    assert len(timers) == 1
    assert len(deadlines) == 100
    await asyncio.sleep(base + 2 * TICK_S - loop.time())
    assert sorted(fired) == list(range(100))


async def test_a_discarded_deadline_does_not_fire_and_others_still_do():
    loop = asyncio.get_running_loop()
    deadlines = Deadlines(loop, TICK_S)
    fired = []

    def first() -> None:
        fired.append("first")

    def second() -> None:
        fired.append("second")

    when = loop.time() + TICK_S
    key = deadlines.add(when, first)
    assert deadlines.add(when, second) == key
    deadlines.discard(key, first)
    deadlines.discard(key + 5, first)  # no such bucket: nothing happens
    await asyncio.sleep(3 * TICK_S)
    assert fired == ["second"]


async def test_a_callback_may_set_its_next_deadline():
    loop = asyncio.get_running_loop()
    deadlines = Deadlines(loop, TICK_S)
    fired = []

    def again() -> None:
        fired.append(loop.time())
        if len(fired) < 3:
            deadlines.add(loop.time() + TICK_S, again)

    deadlines.add(loop.time(), again)
    await asyncio.sleep(8 * TICK_S)
    assert len(fired) == 3


async def test_close_stops_every_timer():
    loop = asyncio.get_running_loop()
    deadlines = Deadlines(loop, TICK_S)
    fired = []
    for i in range(5):
        deadlines.add(loop.time() + i * TICK_S, lambda: fired.append(1))
    deadlines.close()
    await asyncio.sleep(7 * TICK_S)
    assert fired == []
    assert len(deadlines) == 0


async def test_the_tick_must_be_positive():
    with pytest.raises(ValueError):
        Deadlines(asyncio.get_running_loop(), 0)
