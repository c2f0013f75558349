"""Property-based tests: hostile packets, first to the parser alone, then over sockets.

The parser tier feeds each packet whole, in random pieces and one byte at a
time: the outcome is always one ``Packet`` or one ``PacketError``, the same
however the bytes are split.  The socket tier sends thousands of hostile
packets to one server: each gets exactly one error line and then EOF, none
gets a secret back, and afterwards no connection, task or file descriptor is
left over and a normal client is served.
"""

from __future__ import annotations

import asyncio
import re
import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobmonitor import Controller
from jobmonitor.errors import PacketError
from jobmonitor.wire.codes import Reply
from jobmonitor.wire.packet import Packet, PacketParser, build_packet

from ..support import jobs
from ..support.helpers import split_lines, submit
from ..support.hostile import (
    MAX_PACKET_BYTES,
    NAMES,
    SECRET,
    VALUES,
    doctype_packets,
    hostile_packets,
)
from ..support.robust import open_fds

ERROR_REPLY = re.compile(r"R0005(?!999)\d{3}: \S")
SOCKET_TIMEOUT_S = 10.0
#: What the wire layer may refuse a packet with (commands answer the rest).
WIRE_ERRORS = {Reply.MALFORMED_PACKET, Reply.UNSUPPORTED_ENCODING, Reply.DOCTYPE_REFUSED,
               Reply.PACKET_TOO_LARGE}


@pytest.fixture(scope="module")
def secret_path(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("secret") / "secret.txt"
    path.write_text(SECRET + "\n")
    return str(path)


def parse(data: bytes, pieces: list[int] | None = None) -> Packet | PacketError:
    """Feed ``data`` (cut at ``pieces`` offsets), then EOF; the packet or the error."""
    parser = PacketParser(max_packet_bytes=MAX_PACKET_BYTES)
    cuts = [*sorted(set(pieces or [])), len(data)]
    start = 0
    try:
        for cut in cuts:
            packet = parser.feed(data[start:cut])
            start = cut
            if packet is not None:
                return packet
        return parser.feed_eof()
    except PacketError as exc:
        with pytest.raises(PacketError) as again:  # a failed parser stays failed
            parser.feed(b"<")
        assert again.value.code == exc.code
        return exc


def outcome(result: Packet | PacketError) -> Packet | str:
    """The packet, or "refused": which error is seen first may depend on how far
    lxml had parsed when a later problem arrived, so only refusal must agree."""
    return "refused" if isinstance(result, PacketError) else result


# -- the parser alone ---------------------------------------------------------------------


@settings(max_examples=5000, deadline=None)
@given(data=st.data())
def test_parser_gives_one_packet_or_one_packet_error(data, secret_path):
    packet = data.draw(hostile_packets(secret_path), label="packet")
    whole = parse(packet)
    assert isinstance(whole, (Packet, PacketError))
    if isinstance(whole, PacketError):
        assert whole.code in WIRE_ERRORS
        assert "\n" not in whole.reply_text and SECRET not in whole.reply_text
    cuts = data.draw(st.lists(st.integers(0, len(packet)), max_size=6), label="cuts")
    assert outcome(parse(packet, cuts)) == outcome(whole)
    if len(packet) <= 512:
        assert outcome(parse(packet, list(range(len(packet))))) == outcome(whole)


@settings(max_examples=500, deadline=None)
@given(variables=st.dictionaries(NAMES, VALUES, max_size=5),
       doc_variables=st.dictionaries(NAMES, VALUES, max_size=3),
       namespace=st.sampled_from([None, "http://www.pageflex.com/schemas"]),
       encoding=st.sampled_from(["utf-8", "utf-16", "utf-16-le", "utf-32"]),
       trailing=st.binary(max_size=20), data=st.data())
def test_valid_packets_read_back_however_they_arrive(variables, doc_variables, namespace,
                                                      encoding, trailing, data):
    built = build_packet("SubmitJob", variables, doc_variables, namespace=namespace)
    if encoding != "utf-8":  # drop the declaration: it names UTF-8
        built = built.decode().split("\n", 1)[1].encode(encoding)
    cuts = data.draw(st.lists(st.integers(0, len(built)), max_size=8))
    for result in (parse(built + trailing), parse(built, cuts), parse(built + trailing, cuts)):
        assert isinstance(result, Packet), result
        assert result.command == "SubmitJob"
        assert dict(result.variables) == variables
        assert dict(result.doc_variables) == doc_variables


def test_an_overlong_declaration_is_refused_whole_or_byte_by_byte():
    packet = b'<?xml version="1.0"' + b" " * 300 + b'?><job_command name="X"/>'
    for result in (parse(packet), parse(packet, list(range(len(packet))))):
        assert isinstance(result, PacketError)
        assert result.reply_text.endswith("the XML declaration is not closed (or too long)")


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_a_doctype_is_refused_however_the_bytes_arrive(data, secret_path):
    packet = data.draw(doctype_packets(secret_path))
    cuts = data.draw(st.lists(st.integers(0, len(packet)), max_size=6))
    for result in (parse(packet), parse(packet, cuts)):
        assert isinstance(result, PacketError) and result.code is Reply.DOCTYPE_REFUSED


# -- over sockets ---------------------------------------------------------------------------


def send_and_read(port: int, packet: bytes) -> bytes:
    """Send the packet, half-close, read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT_S) as sock:
        try:
            sock.sendall(packet)
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before the end: the reply is waiting to be read
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


async def _task_count() -> int:
    return len(asyncio.all_tasks())


async def _no_connections(controller: Controller) -> None:
    await asyncio.wait_for(controller.server.wait_connections_closed(), SOCKET_TIMEOUT_S)


@pytest.mark.timeout(180)
def test_thousands_of_hostile_packets_each_get_one_error_line(secret_path):
    controller = Controller(jobs.app, host="127.0.0.1", port=0, linger_s=2.0,
                            max_packet_bytes=MAX_PACKET_BYTES, machine_name="fuzz")
    with controller:
        before = (open_fds(), controller.run_coroutine(_task_count()))
        sent = []

        @settings(max_examples=2000, deadline=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        @given(packet=hostile_packets(secret_path))
        def one_packet(packet: bytes) -> None:
            lines = split_lines(send_and_read(controller.port, packet))
            sent.append(packet)
            assert len(lines) == 1, lines
            assert ERROR_REPLY.match(lines[0]), lines[0]
            assert SECRET not in lines[0] and "Traceback" not in lines[0]

        one_packet()
        assert len(sent) >= 2000
        normal = split_lines(send_and_read(controller.port, submit("echo")))
        assert normal[-2] == "J0000020: Job completed successfully."
        controller.run_coroutine(_no_connections(controller))
        assert controller.server.connection_count == 0
        assert (open_fds(), controller.run_coroutine(_task_count())) == before
