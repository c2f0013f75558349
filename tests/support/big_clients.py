"""Clients that send big packets, and the packets they send.

Run as a process of its own, as hostile clients would be (in the tests' process
their sending would slow the round trips being measured), on one thread::

    python -m tests.support.big_clients PORT looping COUNT   # COUNT clients, each sending a
        # 990 KB packet of 45 000 empty variables, reading the answer, again
    python -m tests.support.big_clients PORT holding COUNT SIZE  # COUNT connections, each
        # sending most of a SIZE-byte packet and holding it

It prints ``started`` once the load is under way, runs until its standard input
ends, then prints each answer it got, one a line.
"""

from __future__ import annotations

import asyncio
import sys

#: A GetBuildString packet's start and end.
OPEN = b'<job_command name="GetBuildString"><job_variables>'
CLOSE = b"</job_variables></job_command>"


def head(credentials: dict[str, str]) -> bytes:
    """The start of a GetBuildString packet, with credentials when there are users."""
    return OPEN + b"".join(b'<var name="%s">%s</var>' % (name.encode(), value.encode())
                           for name, value in credentials.items())


def big_value(size: int, credentials: dict[str, str]) -> bytes:
    """A packet's first ``size`` bytes: one variable's value, in CDATA (no fast path)."""
    start = head(credentials) + b'<var name="Filler"><![CDATA['
    return start + b"x" * (size - len(start) - 40)


def many_elements(size: int, credentials: dict[str, str]) -> bytes:
    """A complete packet of as many empty variables as fit in ``size`` bytes."""
    body = bytearray(head(credentials))
    number = 0
    while len(body) < size - 40:
        body += b'<var name="v%d"/>' % number
        number += 1
    return bytes(body + CLOSE)


async def loop(port: int, started: asyncio.Event, answers: list[str]) -> None:
    packet = many_elements(990_000, {})
    while True:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(packet)
            answers.append((await reader.read()).decode())
        finally:
            writer.close()
        started.set()


async def hold(port: int, number: int, size: int, started: asyncio.Event) -> None:
    """Every other packet is made of elements (refused once past the server's
    max_packet_variables), the others of one value."""
    packet = many_elements(size, {})[:-len(CLOSE)] if number % 2 else big_value(size, {})
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    started.set()
    writer.write(packet)
    await asyncio.Event().wait()  # until cancelled


async def main(port: int, kind: str, count: int, size: int = 0) -> None:
    started = asyncio.Event()
    answers: list[str] = []
    if kind == "looping":
        clients = [loop(port, started, answers) for _ in range(count)]
    else:
        clients = [hold(port, number, size, started) for number in range(count)]
    tasks = [asyncio.ensure_future(client) for client in clients]
    await started.wait()
    print("started", flush=True)
    loop_ = asyncio.get_running_loop()
    await loop_.run_in_executor(None, sys.stdin.read)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for answer in answers:
        print(answer.rstrip("\r\n").replace("\r\n", " | "))


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], *map(int, sys.argv[3:])))
