"""Demo jobs for `make serve` and the README.

Run them with ``jobmonitor serve --jobs examples/demo_jobs.py``.
"""

import asyncio
import datetime
import time

from jobmonitor import Job, JobFailed, JobMonitor, Outcome

app = JobMonitor()


@app.job("count")
async def count(job: Job) -> None:
    """Count to ``Count`` (default 5), one step every ``Delay`` seconds (default 0.2)."""
    total = int(job.params.get("Count", "5"))
    delay = float(job.params.get("Delay", "0.2"))
    for n in range(1, total + 1):
        job.info(f"Composing record {n}")
        job.progress(n, total)
        await asyncio.sleep(delay)
        await job.checkpoint()  # SuspendJob pauses the job here, CancelJob stops it


@app.job("partial")
async def partial(job: Job) -> Outcome:
    """Compose three records; the second fails with a two-line error."""
    job.info("Composing record 1")
    await asyncio.sleep(0.05)
    job.error("Evaluation failed for variable: FormatPriceJS\n"
              "Script result was null, line 48, column 4")
    job.info("Composing record 3")
    return Outcome.PARTIAL


@app.job("fail")
async def fail(job: Job) -> None:
    """Always fails."""
    job.info("Opening the input file")
    raise JobFailed(f"Input file not found: {job.params.get('InputFile', 'input.csv')}")


@app.job("long")
async def long(job: Job) -> None:
    """Runs for ``Seconds`` (default 600): a job to suspend, resume and cancel."""
    seconds = int(job.params.get("Seconds", "600"))
    for n in range(1, seconds + 1):
        await asyncio.sleep(1)
        job.progress(n, seconds)
        await job.checkpoint()  # where SuspendJob pauses it


@app.job("report")
async def report(job: Job) -> None:
    """Stages, an estimate and an output: what GetJobInformation and RetrieveJob show."""
    job.stage("evaluation", "start")
    job.estimate(datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=1))
    await asyncio.sleep(0.2)
    job.stage("evaluation", "complete", info="12 records")
    job.add_output("report.pdf", "file:///srv/output/report.pdf", "application/pdf")


@app.job("nightly", retry_on_restart=True)
async def nightly(job: Job) -> None:
    """Runs again from the start if the server restarts while it runs."""
    for n in range(1, 11):
        await asyncio.sleep(1)
        job.progress(n, 10)
        await job.checkpoint()


@app.job("blocking")
def blocking(job: Job) -> None:
    """A plain function: runs in a worker thread with the same Job API."""
    total = int(job.params.get("Count", "3"))
    for n in range(1, total + 1):
        time.sleep(float(job.params.get("Delay", "0.1")))
        job.info(f"Step {n} of {total} done in a thread")
