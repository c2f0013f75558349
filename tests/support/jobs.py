"""Job handlers used by the tests (loaded in-process and by the CLI tests)."""

import asyncio
import base64
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from jobmonitor import Job, JobFailed, JobMonitor, Outcome

app = JobMonitor()

#: Events the tests set to let a "wait" job finish, keyed by the job's Key param.
releases: dict[str, asyncio.Event] = {}
thread_releases: dict[str, threading.Event] = {}


@app.job("echo")
async def echo(job: Job) -> None:
    for name, value in sorted(job.params.items()):
        job.info(f"{name}={value}")
    for name, value in sorted(job.doc_variables.items()):
        job.info(f"doc {name}={value}")


@app.job("lines")
async def lines(job: Job) -> None:
    count = int(job.params.get("Count", "10"))
    yield_every = int(job.params.get("YieldEvery", "0"))
    for n in range(1, count + 1):
        job.info(f"line {n}")
        if yield_every and n % yield_every == 0:
            await asyncio.sleep(0)


@app.job("partial")
async def partial(job: Job) -> Outcome:
    job.info("record 1 ok")
    job.error("Evaluation failed for variable: FormatPriceJS\nScript result was null, line 48")
    return Outcome.PARTIAL


@app.job("fail")
async def fail(job: Job) -> None:
    raise JobFailed("input file missing")


@app.job("crash")
async def crash(job: Job) -> None:
    job.info("about to crash")
    raise ValueError("boom\nsecond line")


@app.job("bad-return")
async def bad_return(job: Job) -> int:
    return 42


@app.job("control")
async def control(job: Job) -> None:
    job.info("bell\x07 escape\x1b[2J nul\x00 del\x7f tab\tend")
    job.info("fake\r\nJ0000020: Job completed successfully.")
    job.info("sep\u2028x")
    job.info("caf\u00e9 \u2603")


@app.job("output")
async def output(job: Job) -> None:
    job.add_output(job.params["Name"], job.params["Uri"], job.params.get("MediaType"))


@app.job("surrogates")
async def surrogates(job: Job) -> None:
    # A name read with os.fsdecode() holds lone surrogates for bytes that are not UTF-8.
    job.info("file \udcff.pdf")
    raise JobFailed("cannot open \udcff.pdf")


@app.job("thread-surrogates")
def thread_surrogates(job: Job) -> None:
    job.info("file \udcff.pdf")
    job.info("done")


@app.job("surrogate-record")
async def surrogate_record(job: Job) -> None:
    job.stage("copy \udcff", "start", info="from \udcff")
    job.add_output("\udcff.pdf", "file:///out/\udcff.pdf", "application/pdf\udcff")
    job.progress(1, 2, "copied \udcff.pdf")
    job.info("last \udcff")


@app.job("surrogate-crash")
async def surrogate_crash(job: Job) -> None:
    raise OSError("no such file: \udcff.pdf")


@app.job("progress")
async def progress(job: Job) -> None:
    job.progress(1, 4)
    job.progress(4, 4, "all done")


@app.job("wait")
async def wait(job: Job) -> None:
    key = job.params.get("Key", job.transaction_id)
    event = releases.setdefault(key, asyncio.Event())
    job.info("waiting")
    await event.wait()
    job.info("released")


@app.job("thread")
def thread(job: Job) -> None:
    for n in range(1, int(job.params.get("Count", "3")) + 1):
        job.info(f"thread line {n}")


@app.job("thread-wait")
def thread_wait(job: Job) -> None:
    event = thread_releases.setdefault(job.params.get("Key", ""), threading.Event())
    while not event.is_set():
        job.info("still working")
        time.sleep(0.01)


@app.job("thread-fail")
def thread_fail(job: Job) -> None:
    raise JobFailed("thread says no")


#: What ``pausable`` jobs were told, per Key: "pause" and "resume" in order.
pauses: dict[str, list[str]] = {}


@app.job("pausable")
async def pausable(job: Job) -> None:
    """Waits for its Key inside ``Job.pausable``; says whether it was paused meanwhile."""
    key = job.params["Key"]
    told = pauses.setdefault(key, [])
    with job.pausable(lambda: told.append("pause"), lambda: told.append("resume")):
        job.info("inside")
        try:
            with job.pausable(lambda: None, lambda: None):
                pass
        except RuntimeError as exc:
            job.info(str(exc))
        await releases.setdefault(key, asyncio.Event()).wait()
    job.info(f"told: {' '.join(told) or 'nothing'}")


@app.job("stepper")
async def stepper(job: Job) -> None:
    """Each step waits for its Key to be released, then passes a checkpoint."""
    key = job.params["Key"]
    for n in range(1, int(job.params.get("Count", "2")) + 1):
        job.info(f"before step {n}")
        event = releases.setdefault(key, asyncio.Event())
        await event.wait()
        event.clear()
        await job.checkpoint()
        job.info(f"step {n} done")


@app.job("thread-stepper")
def thread_stepper(job: Job) -> None:
    """Like stepper, from a worker thread."""
    event = thread_releases.setdefault(job.params["Key"], threading.Event())
    job.info("before step 1")
    event.wait(10)
    job.checkpoint()
    job.info("step 1 done")


@app.job("history")
async def history(job: Job) -> None:
    import datetime as dt

    job.stage("evaluation", "start")
    job.estimate(dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC))
    job.add_output("report", "file:///out/report.pdf", "application/pdf")
    job.add_output("log", "file:///out/job.log")
    job.stage("evaluation", "complete", info="3 records")


def _ran_before(job: Job) -> bool:
    """The retry jobs' marker file: after a restart, say "second run" and return
    True; on the first run, leave the marker, say "first run" and return False."""
    marker = Path(job.params["Marker"])
    if marker.exists():
        job.info("second run")
        return True
    marker.write_text("ran")
    job.info("first run")
    return False


@app.job("retry-once", retry_on_restart=True)
async def retry_once(job: Job) -> None:
    """First run: leaves a marker and never ends.  After a restart: completes."""
    if _ran_before(job):
        return
    await asyncio.Event().wait()


@app.job("burst")
async def burst(job: Job) -> None:
    """Count lines (padded with dots to Width characters), pausing Pause seconds
    (default 0) every YieldEvery lines; then say how long it took.  Delay seconds
    first, so that monitors can attach."""
    await asyncio.sleep(float(job.params.get("Delay", "0")))
    count = int(job.params.get("Count", "1000"))
    yield_every = int(job.params.get("YieldEvery", "100"))
    pause = float(job.params.get("Pause", "0"))
    width = int(job.params.get("Width", "0"))
    pad = " " + "." * width if width else ""
    started = time.perf_counter()
    for n in range(1, count + 1):
        job.info(f"line {n}{pad}")
        if n % yield_every == 0:
            await asyncio.sleep(pause)
    job.info(f"emitted {count} lines in {time.perf_counter() - started:.6f} s")


def _bursts(job: Job) -> Iterator[None]:
    """Say Count lines, yielding after each Burst of them."""
    count, burst_size = int(job.params.get("Count", "1000")), int(job.params.get("Burst", "10"))
    for n in range(1, count + 1):
        job.info(f"line {n}")
        if n % burst_size == 0:
            yield


@app.job("chatty")
async def chatty(job: Job) -> None:
    """Count lines in bursts, with a checkpoint after each; then report the most
    lines that were still unstored when a checkpoint returned."""
    most = 0
    for _ in _bursts(job):
        await job.checkpoint()
        most = max(most, job.stream.unstored())
    job.info(f"most unstored after a checkpoint: {most}")


@app.job("thread-chatty")
def thread_chatty(job: Job) -> None:
    """``chatty`` in a worker thread."""
    most = 0
    for _ in _bursts(job):
        job.checkpoint()
        most = max(most, job.stream.unstored())
    job.info(f"most unstored after a checkpoint: {most}")


@app.job("ticker")
async def ticker(job: Job) -> None:
    """A line every Interval seconds, Count times: a job that is busy for a while."""
    interval = float(job.params.get("Interval", "0.001"))
    for n in range(1, int(job.params.get("Count", "100")) + 1):
        job.info(f"tick {n}")
        await asyncio.sleep(interval)


@app.job("thread-retry", retry_on_restart=True)
def thread_retry(job: Job) -> None:
    """First run: blocks in its thread, deaf to cancellation, until its Key is released.
    After a restart: completes."""
    if _ran_before(job):
        return
    thread_releases.setdefault(job.params["Key"], threading.Event()).wait(30)


@app.job("overdue", timeout_s=0.3)
async def overdue(job: Job) -> None:
    """Runs past its 0.3 s time limit."""
    job.info("starting")
    await asyncio.sleep(30)


@app.job("thread-overdue", timeout_s=0.3)
def thread_overdue(job: Job) -> None:
    """Runs past its 0.3 s time limit in a thread, calling the Job API as it goes."""
    for _ in range(600):
        job.info("working")
        time.sleep(0.05)


@app.job("paced", timeout_s=0.6)
async def paced(job: Job) -> None:
    """Four short steps, well within its 0.6 s of running time, with checkpoints."""
    for n in range(1, 5):
        await asyncio.sleep(0.05)
        await job.checkpoint()
        job.info(f"step {n}")


@app.job("codes")
async def codes(job: Job) -> None:
    """Sends a line with each code in ``Codes`` (comma-separated) as info or error;
    a code the Job API refuses is reported as an info line saying so."""
    for raw in job.params.get("Codes", "").split(","):
        code = int(raw)
        say = job.error if code >= 5000 else job.info
        try:
            say(f"code {code}", code=code)
        except ValueError as exc:
            job.info(f"refused: {exc}")


@app.job("flaky", retries=2)
async def flaky(job: Job) -> None:
    """Fails its first ``Fail`` attempts (default 1), then succeeds."""
    job.info(f"attempt {job.attempt}")
    if job.attempt <= int(job.params.get("Fail", "1")):
        raise JobFailed(f"attempt {job.attempt} failed")


@app.job("flaky-later", retries=1, retry_delay_s=0.3)
@app.job("flaky-much-later", retries=1, retry_delay_s=30)
async def flaky_later(job: Job) -> None:
    """Fails its first attempt; runs again 0.3 s later (``flaky-much-later``:
    would run again only 30 s later)."""
    job.info(f"attempt {job.attempt}")
    if job.attempt == 1:
        raise JobFailed("first attempt failed")


@app.job("overdue-once", timeout_s=0.2, retries=1)
async def overdue_once(job: Job) -> None:
    """Runs past its time limit on the first attempt only."""
    job.info(f"attempt {job.attempt}")
    if job.attempt == 1:
        await asyncio.sleep(30)


@app.job("flaky-twice-later", retries=2, retry_delay_s=0.5)
async def flaky_twice_later(job: Job) -> None:
    """Fails its first two attempts; runs again 0.5 s, then 1 s, after a failure."""
    job.info(f"attempt {job.attempt}")
    if job.attempt <= 2:
        raise JobFailed(f"attempt {job.attempt} failed")


@app.job("flaky-often", retries=1100)
async def flaky_often(job: Job) -> None:
    """Fails every one of its 1 101 attempts (no delay between them)."""
    raise JobFailed(f"attempt {job.attempt} failed")


@app.job("thread-flaky", retries=1)
def thread_flaky(job: Job) -> None:
    """Attempt 1 waits in its thread (deaf to cancellation) for its Key, then
    fails; attempt 2 succeeds."""
    job.info(f"attempt {job.attempt}")
    if job.attempt == 1:
        thread_releases.setdefault(job.params["Key"], threading.Event()).wait(10)
        raise JobFailed("attempt 1 failed")


@app.job("thread-overdue-slow-stop", timeout_s=0.2, retries=1)
def thread_overdue_slow_stop(job: Job) -> None:
    """Attempt 1 runs past its time limit and, once told to stop, waits for its
    Key before it does; attempt 2 succeeds."""
    job.info(f"attempt {job.attempt}")
    if job.attempt == 1:
        event = thread_releases.setdefault(job.params["Key"], threading.Event())
        while not job.cancel_requested:
            time.sleep(0.01)
        job_stopping.set()
        event.wait(10)
        job.info("stopped")


#: Set by thread-overdue-slow-stop once its time limit has told it to stop.
job_stopping = threading.Event()


@app.job("progress-steps")
async def progress_steps(job: Job) -> None:
    """Reports progress n/Count after each release of its Key (for the page's tests)."""
    key, count = job.params["Key"], int(job.params.get("Count", "3"))
    job.info("starting")
    for n in range(1, count + 1):
        event = releases.setdefault(key, asyncio.Event())
        await event.wait()
        event.clear()
        job.progress(n, count, f"step {n}")


@app.job("checked-ticker")
async def checked_ticker(job: Job) -> None:
    """Say ``tick N`` Count times (default 100), Interval seconds apart (default
    0.05), with a checkpoint after each: a job other processes can suspend."""
    count = int(job.params.get("Count", "100"))
    interval = float(job.params.get("Interval", "0.05"))
    for n in range(1, count + 1):
        job.info(f"tick {n}")
        await job.checkpoint()
        await asyncio.sleep(interval)


@app.job("unpaced")
async def unpaced(job: Job) -> None:
    """Say Count lines, only letting others run (``asyncio.sleep(0)``, never a
    checkpoint) after each Burst of them; then report the most lines that were
    still unstored when the job went on after one."""
    count, burst_size = int(job.params.get("Count", "1000")), int(job.params.get("Burst", "10"))
    most = 0
    for n in range(1, count + 1):
        job.info(f"line {n}")
        if n % burst_size == 0:
            await asyncio.sleep(0)
            most = max(most, job.stream.unstored())
    job.info(f"most unstored after a yield: {most}")


@app.job("random")
async def random_lines(job: Job) -> None:
    """Say Count lines of Width random base64 characters (the store cannot shrink
    them much), yielding after every 500."""
    count, width = int(job.params.get("Count", "1000")), int(job.params.get("Width", "100"))
    for n in range(1, count + 1):
        job.info(base64.b64encode(os.urandom(width * 3 // 4 + 3)).decode()[:width])
        if n % 500 == 0:
            await asyncio.sleep(0)
