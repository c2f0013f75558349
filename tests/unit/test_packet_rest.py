"""Where a packet ends: ``PacketParser.rest`` and ``packet_end_hint``.

On a kept connection (``_sys_KeepOpen``) the next packet starts with the byte
after this one's root end tag, so the parser must hand back exactly the bytes
that follow the packet, however the input is cut into chunks, whichever path
(fast or full) reads it and whatever its encoding.  The invariant checked
here: the parser's ``rest`` followed by the chunks it was never fed is what
followed the packet.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobmonitor.errors import PacketError
from jobmonitor.wire.packet import Packet, PacketParser, build_packet, packet_end_hint
from jobmonitor.wire.packet_fast import MAX_BYTES

from .test_packet_fast import TYPICAL, packets

NEXT = b'<job_command name="GetBuildString"/>\r\n<job_command name="Next"'

#: Packets that end where they end, read by the fast path or only by the full one.
ENDINGS = {
    "fast path": TYPICAL,
    "comment (full parser)": TYPICAL.replace(b"<job_variables>", b"<!-- x --><job_variables>"),
    "end tag in CDATA": TYPICAL.replace(b">bench.tiny<", b"><![CDATA[</job_command>]]><"),
    "end tag in a comment": TYPICAL.replace(b"<job_variables>",
                                            b"<!-- </job_command> --><job_variables>"),
    "'>' in an attribute": b'<job_command name="a>b"/>',
    "self-closing root": b'<?xml version="1.0"?>\n<job_command name="Ping" />',
    "prefixed root": b'<p:job_command xmlns:p="urn:x" name="Ping"></p:job_command  \r\n>',
    "UTF-16 with a BOM": "\ufeff<job_command name=\"Ping\"><job_variables><var name=\"é\">"
                         "ü</var></job_variables></job_command>".encode("utf-16-le"),
    "Latin-1": '<?xml version="1.0" encoding="ISO-8859-1"?><job_command name="Ping">'
               '<job_variables><var name="a">é</var></job_variables></job_command>'
               .encode("latin-1"),
}


def feed(chunks: list[bytes], **options: int) -> tuple[Packet | None, bytes]:
    """Feed chunks until the packet is read; the packet and its rest followed by
    the chunks left unfed."""
    parser = PacketParser(**options)
    for index, chunk in enumerate(chunks):
        packet = parser.feed(chunk)
        if packet is not None:
            return packet, parser.rest + b"".join(chunks[index + 1:])
    return None, b""


def whole(packet: bytes) -> Packet:
    found, rest = feed([packet])
    assert found is not None and rest == b""
    return found


@pytest.mark.parametrize("packet", ENDINGS.values(), ids=ENDINGS.keys())
@pytest.mark.parametrize("after", [NEXT, b"\xff\xfe\x00junk", b"\r\n", b"x"],
                         ids=["next packet", "bad bytes", "line end", "one byte"])
def test_rest_is_what_follows_the_packet_however_it_is_cut(packet: bytes, after: bytes) -> None:
    expected = whole(packet)
    data = packet + after
    for cut in range(len(data) + 1):
        chunks = [chunk for chunk in (data[:cut], data[cut:]) if chunk]
        assert feed(chunks) == (expected, after), cut
    bytewise = [data[index:index + 1] for index in range(len(data))]
    assert feed(bytewise) == (expected, after)


def test_the_full_parser_gives_the_same_rest_as_the_fast_path() -> None:
    parser = PacketParser()
    parser._try_fast_path = False
    assert parser.feed(TYPICAL + NEXT) == whole(TYPICAL)
    assert parser.rest == NEXT


def test_bytes_past_the_packet_limit_are_rest_too() -> None:
    data = ENDINGS["comment (full parser)"]
    assert feed([data + NEXT], max_packet_bytes=len(data) + 3) == (whole(data), NEXT)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=packets(), cut=st.integers(0, 400))
def test_any_packet_read_whole_has_the_same_rest_when_cut(data: bytes, cut: int) -> None:
    try:
        expected, rest = feed([data])
    except PacketError:
        return
    if expected is None:
        return
    data += NEXT
    rest += NEXT
    assert feed([data[:cut], data[cut:]] if 0 < cut < len(data) else [data]) == (expected, rest)


def test_a_burst_of_pipelined_packets_is_read_in_windows() -> None:
    burst = [build_packet("GetJobStatus", {"_sys_TransactionID": f"T{n:07d}",
                                           "_sys_KeepOpen": "true"}) for n in range(500)]
    data, start, read = b"".join(burst), 0, []
    while data[start:].strip():  # (a connection skips the line ends between packets)
        end = packet_end_hint(data, start)
        assert end - start <= max(len(burst[0]) + 2, 512)  # one packet, not the burst
        packet, _ = feed([data[start:end]])
        assert packet is not None
        read.append(packet.variables["_sys_TransactionID"])
        parser = PacketParser()
        parser.feed(data[start:end])
        start = end - len(parser.rest)
    assert read == [f"T{n:07d}" for n in range(500)]


def test_the_hint_is_bounded_when_it_cannot_tell() -> None:
    data = "<job_command name='x'>".encode("utf-16-le") * 10_000
    assert packet_end_hint(data) == MAX_BYTES
    assert packet_end_hint(data, len(data) - 10) == len(data)
