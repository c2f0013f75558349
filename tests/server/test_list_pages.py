"""ListJobs in pages (``_sys_Limit``, ``_sys_After``) over real sockets: the three
formats and their cursor, refused values, live and stored jobs in one order, the
client and the CLI paging through, and a full listing of a big store while a
client submits.

The big store holds 20 000 jobs; 200 000 with ``JOBMONITOR_SOAK=1``.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading

import pytest
from lxml import etree

from jobmonitor import Controller
from jobmonitor.client import Client, ProtocolError, ReplyError, SyncClient
from jobmonitor.store.sqlite import rows as sqlite_rows

from ..conftest import MACHINE, finished, release
from ..process.test_cli import ROOT, ServerProcess
from ..support import jobs
from ..support.helpers import exchange, submit, xml_packet
from ..support.stored import fill
from .test_management import tid_of

SOAK = os.environ.get("JOBMONITOR_SOAK") == "1"
BIG_STORE = 200_000 if SOAK else 20_000
#: The bound on a submit's latency (99th percentile) while the big store is
#: listed: generous, for a busy test machine; a listing that holds up the store's
#: thread keeps submits waiting for seconds.
SUBMIT_P99_S = 0.5
#: How often a submit is sent while the big store is listed.
SUBMIT_EVERY_S = 0.01


def listing(**variables: str) -> bytes:
    return xml_packet("ListJobs", variables)


def numbered(*numbers: int) -> list[str]:
    return [f"T{number:07d}" for number in numbers]


async def finished_echoes(server, count: int) -> list[str]:
    tids = [tid_of((await exchange(server.port, submit("echo", monitor=False)))[0])
            for _ in range(count)]
    for tid in tids:
        await finished(server, tid)
    return tids


def reply_text(lines: list[str]) -> str:
    assert all(line.startswith("R0000000") for line in lines), lines
    return "\n".join(line[10:] for line in lines)


def store_url(tmp_path, count: int, **options) -> str:
    path = tmp_path / "jobs.db"
    fill(str(path), count, **options)
    return f"sqlite:///{path}"


# -- the wire ---------------------------------------------------------------------------


async def test_text_pages_end_with_the_next_cursor_and_a_single_page_is_unchanged(server):
    t1, t2, t3, t4, t5 = await finished_echoes(server, 5)
    row = "{}\tCompleted\techo\t".format
    assert await exchange(server.port, listing(_sys_Filter="all", _sys_Limit="2")) == [
        "R0000000- 2 jobs", f"R0000000- {row(t1)}", f"R0000000- {row(t2)}",
        f"R0000000: Next: {t2}"]
    assert await exchange(server.port, listing(_sys_Filter="all", _sys_Limit=" 2 ",
                                               _sys_After=t2.lower())) == [
        "R0000000- 2 jobs", f"R0000000- {row(t3)}", f"R0000000- {row(t4)}",
        f"R0000000: Next: {t4}"]
    assert await exchange(server.port, listing(_sys_Filter="all", _sys_Limit="2",
                                               _sys_After=t4)) == [
        "R0000000- 1 jobs", f"R0000000: {row(t5)}"]
    # Exactly a page's worth left: no cursor, since no job follows.
    whole = ["R0000000- 5 jobs", *(f"R0000000- {row(t)}" for t in (t1, t2, t3, t4))]
    assert await exchange(server.port, listing(_sys_Filter="all", _sys_Limit="5")) == [
        *whole, f"R0000000: {row(t5)}"]
    assert await exchange(server.port, listing(_sys_Filter="all")) == [
        *whole, f"R0000000: {row(t5)}"]
    # A cursor need not name a job that exists.
    assert await exchange(server.port, listing(_sys_Filter="all", _sys_After="T0000099")) == [
        "R0000000: 0 jobs"]


async def test_json_and_xml_pages_carry_the_next_cursor(server):
    t1, t2, t3 = await finished_echoes(server, 3)
    first = json.loads(reply_text(await exchange(server.port, listing(
        _sys_Filter="all", _sys_Format="json", _sys_Limit="2"))))
    assert [job["Id"] for job in first["Jobs"]] == [t1, t2] and first["Next"] == t2
    assert first["Jobs"][0]["Status"] == 3 and first["Jobs"][0]["Type"] == "echo"
    last = json.loads(reply_text(await exchange(server.port, listing(
        _sys_Filter="all", _sys_Format="json", _sys_Limit="2", _sys_After=t2))))
    assert [job["Id"] for job in last["Jobs"]] == [t3] and last["Next"] is None

    first_xml = etree.fromstring(reply_text(await exchange(server.port, listing(
        _sys_Filter="all", _sys_Format="xml", _sys_Limit="2"))))
    assert first_xml.tag == "Jobs"
    assert [job.findtext("Id") for job in first_xml.iter("JobStatus")] == [t1, t2]
    assert first_xml.findtext("JobStatus/Status") == "Completed"
    assert first_xml.findtext("Next") == t2
    last_xml = etree.fromstring(reply_text(await exchange(server.port, listing(
        _sys_Filter="all", _sys_Format="XML", _sys_After=t2))))
    assert [job.findtext("Id") for job in last_xml.iter("JobStatus")] == [t3]
    assert last_xml.find("Next") is not None and last_xml.findtext("Next") == ""


LIMIT_ERROR = ("R0005007: Invalid variable value: _sys_Limit must be a number from 1 to 10000, "
               "got {!r}")
AFTER_ERROR = ("R0005007: Invalid variable value: _sys_After must be a transaction ID such as "
               "T0000001, got {!r}")


@pytest.mark.parametrize("name, value, expected", [
    *(("_sys_Limit", value, LIMIT_ERROR.format(value)) for value in (
        "0", "10001", "-1", "+5", "ten", "1e3", "2.5", "\uff11\uff10", "\u00b2",
        "99999999999999999999")),
    *(("_sys_After", value, AFTER_ERROR.format(value)) for value in (
        "T123", "0000001", "T00000001", "X0000001", "T000000x", "T-000001",
        "T\uff10\uff10\uff10\uff10\uff10\uff10\uff11",
        "T\u0661\u0661\u0661\u0661\u0661\u0661\u0661")),
])
async def test_a_bad_limit_or_cursor_gets_one_clear_error_line(server, name, value, expected):
    assert await exchange(server.port, listing(_sys_Filter="all", **{name: value})) == [expected]


async def test_the_smallest_and_the_largest_limit_are_taken(server):
    t1, t2 = await finished_echoes(server, 2)
    assert await exchange(server.port, listing(_sys_Filter="all", _sys_Limit="1")) == [
        "R0000000- 1 jobs", f"R0000000- {t1}\tCompleted\techo\t", f"R0000000: Next: {t1}"]
    assert await exchange(server.port, listing(_sys_Filter="all", _sys_Limit="10000")) == [
        "R0000000- 2 jobs", f"R0000000- {t1}\tCompleted\techo\t",
        f"R0000000: {t2}\tCompleted\techo\t"]


async def test_pages_join_live_and_stored_jobs_in_transaction_order(make_server, tmp_path):
    url = store_url(tmp_path, 3, identity_of=lambda number: "ann" if number % 2 else "bob")
    server = await make_server(store=url)
    running = tid_of((await exchange(server.port, submit("wait", monitor=False, Key="lp",
                                                         _sys_UserToken="bob")))[0])
    [done] = await finished_echoes(server, 1)
    assert (running, done) == ("T0000004", "T0000005")

    pages = []
    after = ""
    while True:  # at most five pages of one job: bounded by the assertion below
        page = json.loads(reply_text(await exchange(server.port, listing(
            _sys_Filter="all", _sys_Format="json", _sys_Limit="1", _sys_After=after))))
        pages.append([(job["Id"], job["Status"]) for job in page["Jobs"]])
        assert len(pages) <= 5
        if page["Next"] is None:
            break
        after = page["Next"]
    assert pages == [[("T0000001", 3)], [("T0000002", 3)], [("T0000003", 3)],
                     [("T0000004", 2)], [("T0000005", 3)]]
    # The stored jobs come with their outputs.
    stored = json.loads(reply_text(await exchange(server.port, listing(
        _sys_Filter="all", _sys_Format="json", _sys_Limit="1"))))
    assert stored["Jobs"][0]["JobData"][0]["Name"] == "out-1.pdf"

    assert await exchange(server.port, listing(_sys_Filter="all", _sys_UserToken="bob",
                                               _sys_Limit="1")) == [
        "R0000000- 1 jobs", "R0000000- T0000002\tCompleted\techo\tstored job 2",
        "R0000000: Next: T0000002"]
    bobs_rest = await exchange(server.port, listing(_sys_Filter="all", _sys_UserToken="bob",
                                                    _sys_After="T0000002"))
    assert bobs_rest == ["R0000000- 1 jobs", "R0000000: T0000004\tProcessing\twait\t"]
    assert await exchange(server.port, listing(_sys_Limit="1")) == [
        "R0000000- 1 jobs", "R0000000: T0000004\tProcessing\twait\t"]
    await release("lp")


async def test_a_listing_being_read_does_not_hold_up_a_submit(make_server, tmp_path,
                                                              monkeypatch):
    server = await make_server(store=store_url(tmp_path, 10))
    reading, go_on = threading.Event(), threading.Event()
    make_record = sqlite_rows.job_record

    def held(row):  # the store's reading waits here until the submit is answered
        reading.set()
        go_on.wait(10)
        return make_record(row)

    monkeypatch.setattr(sqlite_rows, "job_record", held)
    listed = asyncio.ensure_future(exchange(server.port, listing(_sys_Filter="all")))
    assert await asyncio.get_running_loop().run_in_executor(None, reading.wait, 10)
    try:
        reply = await asyncio.wait_for(exchange(server.port, submit("echo", monitor=False)), 3)
    finally:
        go_on.set()
    assert reply == ["R0000000: T0000011"]
    assert (await listed)[0] == "R0000000- 10 jobs"


# -- the client and the CLI ----------------------------------------------------------------


async def test_the_client_pages_through_every_job(make_server, tmp_path):
    server = await make_server(store=store_url(tmp_path, 2_500))
    client = Client("127.0.0.1", server.port)
    every = await client.list_jobs(all=True)  # three of the server's pages
    assert every.next_after is None
    assert [job.transaction_id for job in every] == numbered(*range(1, 2_501))
    assert every[0].outputs[0].name == "out-1.pdf" and every[0].job_name == "stored job 1"

    page = await client.list_jobs(all=True, limit=2, after="t0000010")  # (any case)
    assert [job.transaction_id for job in page] == numbered(11, 12)
    assert page.next_after == "T0000012"
    tail = await client.list_jobs(all=True, limit=10, after="T0002495")
    assert [job.transaction_id for job in tail] == numbered(*range(2_496, 2_501))
    assert tail.next_after is None
    later = [job.transaction_id async for job in client.iter_jobs(
        all=True, after="T0001000", page_size=700)]
    assert later == numbered(*range(1_001, 2_501))
    assert await client.list_jobs(all=True, after="T0002500") == []
    with pytest.raises(ReplyError) as refused:
        await client.list_jobs(all=True, limit=10_001)
    assert refused.value.code == 5007


async def test_the_client_refuses_a_cursor_that_does_not_move_on():
    from .test_client import scripted_server

    same = b'R0000000: {"Jobs":[],"Next":"T0000005"}\r\n'
    async with scripted_server([same, same]) as (port, packets):
        client = Client("127.0.0.1", port)
        with pytest.raises(ProtocolError, match="cursor"):
            await client.list_jobs(after="T0000005")
        with pytest.raises(ProtocolError, match="cursor"):
            await client.list_jobs(after="T0000009", limit=5)
    assert packets[1].variables["_sys_Limit"] == "5"


def test_the_sync_client_pages_through_every_job(tmp_path):
    url = store_url(tmp_path, 1_200)
    with (Controller(jobs.app, port=0, machine_name=MACHINE, linger_s=1.0, store=url)
          as controller, SyncClient("127.0.0.1", controller.port) as client):
        assert len(client.list_jobs(all=True)) == 1_200
        assert [job.transaction_id for job in client.iter_jobs(all=True, page_size=500)] == \
            numbered(*range(1, 1_201))
        page = client.list_jobs(all=True, limit=3, after="T0001197")
        assert (len(page), page.next_after) == (3, None)


def job_page(numbers: range, next_after: str | None) -> bytes:
    """A ListJobs JSON reply of these (made-up) jobs."""
    jobs = [{"Id": f"T{n:07d}", "Type": "echo", "JobName": f"job {n}", "Status": 3}
            for n in numbers]
    return f"R0000000: {json.dumps({'Jobs': jobs, 'Next': next_after})}\r\n".encode()


async def test_the_cli_follows_every_page_and_prints_what_it_printed_before():
    from .test_client import scripted_server

    pages = [job_page(range(1, 3), "T0000002"), job_page(range(3, 4), None)]
    async with scripted_server(pages * 2) as (port, packets):
        async def cli(*args: str) -> str:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "jobmonitor", "list", "--all", *args, "--port", str(port),
                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            out, err = await asyncio.wait_for(process.communicate(), 30)
            assert process.returncode == 0, err
            return out.decode()

        assert (await cli()).splitlines() == [
            "TRANSACTION  STATUS     PROJECT  JOB NAME",
            "T0000001     Completed  echo     job 1",
            "T0000002     Completed  echo     job 2",
            "T0000003     Completed  echo     job 3"]
        as_json = await cli("--json")
    assert as_json.count("\n") == 1
    assert [job["Id"] for job in json.loads(as_json)] == numbered(1, 2, 3)
    assert [packet.variables.get("_sys_After") for packet in packets] == [
        None, "T0000002", None, "T0000002"]


# -- a big store -----------------------------------------------------------------------------


@pytest.mark.timeout(600 if SOAK else 60)
async def test_submits_go_on_while_a_big_store_is_listed(tmp_path):
    # The server in a process of its own: this one's heap (pytest's) would make
    # its garbage collector, not the listing, what a submit waits for.
    server = ServerProcess("--jobs", "tests/support/jobs.py",
                           "--store", store_url(tmp_path, BIG_STORE), memory_store=False)
    try:
        latencies, rows = await submits_beside_a_listing(server.port)
    finally:
        server.kill()
    assert rows[:BIG_STORE] and rows[BIG_STORE - 1].startswith(f"T{BIG_STORE:07d}")
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99)]
    print(f"\n{BIG_STORE} stored jobs listed; {len(latencies)} submits meanwhile: "
          f"p50 {latencies[len(latencies) // 2] * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
          f"max {latencies[-1] * 1000:.1f} ms")
    assert len(latencies) >= 10 and p99 < SUBMIT_P99_S


async def submits_beside_a_listing(port: int) -> tuple[list[float], list[str]]:
    """While ``jobmonitor list --all`` runs, submit a job every ``SUBMIT_EVERY_S``
    whether or not the ones before have been answered (so a stall delays every
    submit due during it, not just one); return each submit's latency from when
    it was due (s), and the rows the listing printed."""
    loop = asyncio.get_running_loop()
    lister = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "jobmonitor", "list", "--all", "--port", str(port),
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    listed = asyncio.ensure_future(lister.communicate())

    async def submit_one(due: float) -> float:
        reply = await exchange(port, submit("echo", monitor=False))
        assert reply[0].startswith("R0000000: T"), reply
        return loop.time() - due

    submits = []
    due = loop.time()
    deadline = due + (300 if SOAK else 30)
    while not listed.done() and due < deadline:
        submits.append(asyncio.ensure_future(submit_one(due)))
        due += SUBMIT_EVERY_S
        await asyncio.sleep(max(due - loop.time(), 0))  # (the pace, not a wait for an event)
    latencies = await asyncio.gather(*submits)
    out, err = await listed
    assert lister.returncode == 0, err
    return latencies, out.decode().splitlines()[1:]
