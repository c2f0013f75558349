"""Queues and priorities over real sockets: order, pauses, limits, and refusals."""

from __future__ import annotations

import asyncio

from jobmonitor import JobState
from jobmonitor.queueing import QueueSettings
from jobmonitor.users import User, hash_password

from ..conftest import finished, release
from ..support.helpers import exchange, submit, xml_packet


def tid_of(lines: list[str]) -> str:
    assert len(lines) == 1 and lines[0].startswith("R0000000: T"), lines
    return lines[0].removeprefix("R0000000: ")


async def queued(port: int, project: str = "echo", **variables: str) -> str:
    return tid_of(await exchange(port, submit(project, monitor=False, **variables)))


async def start_order(port: int) -> list[str]:
    """The transaction IDs of the task log's ``start`` events, in order."""
    lines = await exchange(port, xml_packet("GetTaskLog"))
    return [line.split("\t")[1] for line in lines[1:] if line.endswith("\tstart")]


async def queue_rows(port: int) -> dict[str, list[str]]:
    lines = await exchange(port, xml_packet("ListQueues"))
    rows = [line[10:].split("\t") for line in lines[1:]]
    assert lines[0][10:] == f"{len(rows)} queues"
    return {row[0]: row[1:] for row in rows}


def state(server, transaction_id: str) -> JobState:
    return server.engine.jobs.find(transaction_id).state


async def test_jobs_start_by_priority_then_age_within_a_queue(make_server):
    server = await make_server(max_running=1)
    blocker = await queued(server.port, "wait", Key="block")
    order = [await queued(server.port, _sys_Priority=priority) for priority in
             ("5", "9", "5", "9", "1", "")]
    # (the blank priority is the default, 5)
    await release("block")
    for tid in order:
        await finished(server, tid)
    expected = [order[1], order[3], order[0], order[2], order[5], order[4]]
    assert await start_order(server.port) == [blocker, *expected]


async def test_equal_heads_of_two_queues_start_oldest_first(make_server):
    server = await make_server(max_running=1)
    blocker = await queued(server.port, "wait", Key="block")
    jobs = [await queued(server.port, _sys_QueueName=queue) for queue in ("b", "a", "b", "a")]
    high = await queued(server.port, _sys_QueueName="c", _sys_Priority="6")
    await release("block")
    for tid in [*jobs, high]:
        await finished(server, tid)
    assert await start_order(server.port) == [blocker, high, *jobs]


async def test_a_paused_queue_holds_its_jobs_while_others_run(make_server):
    server = await make_server(queues=(QueueSettings("reports", paused=True),))
    held = await queued(server.port, _sys_QueueName="reports")
    other = await queued(server.port)
    await finished(server, other)
    assert state(server, held) is JobState.QUEUED
    assert (await queue_rows(server.port))["reports"] == ["1", "0", "8", "true", "0"]
    assert await exchange(server.port, xml_packet("ResumeQueue", {"_sys_QueueName": "reports"})
                          ) == ["R0000000: Queue reports resumed"]
    await finished(server, held)
    assert await exchange(server.port, xml_packet("PauseQueue", {"_sys_QueueName": "reports"})
                          ) == ["R0000000: Queue reports paused"]
    again = await queued(server.port, _sys_QueueName="reports")
    assert state(server, again) is JobState.QUEUED


async def test_pausing_does_not_stop_running_jobs(make_server):
    server = await make_server()
    running = await queued(server.port, "wait", Key="run", _sys_QueueName="batch")
    assert state(server, running) is JobState.PROCESSING
    await exchange(server.port, xml_packet("PauseQueue", {"_sys_QueueName": "batch"}))
    waiting = await queued(server.port, _sys_QueueName="batch")
    await release("run")
    await finished(server, running)
    assert state(server, waiting) is JobState.QUEUED
    assert (await queue_rows(server.port))["batch"] == ["1", "0", "8", "true", "0"]


async def test_a_queue_runs_at_most_its_own_max_running(make_server):
    server = await make_server(max_running=4, queues=(QueueSettings("one", max_running=1),))
    first = await queued(server.port, "wait", Key="a", _sys_QueueName="one")
    second = await queued(server.port, "wait", Key="b", _sys_QueueName="one")
    elsewhere = await queued(server.port, "wait", Key="c")
    assert [state(server, t) for t in (first, second, elsewhere)] == [
        JobState.PROCESSING, JobState.QUEUED, JobState.PROCESSING]
    rows = await queue_rows(server.port)
    assert rows["one"] == ["1", "1", "1", "false", "0"]
    assert rows["default"] == ["0", "1", "4", "false", "0"]
    await release("a")
    await finished(server, first)
    assert state(server, second) is JobState.PROCESSING
    for key, tid in (("b", second), ("c", elsewhere)):
        await release(key)
        await finished(server, tid)


async def test_max_running_stays_the_server_wide_cap(make_server):
    server = await make_server(max_running=2, queues=(QueueSettings("a", max_running=5),
                                                      QueueSettings("b", max_running=5)))
    tids = [await queued(server.port, "wait", Key=f"k{n}", _sys_QueueName=queue)
            for n, queue in enumerate(("a", "b", "a", "b"))]
    assert [state(server, t) for t in tids].count(JobState.PROCESSING) == 2
    assert await exchange(server.port, xml_packet("GetJobQueueLen")) == [
        "R0000000- Queued: 2", "R0000000: Running: 2"]
    for n in range(len(tids)):
        await release(f"k{n}")
    for tid in tids:
        await finished(server, tid)


async def test_a_new_queue_is_made_on_demand_and_forgotten_once_empty(server):
    tid = await queued(server.port, "wait", Key="adhoc", _sys_QueueName="adhoc")
    assert (await queue_rows(server.port))["adhoc"] == ["0", "1", "8", "false", "0"]
    await release("adhoc")
    await finished(server, tid)
    assert list(await queue_rows(server.port)) == ["default"]


async def test_an_unknown_queue_is_refused_when_new_queues_are_not_allowed(make_server):
    server = await make_server(allow_new_queues=False, queues=(QueueSettings("known"),))
    refusal = ("R0005007: Invalid variable value: _sys_QueueName: unknown queue 'nope' "
               "(this server's queues: default, known)")
    assert await exchange(server.port, submit("echo", _sys_QueueName="nope")) == [refusal]
    assert await exchange(server.port, xml_packet("PauseQueue", {"_sys_QueueName": "nope"})
                          ) == [refusal]
    await finished(server, await queued(server.port, _sys_QueueName="known"))
    await finished(server, await queued(server.port, _sys_QueueName="default"))


async def test_every_bad_value_gets_its_one_reply(server):
    invalid = "R0005007: Invalid variable value: "
    priority = "_sys_Priority must be a whole number 1 to 9, got "
    run_at = ("_sys_RunAt must be an ISO 8601 time with a time zone, such as "
              "2026-12-24T06:00:00Z, got ")
    delay = "_sys_DelaySeconds must be a number of seconds of 0 or more, got "
    queue = "_sys_QueueName must be 1 to 64 letters, digits or . _ - : @ / (no spaces), got "
    cases = [
        ({"_sys_Priority": "0"}, priority + "'0'"),
        ({"_sys_Priority": "10"}, priority + "'10'"),
        ({"_sys_Priority": "5.0"}, priority + "'5.0'"),
        ({"_sys_Priority": "high"}, priority + "'high'"),
        ({"_sys_Priority": "\u0665"}, priority + "'\u0665'"),  # an Arabic-Indic five
        ({"_sys_RunAt": "2026-12-24T06:00:00"}, run_at + "'2026-12-24T06:00:00'"),
        ({"_sys_RunAt": "2026-12-24"}, run_at + "'2026-12-24'"),
        ({"_sys_RunAt": "tomorrow"}, run_at + "'tomorrow'"),
        ({"_sys_RunAt": "2026-13-01T00:00:00Z"}, run_at + "'2026-13-01T00:00:00Z'"),
        ({"_sys_DelaySeconds": "-1"}, delay + "'-1'"),
        ({"_sys_DelaySeconds": "1e3"}, delay + "'1e3'"),
        ({"_sys_DelaySeconds": "nan"}, delay + "'nan'"),
        ({"_sys_DelaySeconds": "9999999999"}, delay + "'9999999999'"),
        ({"_sys_QueueName": "two words"}, queue + "'two words'"),
        ({"_sys_QueueName": "tab\there"}, queue + "'tab\\there'"),
        ({"_sys_QueueName": "q" * 65}, queue + repr("q" * 65)),
        ({"_sys_RunAt": "2026-12-24T06:00:00Z", "_sys_DelaySeconds": "5"},
         "give _sys_RunAt or _sys_DelaySeconds, not both"),
    ]
    for variables, text in cases:
        assert await exchange(server.port, submit("echo", **variables)) == [invalid + text], \
            variables
    assert await exchange(server.port, xml_packet("PauseQueue")) == [
        "R0005006: Missing required variable: _sys_QueueName"]
    assert await exchange(server.port, xml_packet("ResumeQueue", {"_sys_QueueName": " "})) == [
        "R0005006: Missing required variable: _sys_QueueName"]
    assert await exchange(server.port, xml_packet("ListQueues", {"_sys_Format": "xml"})) == [
        "R0005007: Invalid variable value: _sys_Format must be one of text, json, got 'xml'"]
    assert server.engine.jobs.live_jobs() == []  # nothing was made on the way


async def test_pausing_a_queue_is_for_administrators(make_server):
    users = (User("ann", hash_password("ann-pw")),
             User("root", hash_password("root-pw"), role="admin"))
    server = await make_server(users=users)

    def pause(user: str, password: str) -> bytes:
        return xml_packet("PauseQueue", {"_sys_QueueName": "default", "_sys_User": user,
                                         "_sys_Password": password})

    assert await exchange(server.port, pause("ann", "ann-pw")) == [
        "R0005013: Permission denied: PauseQueue is for administrators"]
    assert await exchange(server.port, pause("root", "root-pw")) == [
        "R0000000: Queue default paused"]
    listing = xml_packet("ListQueues", {"_sys_User": "ann", "_sys_Password": "ann-pw",
                                        "_sys_Format": "json"})
    assert await exchange(server.port, listing) == [
        'R0000000: [{"Name":"default","Waiting":0,"Running":0,"MaxRunning":8,'
        '"Paused":true,"Scheduled":0}]']


async def test_a_project_names_its_default_queue(make_server):
    from ..support import jobs

    jobs.app.add_job("queued-elsewhere", jobs.echo, queue="elsewhere")
    try:
        server = await make_server(queues=(QueueSettings("elsewhere", paused=True),))
        tid = await queued(server.port, "queued-elsewhere")
        status = await exchange(server.port, xml_packet(
            "GetJobStatus", {"_sys_TransactionID": tid}))
        assert "R0000000- Queue: elsewhere" in status and "R0000000- Priority: 5" in status
        asked = await queued(server.port, "queued-elsewhere", _sys_QueueName="default")
        await finished(server, asked)
        assert state(server, tid) is JobState.QUEUED
    finally:
        jobs.app._handlers.pop("queued-elsewhere")


async def test_queue_and_priority_show_in_every_status_format(server):
    tid = await queued(server.port, "wait", Key="show", _sys_QueueName="q1", _sys_Priority="8")

    async def status(form: str) -> list[str]:
        return await exchange(server.port, xml_packet(
            "GetJobStatus", {"_sys_TransactionID": tid, "_sys_Format": form}))

    text = await status("text")
    assert "R0000000- Queue: q1" in text and "R0000000- Priority: 8" in text
    assert not any(line[10:].startswith("Due:") for line in text)
    assert '"Queue":"q1","Priority":8,"Due":null,"Schedule":null}' in (await status("json"))[0]
    xml = "\n".join(await status("xml"))
    assert "<Queue>q1</Queue>" in xml and "<Priority>8</Priority>" in xml
    await release("show")
    await finished(server, tid)


async def test_queue_length_keeps_its_meaning(make_server):
    server = await make_server(max_running=1)
    running = await queued(server.port, "wait", Key="len")
    waiting = [await queued(server.port, _sys_QueueName=name) for name in ("x", "y")]
    await queued(server.port, _sys_DelaySeconds="3600")  # not due: neither queued nor running
    assert await exchange(server.port, xml_packet("GetJobQueueLen")) == [
        "R0000000- Queued: 2", "R0000000: Running: 1"]
    await release("len")
    await asyncio.wait_for(asyncio.gather(*(finished(server, t) for t in [running, *waiting])),
                           10)
