"""Kept connections (``_sys_KeepOpen``) over real sockets.

A packet with ``_sys_KeepOpen`` true keeps its connection open for the next
packet once its answer is complete (its reply, or a monitored stream's ended
line).  Packets may be pipelined; each is answered in order, and every limit
holds per packet.  A client that never sends the variable sees what it always
saw: the rest of the server tests prove that.
"""

from __future__ import annotations

import asyncio

from ..conftest import release
from ..support.helpers import TIMEOUT_S, Session, exchange, split_lines, submit, xml_packet

KEEP = {"_sys_KeepOpen": "true"}
ENDED = "J0000001: Transaction {} ended"


def kept(command: str, **variables: str) -> bytes:
    return xml_packet(command, {**variables, **KEEP})


def kept_submit(project: str, monitor: bool = True, **variables: str) -> bytes:
    return submit(project, monitor=monitor, **variables, **KEEP)


async def reply(session: Session) -> str:
    line = await session.line()
    assert line.startswith("R"), line
    return line


async def lines_until_ended(session: Session, transaction_id: str) -> list[str]:
    lines = []
    while not lines or lines[-1] != ENDED.format(transaction_id):
        lines.append(await session.line())
        assert len(lines) < 100, lines
    return lines


async def closed(session: Session) -> bytes:
    """What comes before the server closes (it must close within TIMEOUT_S)."""
    return await asyncio.wait_for(session.reader.read(), TIMEOUT_S)


async def test_a_kept_connection_answers_one_command_after_another(server):
    session = await Session.open(server.port, kept_submit("echo", monitor=False))
    assert await reply(session) == "R0000000: T0000001"
    for command in ("GetJobQueueLen", "GetBuildString"):
        session.writer.write(kept(command))
        assert (await reply(session)).startswith(("R0000000- Queued", "R0000000: jobmonitor"))
        if command == "GetJobQueueLen":
            assert (await session.line()).startswith("R0000000: Running")
    session.writer.write(xml_packet("GetJobStatus", {"_sys_TransactionID": "T0000001"}))
    assert (await reply(session)).startswith("R0000000")
    # the last packet did not keep the connection: the server closes after its reply
    assert split_lines(await closed(session))[-1].startswith("R0000000")
    await session.close()


async def test_pipelined_packets_are_answered_in_order(make_server, tmp_path):
    # with a durable store a submit waits for its commit while the next packets wait
    server = await make_server(store=f"sqlite:///{tmp_path / 'kept.db'}")
    packets = []
    for n in range(1, 31):
        packets.append(kept_submit("echo", monitor=False))
        packets.append(kept("GetJobStatus", _sys_TransactionID=f"T{n:07d}", _sys_Format="json"))
    packets.append(xml_packet("GetBuildString"))
    session = await Session.open(server.port, b"".join(packets))
    lines = split_lines(await closed(session))
    await session.close()
    assert len(lines) == 61
    for n in range(1, 31):
        assert lines[2 * n - 2] == f"R0000000: T{n:07d}"
        assert lines[2 * n - 1].startswith(f'R0000000: {{"Id":"T{n:07d}"')
    assert lines[-1].startswith("R0000000: jobmonitor")


async def test_pipelined_packets_that_come_whole_need_no_reader(server, monkeypatch):
    # A reader (and its parser) is made only for a packet the fast path cannot read
    # whole: a burst of simple pipelined packets makes none, and one that is not
    # simple (a comment) still gets one, and its answer in its turn.
    import jobmonitor.server.input as input_module

    made = []

    class CountedReader(input_module.PacketReader):
        def __init__(self, *args, **kwargs) -> None:
            made.append(self)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(input_module, "PacketReader", CountedReader)
    commented = kept("GetBuildString").replace(b"<job_command", b"<!-- c --><job_command", 1)
    session = await Session.open(server.port, b"".join(
        [kept("GetBuildString")] * 5 + [commented, xml_packet("GetBuildString")]))
    lines = split_lines(await closed(session))
    await session.close()
    assert len(lines) == 7 and all(line.startswith("R0000000: jobmonitor") for line in lines)
    assert len(made) == 1


async def test_a_packet_too_big_to_try_first_still_gets_the_fast_path(server, monkeypatch):
    # A packet of more than 4 KiB that comes whole is read by the reader's parser,
    # which tries the fast path on it first: lxml's parser (four times slower on
    # a 10 KB packet) is for what the fast path cannot read.
    import jobmonitor.wire.packet as packet_module

    full_parses = []
    begin = packet_module.PacketParser._begin

    def counted(self, *args, **kwargs):
        full_parses.append(self)
        return begin(self, *args, **kwargs)

    monkeypatch.setattr(packet_module.PacketParser, "_begin", counted)
    padded = xml_packet("GetBuildString", {"Padding": "x" * 10_000})
    assert len(padded) > 10_000
    lines = await exchange(server.port, padded)
    assert len(lines) == 1 and lines[0].startswith("R0000000: jobmonitor")
    assert full_parses == []


async def test_a_monitored_stream_then_another_command(server):
    session = await Session.open(server.port, kept_submit("echo"))
    assert await reply(session) == "R0000000: T0000001"
    lines = await lines_until_ended(session, "T0000001")
    assert "J0000020: Job completed successfully." in lines
    last = str(len(lines))  # the ended line, replayed from the store
    session.writer.write(kept("MonitorJob", _sys_TransactionID="T0000001", _sys_FromLine=last))
    assert await reply(session) == "R0000000: T0000001"
    assert await session.line() == ENDED.format("T0000001")
    session.writer.write(xml_packet("GetJobStatus", {"_sys_TransactionID": "T0000001"}))
    assert split_lines(await closed(session))[0].startswith("R0000000")
    assert server.engine.jobs.monitor_count("T0000001") == 0
    await session.close()


async def test_packets_sent_while_a_job_streams_wait_their_turn(server):
    # the next packets arrive while the stream is still going
    session = await Session.open(server.port, kept_submit("wait", Key="k"))
    assert await reply(session) == "R0000000: T0000001"
    session.writer.write(kept("GetJobQueueLen") + xml_packet("GetBuildString"))
    await release("k")
    lines = split_lines(await closed(session))
    await session.close()
    ended = lines.index(ENDED.format("T0000001"))
    assert lines[ended + 1:] == ["R0000000- Queued: 0", "R0000000: Running: 0",
                                 lines[-1]] and lines[-1].startswith("R0000000: jobmonitor")


async def test_the_idle_timeout_holds_between_packets(make_server):
    server = await make_server(idle_timeout_s=0.5)
    loop = asyncio.get_running_loop()
    session = await Session.open(server.port, kept("GetBuildString"))
    await reply(session)
    answered = loop.time()
    assert split_lines(await closed(session)) == [
        "R0005014: Connection idle too long: nothing received within 0.5 s"]
    assert loop.time() - answered >= 0.4
    await session.close()


async def test_each_packet_gets_its_own_idle_and_packet_time(make_server):
    server = await make_server(idle_timeout_s=0.5, packet_timeout_s=0.5)
    session = await Session.open(server.port, kept("GetBuildString"))
    await reply(session)
    for _ in range(3):  # 0.9 s in all: more than either limit, but never for one packet
        await asyncio.sleep(0.3)
        session.writer.write(kept("GetBuildString"))
        await reply(session)
    await session.close()


async def test_the_packet_size_limit_holds_per_packet(make_server):
    server = await make_server(max_packet_bytes=600)
    packet = kept("GetJobStatus", _sys_TransactionID="T0000001", Filler="x" * 300)
    assert 400 < len(packet) <= 600
    session = await Session.open(server.port, packet * 5)  # 5 packets, 2 KB in all
    for _ in range(5):
        assert (await reply(session)).startswith("R0005009: Unknown transaction")
    session.writer.write(kept("GetJobStatus", Filler="x" * 700))
    assert split_lines(await closed(session)) == [
        "R0005003: Command packet too large: no complete packet within 600 bytes"]
    await session.close()


async def test_pipelined_bytes_past_the_packet_limit_wait_for_their_turn(make_server):
    # the first packet keeps the server busy while four times the limit arrives
    server = await make_server(max_packet_bytes=2000)
    burst = kept("GetBuildString") * 80
    assert len(burst) > 4 * 2000
    session = await Session.open(server.port, kept_submit("wait", Key="k") + burst)
    assert await reply(session) == "R0000000: T0000001"
    await release("k")
    await lines_until_ended(session, "T0000001")
    for _ in range(80):
        assert (await reply(session)).startswith("R0000000: jobmonitor")
    await session.close()


async def test_a_big_packet_parsed_in_turns_then_the_next_ones(server):
    # past the fast path, the full parser reads the first packet a slice per loop
    # turn; the bytes after it, parsed or held, start the next packet
    big = kept_submit("echo", monitor=False, **{f"V{n}": "x" * 100 for n in range(3000)})
    assert len(big) > 300_000
    session = await Session.open(server.port, big + kept("GetBuildString")
                                 + xml_packet("GetJobStatus", {"_sys_TransactionID": "T0000001"}))
    lines = split_lines(await closed(session))
    await session.close()
    assert lines[0] == "R0000000: T0000001"
    assert lines[1].startswith("R0000000: jobmonitor")
    assert lines[2].startswith("R0000000") and len(lines) >= 3


async def test_a_malformed_packet_on_a_kept_connection_gets_one_reply_and_ends(server):
    session = await Session.open(server.port, kept("GetBuildString"))
    await reply(session)
    # after a malformed packet there is no telling where the next one starts
    session.writer.write(b"<job_command name='x'><job_variables><oops/></job_variables>"
                         b"</job_command>" + kept("GetBuildString"))
    lines = split_lines(await closed(session))
    assert len(lines) == 1 and lines[0].startswith("R0005000: Malformed command packet")
    await session.close()


async def test_a_bad_keep_open_value_is_refused_and_ends_the_connection(server):
    session = await Session.open(server.port, xml_packet("GetBuildString",
                                                         {"_sys_KeepOpen": "maybe"}))
    assert split_lines(await closed(session)) == [
        "R0005007: Invalid variable value: _sys_KeepOpen must be true or false, got 'maybe'"]
    await session.close()


async def test_an_error_reply_keeps_the_connection(server):
    session = await Session.open(server.port, kept("NoSuchCommand"))
    assert (await reply(session)).startswith("R0005005: Unknown command")
    session.writer.write(kept("GetJobStatus", _sys_TransactionID="T0000099"))
    assert (await reply(session)).startswith("R0005009: Unknown transaction")
    session.writer.write(kept("GetBuildString"))
    assert (await reply(session)).startswith("R0000000: jobmonitor")
    await session.close()


async def test_line_ends_between_packets_are_skipped(make_server):
    server = await make_server(idle_timeout_s=0.5)
    session = await Session.open(server.port, kept("GetBuildString") + b"\r\n\r\n")
    await reply(session)
    session.writer.write(b"\r\n \t")
    # only whitespace since the last packet: that is idle, not an unfinished packet
    assert (await closed(session)).startswith(b"R0005014")
    await session.close()


async def test_a_client_that_shuts_its_side_after_kept_packets_is_answered_then_closed(server):
    session = await Session.open(server.port, kept("GetBuildString") * 3)
    session.writer.write_eof()
    lines = split_lines(await closed(session))
    assert len(lines) == 3 and all(line.startswith("R0000000: jobmonitor") for line in lines)
    await session.close()


async def test_stopping_closes_a_kept_connection_between_packets(make_server):
    server = await make_server(linger_s=30.0)
    session = await Session.open(server.port, kept("GetBuildString"))
    await reply(session)
    session.writer.write(kept("GetBuildString"))
    await reply(session)
    server.close()
    # at once, not after linger_s: nothing is under way on it
    assert await asyncio.wait_for(session.reader.read(), 5.0) == b""
    await server.wait_closed()
    await session.close()


async def test_a_monitor_from_past_the_end_closes_even_a_kept_connection(server):
    # no ended line comes: the close is all that tells the client its stream is over
    session = await Session.open(server.port, kept_submit("echo"))
    lines = await lines_until_ended(session, "T0000001")
    past_the_end = str(len(lines) + 1)
    session.writer.write(kept("MonitorJob", _sys_TransactionID="T0000001",
                              _sys_FromLine=past_the_end))
    assert split_lines(await closed(session)) == ["R0000000: T0000001"]
    await session.close()
