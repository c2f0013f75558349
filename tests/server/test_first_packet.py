"""A connection's first packet, when it comes whole in one chunk, is read on
the fast path before any ``PacketReader`` is made (the usual connection); its
answer is the one the reader would give."""

from __future__ import annotations

from typing import Any

from jobmonitor.server import input as input_module
from jobmonitor.server.parse_turns import PacketReader

from ..support.helpers import Session, xml_packet


async def test_a_packet_in_the_first_chunk_is_answered_without_a_reader(server, monkeypatch):
    made: list[PacketReader] = []

    class CountedReader(PacketReader):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(input_module, "PacketReader", CountedReader)
    session = await Session.open(server.port, xml_packet("GetJobQueueLen"))
    assert await session.rest() == ["R0000000- Queued: 0", "R0000000: Running: 0"]
    await session.close()
    assert made == []
    # A first chunk the fast path cannot read (a comment inside the root) goes to
    # a reader, and gets the same answer.
    packet = xml_packet("GetJobQueueLen").replace(b"<job_variables", b"<!-- x --><job_variables")
    session = await Session.open(server.port, packet)
    assert await session.rest() == ["R0000000- Queued: 0", "R0000000: Running: 0"]
    await session.close()
    assert len(made) == 1
