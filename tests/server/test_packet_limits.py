"""What a packet may cost the parser, without sockets: how many variables it may
have, and that nothing of the full parser (lxml's parser and document) outlives
a packet read, refused or abandoned, whatever the garbage collector does.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from jobmonitor.errors import PacketError
from jobmonitor.wire.codes import Reply
from jobmonitor.wire.packet import Packet, PacketParser, build_packet


def variables(count: int) -> dict[str, str]:
    return {f"v{number}": "x" for number in range(count)}


def with_comment(data: bytes) -> bytes:
    """The packet with a comment after its declaration: not for the fast path."""
    return data.replace(b"?>", b"?><!-- -->", 1)


def bytewise(parser: PacketParser, data: bytes) -> Packet | None:
    for index in range(len(data)):
        packet = parser.feed(data[index:index + 1])
        if packet is not None:
            return packet
    return None


# -- the number of variables -----------------------------------------------------------------


@pytest.mark.parametrize("full", [False, True], ids=["fast path", "full parser"])
@pytest.mark.parametrize("whole", [True, False], ids=["whole", "bytewise"])
def test_a_packet_may_have_max_packet_variables_and_no_more(full: bool, whole: bool) -> None:
    def feed(data: bytes) -> Packet | None:
        data = with_comment(data) if full else data
        parser = PacketParser(max_packet_variables=8)
        return parser.feed(data) if whole else bytewise(parser, data)

    # both sections count
    packet = feed(build_packet("S", variables(6), {"d1": "", "d2": ""}))
    assert packet is not None and len(packet.variables) + len(packet.doc_variables) == 8
    with pytest.raises(PacketError) as caught:
        feed(build_packet("S", variables(6), {"d1": "", "d2": "", "d3": ""}))
    assert (caught.value.code, caught.value.detail) == (
        Reply.PACKET_TOO_LARGE, "more than 8 variables")


def test_the_refusal_comes_at_the_variable_past_the_limit() -> None:
    """The rest of a packet of many variables is never parsed."""
    head = b'<job_command name="S"><job_variables>' + b"".join(
        b'<var name="v%d"/>' % number for number in range(10))
    parser = PacketParser(max_packet_variables=10)
    assert parser.feed(head) is None
    with pytest.raises(PacketError) as caught:
        parser.feed(b'<var name="one too many"/>')
    assert caught.value.code is Reply.PACKET_TOO_LARGE


def test_the_default_limit_is_ten_thousand() -> None:
    assert PacketParser().feed(build_packet("S", variables(10_000))) is not None
    with pytest.raises(PacketError):
        PacketParser().feed(build_packet("S", variables(10_001)))


# -- nothing outlives the packet ----------------------------------------------------------------


@pytest.fixture
def no_collector() -> Iterator[None]:
    """The collector off, as good as `jobmonitor serve` makes it for young objects."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def full_parser_packet(values: int = 50) -> bytes:
    return with_comment(build_packet("S", variables(values), {"d": "y"}, namespace=None))


def read(data: bytes) -> None:
    assert PacketParser().feed(data) is not None


# (No pytest.raises below: what it keeps of the error, frames and all, would be
# a cycle of the test's own.)
def refused(data: bytes, max_packet_bytes: int = 1_048_576) -> None:
    parser = PacketParser(max_packet_bytes=max_packet_bytes)
    try:
        for start in range(0, len(data), 100):
            parser.feed(data[start:start + 100])
        parser.feed_eof()
    except PacketError:
        return
    raise AssertionError("not refused")


def too_large(data: bytes) -> None:
    refused(data, max_packet_bytes=len(data) // 2)


def abandoned(data: bytes) -> None:
    parser = PacketParser()
    assert parser.feed(data[:len(data) // 2]) is None
    parser.close()  # the connection was lost, or its time is up
    try:
        parser.feed(data[len(data) // 2:])
    except ValueError:
        return
    raise AssertionError("a closed parser went on")


@pytest.mark.parametrize("outcome, data", [
    (read, full_parser_packet()),
    (read, full_parser_packet().replace(b"</job_command>", b"</job_command>trailing junk")),
    (refused, full_parser_packet().replace(b"</job_command>", b"</wrong>")),  # by lxml
    (refused, full_parser_packet().replace(b'name="v9"', b'name="v1"')),  # by the shape
    (refused, full_parser_packet(values=20_000)),  # too many variables
    (too_large, full_parser_packet()),
    (refused, full_parser_packet()[:-20]),  # incomplete at the end of input
    (abandoned, full_parser_packet()),
], ids=["read", "read, junk after it", "not well-formed", "bad shape", "too many variables",
        "too large", "incomplete", "abandoned"])
def test_the_full_parser_leaves_nothing_for_the_collector(no_collector, outcome, data) -> None:
    outcome(data)
    assert gc.collect() == 0, "objects in reference cycles were left behind"

