"""The jobs the benchmark suite runs on a jobmonitor server.

Served with ``python -m jobmonitor serve --jobs benchmarks/bench_jobs.py``.

* ``bench.stream``: sends ``lines`` information lines of 40 characters, giving
  the loop a turn every ``yield_every`` lines (default 1000), as a fast job
  that produces output in bursts would.
* ``bench.tiny``: does nothing; measures the cost of a job's life cycle.
* ``bench.hold``: waits until the file named by ``release`` exists.
* ``bench.fanout``: waits like ``bench.hold``, then sends ``lines`` lines, so
  every watcher can attach before the first line.
* ``bench.fanout_stamped``: ``bench.fanout`` whose every ``stamp_every``-th
  line (default 1000) carries the time it was said (``t=<POSIX seconds>``,
  padded to the same 40 characters), so a watcher can tell each sample's delay;
  with ``lines_per_s`` it says them no faster than that (0: as fast as it can).

Why a release *file*: the signal must reach jobs that are running (and ones
still queued) without taking a job slot itself, and without one poll per
job: one poller task per file checks it every 10 ms and wakes every job
waiting on it.  Every wait gives up after ``timeout_s`` (default 600), so a
benchmark that dies never leaves jobs waiting for ever.
"""

from __future__ import annotations

import asyncio
import os
import time

from jobmonitor import Job, JobMonitor

app = JobMonitor()

TEXT = "x" * 40
POLL_INTERVAL_S = 0.01
DEFAULT_TIMEOUT_S = 600.0

class _Release:
    """One release file: the poller that watches it and the event its jobs wait on.

    Jobs wait on an ``asyncio.Event`` (one future each, as the bare server's jobs
    do), not on a shielded shared task, whose wrapper costs several times more
    memory per waiting job and would be charged to the server in ``held``.
    """

    def __init__(self, path: str, timeout_s: float) -> None:
        self.event = asyncio.Event()
        self.error: BaseException | None = None
        self.poller = asyncio.ensure_future(self._poll(path, timeout_s))

    async def _poll(self, path: str, timeout_s: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        try:
            while not os.path.exists(path):
                if loop.time() > deadline:
                    raise TimeoutError(f"release file {path} did not appear within "
                                       f"{timeout_s:g} s")
                await asyncio.sleep(POLL_INTERVAL_S)
        except BaseException as exc:
            self.error = exc
            raise
        finally:
            _releases.pop(path, None)
            self.event.set()


_releases: dict[str, _Release] = {}


async def wait_for_release(job: Job) -> None:
    """Wait until the job's ``release`` file exists (one shared poller per file)."""
    path = job.params["release"]
    release = _releases.get(path)
    if release is None:
        timeout_s = float(job.params.get("timeout_s", DEFAULT_TIMEOUT_S))
        release = _releases[path] = _Release(path, timeout_s)
    await release.event.wait()
    if release.error is not None:
        raise RuntimeError(f"waiting for {path} failed: {release.error}")


async def emit(job: Job) -> None:
    """Send ``lines`` lines, yielding to the loop every ``yield_every`` lines."""
    total = int(job.params.get("lines", "0"))
    every = max(1, int(job.params.get("yield_every", "1000")))
    info = job.info
    for number in range(1, total + 1):
        info(TEXT)
        if number % every == 0:
            await asyncio.sleep(0)


@app.job("bench.fanout_stamped")
async def fanout_stamped(job: Job) -> None:
    await wait_for_release(job)
    total = int(job.params.get("lines", "0"))
    every = max(1, int(job.params.get("stamp_every", "1000")))
    rate = float(job.params.get("lines_per_s", "0"))
    info = job.info
    started = time.time()
    for number in range(1, total + 1):
        if number % every:
            info(TEXT)
        else:
            info(f"t={time.time():.6f}".ljust(len(TEXT), "x"))
            ahead = started + number / rate - time.time() if rate else 0.0
            await asyncio.sleep(max(ahead, 0.0))


@app.job("bench.stream")
async def stream(job: Job) -> None:
    await emit(job)


@app.job("bench.tiny")
async def tiny(job: Job) -> None:
    return None


@app.job("bench.hold")
async def hold(job: Job) -> None:
    await wait_for_release(job)


@app.job("bench.fanout")
async def fanout(job: Job) -> None:
    await wait_for_release(job)
    await emit(job)
