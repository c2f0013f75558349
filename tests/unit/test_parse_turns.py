"""How connections share the loop for big packets: ParseTurns and PacketReader on
the real event loop, with a stand-in for the transport (whose reading a reader
pauses while too much waits).

A budget of one nanosecond lets each loop turn parse exactly one slice: what
each turn does can then be counted, whatever the machine's speed.  The
latencies this gives other clients are measured on the real server in
test_heavy_packets.py.
"""

from __future__ import annotations

import asyncio

import pytest

from jobmonitor.errors import PacketError
from jobmonitor.server.parse_turns import MAX_UNPARSED_BYTES, SLICE_BYTES, PacketReader, ParseTurns
from jobmonitor.wire.codes import Reply
from jobmonitor.wire.packet import Packet, PacketParser, build_packet

ONE_SLICE = 1e-9  # a budget that one slice always spends

#: 20 slices of the full parser (CDATA keeps it off the fast path).
BIG = (b'<job_command name="Big"><job_variables><var name="v"><![CDATA['
       + b"x" * (20 * SLICE_BYTES - 100) + b"]]></var></job_variables></job_command>")
SMALL = build_packet("Small", {"a": "1"})


class Transport:
    """What a reader uses of its transport: whether it is reading."""

    def __init__(self) -> None:
        self.reading = True

    def pause_reading(self) -> None:
        assert self.reading
        self.reading = False

    def resume_reading(self) -> None:
        assert not self.reading
        self.reading = True

    def is_closing(self) -> bool:
        return False


class Client:
    """A reader and what it answered."""

    def __init__(self, turns: ParseTurns, name: str, log: list[str]) -> None:
        self.transport = Transport()
        self.answers: list[Packet | PacketError] = []
        self.name, self.log = name, log
        parser = PacketParser()
        feed = parser.feed

        def logged_feed(data: bytes) -> Packet | None:
            log.append(name)
            return feed(data)

        parser.feed = logged_feed  # type: ignore[method-assign]
        self.reader = PacketReader(parser, turns, self.transport,  # type: ignore[arg-type]
                                   lambda packet, alone: self.answers.append(packet),
                                   self.answers.append)


async def turns_until(condition, limit: int = 200) -> int:
    """Let the loop turn until ``condition()``; how many turns that took."""
    for turn in range(limit):
        if condition():
            return turn
        await asyncio.sleep(0)
    raise AssertionError("not within the turns allowed")


async def test_a_big_packet_is_read_a_slice_per_turn():
    turns = ParseTurns(asyncio.get_running_loop(), budget_s=ONE_SLICE)
    log: list[str] = []
    big = Client(turns, "big", log)
    big.reader.feed(BIG)
    assert log == ["big"] and big.transport.reading  # one slice now, the rest later
    took = await turns_until(lambda: big.answers)
    assert took == len(BIG) // SLICE_BYTES  # one turn for each slice after the first
    assert [packet.command for packet in big.answers] == ["Big"]


async def test_reading_pauses_while_too_much_waits_to_be_parsed():
    turns = ParseTurns(asyncio.get_running_loop(), budget_s=ONE_SLICE)
    client = Client(turns, "huge", [])
    huge = BIG.replace(b"xxxx", b"x" * MAX_UNPARSED_BYTES, 1)
    half = len(huge) // 2
    client.reader.feed(huge[:half])
    assert client.transport.reading
    client.reader.feed(huge[half:])  # bytes on their way when it paused are kept
    assert not client.transport.reading
    await turns_until(lambda: client.transport.reading, limit=2000)
    await turns_until(lambda: client.answers, limit=2000)
    assert [packet.command for packet in client.answers] == ["Big"]


async def test_readers_take_turns_a_slice_each():
    turns = ParseTurns(asyncio.get_running_loop(), budget_s=ONE_SLICE)
    log: list[str] = []
    first, second = Client(turns, "first", log), Client(turns, "second", log)
    first.reader.feed(BIG)
    second.reader.feed(BIG)  # waits: the turn's budget is spent
    await turns_until(lambda: first.answers and second.answers)
    # (the first had one slice when it came, and was first in the queue)
    assert log[:7] == ["first", "first", "second", "first", "second", "first", "second"]


async def test_the_usual_packet_is_answered_at_once_while_big_ones_wait():
    turns = ParseTurns(asyncio.get_running_loop(), budget_s=ONE_SLICE)
    log: list[str] = []
    big, usual = Client(turns, "big", log), Client(turns, "usual", log)
    big.reader.feed(BIG)
    usual.reader.feed(SMALL)  # the fast path: no turn needed
    assert [packet.command for packet in usual.answers] == ["Small"]
    assert "usual" not in log and usual.transport.reading


async def test_a_small_packet_for_the_full_parser_waits_one_round():
    turns = ParseTurns(asyncio.get_running_loop(), budget_s=ONE_SLICE)
    log: list[str] = []
    big, small = Client(turns, "big", log), Client(turns, "small", log)
    big.reader.feed(BIG)
    small.reader.feed(SMALL.replace(b"?>", b"?><!-- -->", 1))
    # one turn for the big reader's slice, the next for the small packet
    assert await turns_until(lambda: small.answers) == 2
    assert log == ["big", "big", "small"]


async def test_the_end_of_input_is_read_after_the_bytes_before_it():
    turns = ParseTurns(asyncio.get_running_loop(), budget_s=ONE_SLICE)
    client = Client(turns, "cut", [])
    client.reader.feed(BIG[:-30])
    client.reader.feed_eof()
    assert not client.answers  # the bytes come first
    await turns_until(lambda: client.answers)
    [error] = client.answers
    assert isinstance(error, PacketError) and error.code is Reply.MALFORMED_PACKET
    assert "incomplete packet" in error.detail


async def test_a_closed_reader_leaves_the_queue():
    turns = ParseTurns(asyncio.get_running_loop(), budget_s=ONE_SLICE)
    log: list[str] = []
    gone, staying = Client(turns, "gone", log), Client(turns, "staying", log)
    gone.reader.feed(BIG)
    staying.reader.feed(BIG)
    gone.reader.close()  # its connection was lost, or timed out
    await turns_until(lambda: staying.answers)
    assert log.count("gone") == 1 and not gone.answers


@pytest.mark.parametrize("data, code", [
    (BIG, None),
    (BIG.replace(b"</job_command>", b"</wrong>"), Reply.MALFORMED_PACKET),
    (BIG + b"<more/>", None),
], ids=["read", "refused", "bytes after it"])
async def test_a_packet_is_answered_once(data: bytes, code: Reply | None):
    turns = ParseTurns(asyncio.get_running_loop())
    client = Client(turns, "one", [])
    for start in range(0, len(data), 50_000):  # in pieces, as a connection gets it
        client.reader.feed(data[start:start + 50_000])
    client.reader.feed_eof()
    await turns_until(lambda: client.answers)
    for _ in range(5):  # nothing more comes
        await asyncio.sleep(0)
    [answer] = client.answers
    assert (answer.code if isinstance(answer, PacketError) else None) is code
