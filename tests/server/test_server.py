"""The server over real sockets on port 0, with real clients."""

from __future__ import annotations

import asyncio
import socket

import pytest

from jobmonitor import JobState

from ..conftest import MACHINE, finished, release
from ..support import jobs
from ..support.helpers import Session, exchange, split_lines, submit, xml_packet

ENDED = "J0000001: Transaction {} ended"
#: Before the cancelled line of a job the server cancelled because it stopped.
SHUTDOWN_CANCEL = "J0005004: Job cancelled: the server is shutting down."


def tid_of(reply: str) -> str:
    assert reply.startswith("R0000000: T"), reply
    return reply.removeprefix("R0000000: ")


# -- submitting and streaming ---------------------------------------------------


async def test_monitored_submit_streams_every_line_then_ends(server):
    lines = await exchange(server.port, submit("echo", JobName="PDF", Color="blue"))
    tid = tid_of(lines[0])
    assert tid == "T0000001"
    assert lines[1:] == [
        f"J0000100: Machine name: {MACHINE}",
        "J0000100: Color=blue",
        "J0000100: JobName=PDF",
        "J0000100: ProjectName=echo",
        "J0000020: Job completed successfully.",
        ENDED.format(tid),
    ]


async def test_transaction_ids_are_unique_and_increasing(server):
    replies = [(await exchange(server.port, submit("echo", monitor=False)))[0] for _ in range(3)]
    assert replies == ["R0000000: T0000001", "R0000000: T0000002", "R0000000: T0000003"]


async def test_unmonitored_submit_replies_and_closes_while_job_runs_on(server):
    lines = await exchange(server.port, submit("wait", monitor=False, Key="k"))
    assert lines == ["R0000000: T0000001"]
    job = server.engine.jobs.find("T0000001")
    assert job.state is JobState.PROCESSING
    await release("k")
    assert (await finished(server, "T0000001")).state is JobState.COMPLETED


async def test_doc_variables_reach_the_job(server):
    packet = xml_packet("SubmitJob", {"ProjectName": "echo", "_sys_ClientJobMonitor": "TRUE"},
                        {"Headline": "Sale & more"})
    lines = await exchange(server.port, packet)
    assert "J0000100: doc Headline=Sale & more" in lines
    assert "J0000100: ProjectName=echo" in lines
    assert not any("_sys_" in line for line in lines)


@pytest.mark.parametrize("word", ["true", "TRUE", "1", "yes", "Yes"])
async def test_monitor_flag_true_spellings(server, word):
    lines = await exchange(server.port, submit("echo", monitor=False, _sys_ClientJobMonitor=word))
    assert lines[-1].startswith("J0000001: Transaction")


@pytest.mark.parametrize("word", ["false", "FALSE", "0", "no", ""])
async def test_monitor_flag_false_spellings(server, word):
    lines = await exchange(server.port, submit("echo", monitor=False, _sys_ClientJobMonitor=word))
    assert len(lines) == 1 and lines[0].startswith("R0000000: T")


async def test_partial_job_multi_line_error_uses_hyphen_continuation(server):
    lines = await exchange(server.port, submit("partial"))
    assert lines[2:] == [
        "J0000100: record 1 ok",
        "J0005000- Evaluation failed for variable: FormatPriceJS",
        "J0005000: Script result was null, line 48",
        "J0000021: Job only partially completed.",
        ENDED.format(tid_of(lines[0])),
    ]


async def test_job_failed_reason_then_failed_code(server):
    lines = await exchange(server.port, submit("fail"))
    assert lines[2:] == ["J0005000: input file missing", "J0000022: Job failed.",
                         ENDED.format(tid_of(lines[0]))]


async def test_handler_exception_gives_message_not_traceback(server, caplog):
    lines = await exchange(server.port, submit("crash"))
    assert lines[2:] == [
        "J0000100: about to crash",
        "J0005001- ValueError: boom",
        "J0005001: second line",
        "J0000022: Job failed.",
        ENDED.format(tid_of(lines[0])),
    ]
    assert "Traceback" in caplog.text  # the traceback goes to the server log only


async def test_bad_return_value_fails_the_job(server):
    lines = await exchange(server.port, submit("bad-return"))
    assert lines[-3].startswith("J0005001: TypeError: a job handler must return an Outcome")
    assert lines[-2] == "J0000022: Job failed."


async def test_control_characters_cannot_forge_lines(server):
    lines = await exchange(server.port, submit("control"))
    assert lines[2:7] == [
        "J0000100: bell\\x07 escape\\x1b[2J nul\\x00 del\\x7f tab\tend",
        "J0000100- fake",
        "J0000100: J0000020: Job completed successfully.",
        "J0000100: sep\\u2028x",
        "J0000100: caf\u00e9 \u2603",
    ]
    assert [line for line in lines if line.startswith("J0000020")] == [
        "J0000020: Job completed successfully."]


async def test_lone_surrogates_in_job_text_are_escaped(server):
    assert (await exchange(server.port, submit("surrogates")))[2:4] == [
        "J0000100: file \\udcff.pdf", "J0005000: cannot open \\udcff.pdf"]
    assert (await exchange(server.port, submit("thread-surrogates")))[2:4] == [
        "J0000100: file \\udcff.pdf", "J0000100: done"]
    assert (await exchange(server.port, submit("surrogate-crash")))[2:4] == [
        "J0005001: OSError: no such file: \\udcff.pdf", "J0000022: Job failed."]


async def test_progress_lines_and_recorded_progress(server):
    lines = await exchange(server.port, submit("progress"))
    assert lines[2:4] == ["J0000110: Progress: 1/4 (25%)",
                          "J0000110: Progress: 4/4 (100%) all done"]
    job = server.engine.jobs.find(tid_of(lines[0]))
    assert (job.progress_done, job.progress_total) == (4, 4)


async def test_lines_arrive_live_before_the_job_ends(server):
    session = await Session.open(server.port, submit("wait", Key="live"))
    assert (await session.line()).startswith("R0000000: T")
    assert await session.line() == f"J0000100: Machine name: {MACHINE}"
    assert await session.line() == "J0000100: waiting"
    await release("live")
    assert await session.rest() == ["J0000100: released", "J0000020: Job completed successfully.",
                                    ENDED.format("T0000001")]
    await session.close()


async def test_many_lines_arrive_complete_and_in_order(server):
    lines = await exchange(server.port, submit("lines", Count="20000", YieldEvery="97"))
    assert lines[2:-2] == [f"J0000100: line {n}" for n in range(1, 20001)]


async def test_thread_handler_streams_with_the_same_api(server):
    lines = await exchange(server.port, submit("thread", Count="3"))
    assert lines[2:] == ["J0000100: thread line 1", "J0000100: thread line 2",
                         "J0000100: thread line 3", "J0000020: Job completed successfully.",
                         ENDED.format(tid_of(lines[0]))]


async def test_thread_handler_failure(server):
    lines = await exchange(server.port, submit("thread-fail"))
    assert lines[2:4] == ["J0005000: thread says no", "J0000022: Job failed."]


async def test_monitor_disconnect_does_not_stop_the_job(server):
    session = await Session.open(server.port, submit("wait", Key="gone"))
    tid = tid_of(await session.line())
    await session.close()
    await release("gone")
    job = await finished(server, tid)
    assert job.state is JobState.COMPLETED


# -- framing ------------------------------------------------------------------------


async def test_packet_one_byte_at_a_time_without_closing(server):
    lines = await exchange(server.port, submit("echo"), chunk=1)
    assert lines[-2] == "J0000020: Job completed successfully."


async def test_client_half_close_after_packet(server):
    lines = await exchange(server.port, submit("echo"), shut_wr=True)
    assert lines[-2] == "J0000020: Job completed successfully."


async def test_bytes_after_the_root_element_are_ignored(server):
    lines = await exchange(server.port, submit("echo") + b"<junk>\x00\xff garbage")
    assert lines[-2] == "J0000020: Job completed successfully."


# -- closing: lingering only for a client that sent more than its packet ---------------


async def _until_no_connections(server, within_s: float) -> None:
    try:
        await asyncio.wait_for(server.wait_connections_closed(), within_s)
    except TimeoutError:
        raise AssertionError("the connection was held") from None


@pytest.mark.parametrize("trailer", [b"", b"\r\n", b" \t\n"])
async def test_a_client_that_sent_just_its_packet_is_closed_at_once(make_server, trailer):
    server = await make_server(linger_s=30.0)
    session = await Session.open(server.port, submit("echo") + trailer)
    lines = await session.rest()  # the server closed; the client has not
    assert lines[-1] == ENDED.format(tid_of(lines[0]))
    await _until_no_connections(server, within_s=2.0)  # not held for linger_s
    await session.close()


@pytest.mark.parametrize("more", ["after the packet", "while watching"])
async def test_a_client_that_sent_more_is_lingered_for(make_server, more):
    server = await make_server(linger_s=30.0)
    packet = submit("wait", Key="more")
    session = await Session.open(server.port, packet + b"<extra/>" if more == "after the packet"
                                 else packet)
    tid = tid_of(await session.line())
    if more == "while watching":
        session.writer.write(b"are you there?\r\n")
        await session.writer.drain()
        # A round trip on another connection: the server has read those bytes by its end.
        assert (await exchange(server.port, submit("echo")))[-2] == \
            "J0000020: Job completed successfully."
    await release("more")
    lines = await session.rest()  # every line, then the server's end of sending
    assert lines[-1] == ENDED.format(tid)
    # The server still reads, so a client still talking gets no reset...
    await asyncio.sleep(0.3)
    assert server.connection_count == 1
    session.writer.write(b"still talking\r\n")
    await session.writer.drain()
    await asyncio.sleep(0.1)
    assert server.connection_count == 1
    # ...until the client closes its side.
    await session.close()
    await _until_no_connections(server, within_s=2.0)


@pytest.mark.skipif(not hasattr(socket, "TCP_CORK"), reason="Linux's TCP_CORK")
@pytest.mark.parametrize("store", ["memory", "sqlite"])
async def test_a_monitor_is_uncorked_while_its_job_runs(make_server, tmp_path, store):
    """Accepted sockets start corked (a short answer leaves with the FIN); one
    that watches a job still running must not keep its lines in the kernel.
    With the SQLite store the reply waits for the job's first stored lines: the
    next commit, which a waiting monitor starts at once (not commit_interval_s,
    here longer than the test waits, later)."""
    url = "memory://" if store == "memory" else f"sqlite:///{tmp_path / 'cork.db'}"
    server = await make_server(store=url, commit_interval_s=60.0)
    assert server.accepts_corked
    session = await Session.open(server.port, submit("wait", Key="cork"))
    tid = tid_of(await session.line())
    assert await session.line() == f"J0000100: Machine name: {MACHINE}"
    assert await session.line() == "J0000100: waiting"
    (connection,) = server._connections
    sock = connection._transport.get_extra_info("socket")
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CORK) == 0
    await release("cork")
    assert (await session.rest())[-1] == ENDED.format(tid)
    await session.close()


async def test_pageflex_documentation_packet_with_broken_declaration(server):
    packet = (b'<?xml version="1.0">\r\n<?pf_command version="1.0"?>\r\n'
              b'<pfjob:job_command xmlns:pfjob="http://www.pageflex.com/schemas"'
              b' name="SubmitJob">\r\n'
              b'   <pfjob:job_variables>\r\n'
              b'      <pfjob:var name="ProjectName">echo</pfjob:var>\r\n'
              b'      <pfjob:var name="_sys_ClientJobMonitor">true</pfjob:var>\r\n'
              b'   </pfjob:job_variables>\r\n</pfjob:job_command>\r\n')
    lines = await exchange(server.port, packet)
    assert lines[-2] == "J0000020: Job completed successfully."


async def test_utf16le_without_bom_from_a_widely_used_client(server):
    text = ('<job_command xmlns="http://www.pageflexinc.com/schemas" name="SubmitJob">'
            '<job_variables><var name="ProjectName">echo</var><var name="Name">Zo\u00eb</var>'
            '<var name="_sys_ClientJobMonitor">true</var></job_variables></job_command>')
    lines = await exchange(server.port, text.encode("utf-16-le"))
    assert "J0000100: Name=Zo\u00eb" in lines


# -- refusals: one error reply line, then close ----------------------------------------


@pytest.mark.parametrize(
    ("packet", "expected"),
    [
        (b"<job_command name='SubmitJob'><job_variables></job_command>",
         "R0005000: Malformed command packet"),
        (b"<?xml version='1.0' encoding='x-no-such'?><job_command name='X'/>",
         "R0005001: Unsupported packet encoding"),
        (b"<!DOCTYPE job_command [<!ENTITY a 'b'>]><job_command name='X'/>",
         "R0005002: DOCTYPE not allowed in a command packet"),
        (xml_packet("Frobnicate"), "R0005005: Unknown command: Frobnicate"),
        # a name close to a command's, in any case: the reply names the command
        (xml_packet("GetJobStatu"), "R0005005: Unknown command: GetJobStatu "
                                    "(did you mean GetJobStatus?)"),
        (xml_packet("getjobstatus"), "R0005005: Unknown command: getjobstatus "
                                     "(did you mean GetJobStatus?)"),
        (xml_packet("SubmitJobs"), "R0005005: Unknown command: SubmitJobs "
                                   "(did you mean SubmitJob?)"),
        (xml_packet("CancelJob" * 5), "R0005005: Unknown command: " + "CancelJob" * 5),
        (xml_packet("SubmitJob", {"JobName": "x"}),
         "R0005006: Missing required variable: ProjectName"),
        (submit("echo", monitor=False, _sys_ClientJobMonitor="maybe"),
         "R0005007: Invalid variable value"),
        (submit("no-such-project"), "R0005008: Unknown project: no-such-project"),
        (xml_packet("GetJobStatus", {"_sys_TransactionID": "T7654321"}),
         "R0005009: Unknown transaction: T7654321"),
        (xml_packet("CancelJob", {}), "R0005006: Missing required variable: _sys_TransactionID"),
        # what the client sent is quoted on one short line: it can neither split nor swell a reply
        (xml_packet("Frob\r\nR0000000: T0000001"),
         "R0005005: Unknown command: Frob R0000000: T0000001"),
        (submit("p" * 5000), "R0005008: Unknown project: " + "p" * 77 + "..."),
        (xml_packet("GetJobStatus", {"_sys_TransactionID": "T1\nx"}),
         "R0005009: Unknown transaction: T1 X"),
    ],
)
async def test_each_refusal_gets_exactly_one_error_line(server, packet, expected):
    lines = await exchange(server.port, packet)
    assert len(lines) == 1, lines
    assert lines[0].startswith(expected), lines[0]


# -- a value in a value attribute --------------------------------------------------------

VALUE_HINT = ("{} (a variable's value goes in the element's text: <var name=\"{}\">{}</var>; "
              "the value attribute is ignored)")


def vars_packet(command: str, body: str) -> bytes:
    """A packet with these var elements, written by hand."""
    return (f'<?xml version="1.0"?>\n<job_command name="{command}"><job_variables>{body}'
            "</job_variables></job_command>\n").encode()


@pytest.mark.parametrize("send", ["whole", "byte by byte", "with trailing bytes"])
async def test_a_value_attribute_on_an_empty_var_is_named_in_the_reply(server, send):
    packet = vars_packet("SubmitJob", '<var name="ProjectName" value="echo"/>'
                                      '<var name="_sys_ClientJobMonitor">true</var>')
    if send == "with trailing bytes":
        packet += b"<junk>\x00\xff garbage"
    lines = await exchange(server.port, packet, chunk=1 if send == "byte by byte" else None)
    assert lines == ['R0005006: Missing required variable: ProjectName (a variable\'s value goes '
                     'in the element\'s text: <var name="ProjectName">echo</var>; the value '
                     'attribute is ignored)']


@pytest.mark.parametrize(
    ("packet", "expected"),
    [
        # the vendor's namespace and prefix, text that is only whitespace
        (b'<pfjob:job_command xmlns:pfjob="http://www.pageflex.com/schemas" name="SubmitJob">'
         b'<pfjob:job_variables><pfjob:var name="ProjectName" value="Sample Project.pf">\n'
         b"</pfjob:var></pfjob:job_variables></pfjob:job_command>",
         "R0005006: Missing required variable: "
         + VALUE_HINT.format("ProjectName", "ProjectName", "Sample Project.pf")),
        # the value quoted as the text it must become, cut at 40 characters
        (vars_packet("SubmitJob", '<var name="ProjectName" value="Sales &amp; Marketing"/>'),
         "R0005006: Missing required variable: "
         + VALUE_HINT.format("ProjectName", "ProjectName", "Sales &amp; Marketing")),
        (vars_packet("SubmitJob", f'<var name="ProjectName" value="{"p" * 5000}"/>'),
         "R0005006: Missing required variable: "
         + VALUE_HINT.format("ProjectName", "ProjectName", "p" * 37 + "...")),
        (vars_packet("CancelJob", '<var name="_sys_TransactionID" value="T0000001"/>'),
         "R0005006: Missing required variable: "
         + VALUE_HINT.format("_sys_TransactionID (or _sys_JobToken)", "_sys_TransactionID",
                             "T0000001")),
        (vars_packet("GetJobStatus", '<var name="_sys_JobToken" value="order-17"></var>'),
         "R0005006: Missing required variable: "
         + VALUE_HINT.format("_sys_TransactionID (or _sys_JobToken)", "_sys_JobToken",
                             "order-17")),
        # no hint: the variable is absent, or its value attribute is blank too
        (vars_packet("SubmitJob", '<var name="JobName" value="echo"/>'),
         "R0005006: Missing required variable: ProjectName"),
        (vars_packet("SubmitJob", '<var name="ProjectName" value=" "/>'),
         "R0005006: Missing required variable: ProjectName"),
    ],
)
async def test_value_attribute_hints(server, packet, expected):
    assert await exchange(server.port, packet) == [expected]


async def test_a_var_with_text_and_a_value_attribute_has_the_text_as_its_value(server):
    packet = vars_packet("SubmitJob", '<var name="ProjectName" value="no-such-project">echo</var>'
                                      '<var name="JobName" value="ignored">PDF</var>'
                                      '<var name="_sys_ClientJobMonitor">true</var>')
    lines = await exchange(server.port, packet)
    assert lines[0] == "R0000000: T0000001"
    assert "J0000100: ProjectName=echo" in lines and "J0000100: JobName=PDF" in lines
    assert lines[-2] == "J0000020: Job completed successfully."


async def test_truncated_packet_at_eof(server):
    lines = await exchange(server.port, b"<job_command name='SubmitJob'><job_va", shut_wr=True)
    assert len(lines) == 1 and lines[0].startswith("R0005000: Malformed command packet")


async def test_empty_connection_is_closed_quietly(server):
    assert await exchange(server.port, b"", shut_wr=True) == []


async def test_packet_too_large_while_client_keeps_sending(make_server):
    server = await make_server(max_packet_bytes=4096)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"<job_command name='SubmitJob'><job_variables><var name='x'>")
    filler = b"a" * 65536
    received = b""
    try:
        for _ in range(8):  # keep sending well past the limit, as a careless client would
            writer.write(filler)
            await writer.drain()
    except ConnectionError:
        pass
    received = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert split_lines(received) == [
        "R0005003: Command packet too large: more than 4096 bytes"] or \
        split_lines(received)[0].startswith("R0005003: Command packet too large")


@pytest.mark.parametrize("comment", ["", "<!-- the full parser -->"])
async def test_max_packet_variables_is_the_servers(make_server, comment):
    server = await make_server(max_packet_variables=3)
    packet = xml_packet("SubmitJob", {"ProjectName": "echo", "a": "1"}, {"b": "2"})
    assert (await exchange(server.port, packet.replace(b"?>", b"?>" + comment.encode(), 1))
            )[0].startswith("R0000000: T")
    assert await exchange(server.port, xml_packet(
        "SubmitJob", {"ProjectName": "echo", "a": "1"}, {"b": "2", "c": "3"})) == [
        "R0005003: Command packet too large: more than 3 variables"]


async def test_packet_timeout(make_server):
    server = await make_server(packet_timeout_s=0.3)
    lines = await exchange(server.port, b"<job_command name='SubmitJob'>")
    assert lines == [
        "R0005004: Command packet not complete in time: no complete packet within 0.3 s"]


async def test_server_keeps_serving_after_bad_packets(server):
    bad = [exchange(server.port, b"<oops" * n + b">", shut_wr=True) for n in range(1, 20)]
    good = [exchange(server.port, submit("echo")) for _ in range(5)]
    results = await asyncio.gather(*bad, *good)
    assert all(len(r) == 1 and r[0].startswith("R0005000") for r in results[:19])
    assert all(r[-2] == "J0000020: Job completed successfully." for r in results[19:])


# -- other commands ----------------------------------------------------------------------


async def test_cancel_running_job_ends_its_monitors(server):
    session = await Session.open(server.port, submit("wait", Key="never"))
    tid = tid_of(await session.line())
    assert await session.line() == f"J0000100: Machine name: {MACHINE}"
    assert await session.line() == "J0000100: waiting"
    reply = await exchange(server.port, xml_packet("CancelJob", {"_sys_TransactionID": tid}))
    assert reply == [f"R0000000: {tid}"]
    assert await session.rest() == ["J0000023: Job cancelled by user.", ENDED.format(tid)]
    await session.close()
    again = await exchange(server.port, xml_packet("CancelJob", {"_sys_TransactionID": tid}))
    assert again == [
        f"R0005010: Invalid state for this request: {tid} has already ended (Cancelled)"]


async def test_cancel_queued_job_drops_it(make_server):
    server = await make_server(max_running=1)
    first = await exchange(server.port, submit("wait", monitor=False, Key="first"))
    queued = await Session.open(server.port, submit("echo"))
    tid = tid_of(await queued.line())
    assert server.engine.jobs.find(tid).state is JobState.QUEUED
    await exchange(server.port, xml_packet("CancelJob", {"_sys_TransactionID": tid}))
    assert await queued.rest() == [f"J0000100: Machine name: {MACHINE}",
                                   "J0000023: Job cancelled by user.", ENDED.format(tid)]
    await queued.close()
    await release("first")
    assert (await finished(server, tid_of(first[0]))).state is JobState.COMPLETED


async def test_cancel_thread_job_at_its_next_api_call(server):
    session = await Session.open(server.port, submit("thread-wait", Key="t"))
    tid = tid_of(await session.line())
    await session.line()
    assert await session.line() == "J0000100: still working"
    await exchange(server.port, xml_packet("CancelJob", {"_sys_TransactionID": tid}))
    rest = await session.rest()
    assert rest[-2:] == ["J0000023: Job cancelled by user.", ENDED.format(tid)]
    assert set(rest[:-2]) <= {"J0000100: still working"}
    await session.close()


async def test_jobs_wait_in_fifo_order_beyond_max_running(make_server):
    server = await make_server(max_running=2)
    for key in "abcd":
        await exchange(server.port, submit("wait", monitor=False, Key=key))
    states = [server.engine.jobs.find(f"T000000{n}").state for n in range(1, 5)]
    assert states == [JobState.PROCESSING, JobState.PROCESSING, JobState.QUEUED, JobState.QUEUED]
    queue = await exchange(server.port, xml_packet("GetJobQueueLen"))
    assert queue == ["R0000000- Queued: 2", "R0000000: Running: 2"]
    await release("b")
    await finished(server, "T0000002")
    assert server.engine.jobs.find("T0000003").state is JobState.PROCESSING
    assert server.engine.jobs.find("T0000004").state is JobState.QUEUED
    for key in "acd":
        await release(key)
    await finished(server, "T0000004")


async def test_get_job_status_lines(server):
    lines = await exchange(server.port, submit("progress", JobName="Flyer"))
    tid = tid_of(lines[0])
    status = await exchange(server.port, xml_packet("GetJobStatus", {"_sys_TransactionID": tid}))
    assert [line[:10] for line in status] == ["R0000000- "] * 13 + ["R0000000: "]
    fields = dict(line[10:].split(": ", 1) if ": " in line[10:] else (line[10:-1], "")
                  for line in status)
    assert list(fields) == ["Transaction", "Project", "Job name", "Status", "Progress",
                            "Created", "Started", "Updated", "Completed", "Identity", "Lines",
                            "Queue", "Priority",
                            "Last message"]  # no "Poll after": the job has ended
    assert fields["Transaction"] == tid
    assert fields["Project"] == "progress"
    assert fields["Job name"] == "Flyer"
    assert fields["Status"] == "Completed"
    assert fields["Progress"] == "4/4 (100%)"
    assert fields["Identity"] == "anonymous"
    assert fields["Lines"] == "5"
    assert fields["Last message"] == "Progress: 4/4 (100%) all done"


async def test_get_build_string(server):
    lines = await exchange(server.port, xml_packet("GetBuildString"))
    assert len(lines) == 1 and lines[0].startswith("R0000000: jobmonitor 0.1.0 (Python 3.")


async def test_list_projects(server):
    names = sorted(jobs.app.handlers)
    assert await exchange(server.port, xml_packet("ListProjects")) == [
        f"R0000000- {len(names)} projects", *(f"R0000000- {name}" for name in names[:-1]),
        f"R0000000: {names[-1]}"]


# -- shutdown --------------------------------------------------------------------------


async def test_shutdown_cancels_running_jobs_after_grace(make_server):
    server = await make_server(shutdown_grace_s=0.2)
    session = await Session.open(server.port, submit("wait", Key="forever"))
    tid = tid_of(await session.line())
    await session.line()
    await session.line()
    server.close()
    assert await session.rest() == ["J0000190: Server stopping: running jobs have 0.2 s to finish",
                                    SHUTDOWN_CANCEL, "J0000023: Job cancelled by user.",
                                    ENDED.format(tid)]
    await session.close()
    await server.wait_closed()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=1).close()


async def test_shutdown_of_a_memory_store_ends_a_job_suspended_in_the_queue(make_server):
    server = await make_server(max_running=1, shutdown_grace_s=0.2)
    await exchange(server.port, submit("wait", monitor=False, Key="forever"))
    session = await Session.open(server.port, submit("echo"))
    tid = tid_of(await session.line())
    assert await exchange(server.port, xml_packet("SuspendJob", {"_sys_TransactionID": tid})) == [
        f"R0000000: {tid} suspended"]
    server.close()
    assert await session.rest() == [f"J0000100: Machine name: {MACHINE}",
                                    "J0000130: Job suspended.",
                                    "J0000190: Server stopping: running jobs have 0.2 s to finish",
                                    SHUTDOWN_CANCEL, "J0000023: Job cancelled by user.",
                                    ENDED.format(tid)]
    await session.close()


async def test_a_burst_far_larger_than_any_buffer_reaches_a_reading_monitor(server):
    # 150 000 lines said in one event-loop turn: the monitor lags all of them at
    # first, keeps reading, and must get every one (lagging is not stalling).
    lines = await exchange(server.port, submit("lines", Count="150000"))
    assert len(lines) == 150004
    assert lines[2] == "J0000100: line 1" and lines[-3] == "J0000100: line 150000"


async def test_a_job_cannot_send_the_servers_own_codes(server):
    reserved = [1, 20, 21, 22, 23, 130, 131, 132, 190, 5001, 5002, 5003]
    lines = await exchange(server.port, submit("codes", Codes=",".join(
        map(str, [150, *reserved, 5100]))))
    def refused(code: int) -> str:
        kind, span = ("error", "5000..9999999") if code >= 5000 else ("information", "1..4999")
        return f"J0000100: refused: {kind} codes are {span} but the server's own, got {code}"

    assert lines[2:-2] == ["J0000150: code 150", *map(refused, reserved), "J0005100: code 5100"]
    assert lines[-2:] == ["J0000020: Job completed successfully.",
                          f"J0000001: Transaction {lines[0][10:]} ended"]
