"""The client keeps its connection between calls, and reconnects transparently.

Against the real server: successive calls, a monitored submit and its
stream, a SyncClient and TLS all share one connection; one the server closed
meanwhile is replaced before anything is sent on it.  Against scripted fake
servers: a server that closes after every reply (one that does not keep
connections), and kept connections that break after a packet went out: the
command goes again only when that is safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Callable

import pytest

from jobmonitor import Controller, Outcome
from jobmonitor.client import Client, ReplyError, SyncClient
from jobmonitor.wire.packet import Packet, PacketParser

from ..conftest import MACHINE, release
from ..support import jobs
from .test_security import certificate  # noqa: F401  (a fixture)

STATUS_JSON = (b'R0000000: {"Id":"T0000001","Type":"echo","JobName":"","Status":2,'
               b'"Identity":"anonymous","Lines":4}\r\n')


def local_addresses(client: Client) -> list[tuple[str, int]]:
    """The client's side of its idle kept connections."""
    return [writer.get_extra_info("sockname") for _, writer in client._connections.idle._idle]


def peers(server) -> set[str]:
    """The client addresses of the server's open connections."""
    return {connection.peer for connection in server._connections}


async def test_successive_calls_share_one_connection(server):
    async with Client("127.0.0.1", server.port) as client:
        await client.build_string()
        first = peers(server)
        assert len(first) == 1
        done = await client.submit("echo")
        assert (await done.result()).outcome is Outcome.SUCCESS  # the stream, to its end
        unmonitored = await client.submit("echo", monitor=False)
        await client.status(unmonitored.transaction_id)
        await client.queue_length()
        with pytest.raises(ReplyError):  # an error reply keeps the connection too
            await client.status("T0000099")
        assert (await client.info(done.transaction_id)).transaction_id == done.transaction_id
        assert peers(server) == first
    await asyncio.wait_for(server.wait_connections_closed(), 5)  # aclose closed it


async def test_a_monitor_watched_to_its_end_gives_its_connection_back(server):
    async with Client("127.0.0.1", server.port) as client:
        tx = await client.submit("wait", {"Key": "w"})
        await client.queue_length()  # meanwhile, on a second connection
        assert len(peers(server)) == 2
        await release("w")
        assert (await tx.result()).outcome is Outcome.SUCCESS
        watched = await client.watch(tx.transaction_id, from_line=2)
        assert (await watched.result()).outcome is Outcome.SUCCESS
        for _ in range(3):
            await client.status(tx.transaction_id)
        assert len(peers(server)) == 2  # both kept, neither replaced


async def test_calls_at_the_same_time_use_connections_of_their_own(server):
    async with Client("127.0.0.1", server.port) as client:
        statuses = await asyncio.gather(*(client.queue_length() for _ in range(10)))
        assert len(statuses) == 10
        assert len(client._connections.idle) == 4  # the idle ones kept (the rest closed)


async def test_a_connection_the_server_closed_is_replaced_before_sending(make_server):
    server = await make_server(idle_timeout_s=0.3)
    async with Client("127.0.0.1", server.port) as client:
        tx = await client.submit("wait", {"Key": "idle"}, monitor=False)
        first = peers(server)
        await asyncio.wait_for(server.wait_connections_closed(), 5)  # timed out, idle
        # a cancel is not safe to send twice: it goes out on a new connection
        assert (await client.cancel(tx.transaction_id)).transaction_id == tx.transaction_id
        assert peers(server) and peers(server) != first
        assert (await (await client.watch(tx.transaction_id)).result()).outcome is \
            Outcome.CANCELLED


def test_a_sync_client_keeps_its_connection_too():
    with (Controller(jobs.app, port=0, machine_name=MACHINE, linger_s=1.0) as controller,
          SyncClient("127.0.0.1", controller.port) as client):
        for _ in range(3):
            client.queue_length()
        assert client.submit("echo").result().outcome is Outcome.SUCCESS
        client.build_string()
        assert controller.server.connection_count == 1


async def test_tls_connections_are_kept(make_server, certificate):
    server = await make_server(tls_cert=str(certificate / "cert.pem"),
                               tls_key=str(certificate / "key.pem"))
    context = ssl.create_default_context(cafile=str(certificate / "ca.pem"))
    async with Client("127.0.0.1", server.port, tls=context) as client:
        await client.queue_length()
        first = local_addresses(client)
        await client.queue_length()
        assert (await (await client.submit("partial")).result()).outcome is Outcome.PARTIAL
        await client.build_string()
        assert local_addresses(client) == first and len(first) == 1


async def test_keep_open_false_sends_one_packet_per_connection(server):
    async with Client("127.0.0.1", server.port, keep_open=False) as client:
        await client.queue_length()
        await asyncio.wait_for(server.wait_connections_closed(), 5)
        assert (await (await client.submit("echo")).result()).outcome is Outcome.SUCCESS
        await asyncio.wait_for(server.wait_connections_closed(), 5)


# -- scripted servers ------------------------------------------------------------------------

#: What a scripted server does with a packet: the bytes to answer and whether to keep
#: the connection; None: close without answering.
Script = Callable[[int, int, Packet], tuple[bytes, bool] | None]


@contextlib.asynccontextmanager
async def scripted_server(script: Script) -> AsyncIterator[tuple[int, list[tuple[int, Packet]]]]:
    """A fake server that reads packets one after another on each connection and
    answers each as ``script(connection number, packet number, packet)`` says.
    Yields the port and every packet received, with its connection's number."""
    received: list[tuple[int, Packet]] = []
    connections = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        number, count, data = connections, 0, b""
        try:
            while True:
                parser = PacketParser()
                packet = parser.feed(data) if data else None
                while packet is None:
                    chunk = await reader.read(4096)
                    if not chunk:
                        return
                    packet = parser.feed(chunk)
                data = parser.rest.lstrip()
                count += 1
                received.append((number, packet))
                action = script(number, count, packet)
                if action is None:
                    return
                writer.write(action[0])
                await writer.drain()
                if not action[1]:
                    return
        finally:
            writer.close()

    listener = await asyncio.start_server(serve, "127.0.0.1", 0)
    async with listener:
        yield listener.sockets[0].getsockname()[1], received


def build_string(connection: int, count: int, packet: Packet) -> tuple[bytes, bool]:
    if packet.command == "SubmitJob":
        return b"R0000000: T%07d\r\n" % count, True
    return b"R0000000: fake %d.%d\r\n" % (connection, count), True


async def test_a_server_that_closes_after_every_reply_gets_a_connection_per_call():
    def old_server(connection: int, count: int, packet: Packet) -> tuple[bytes, bool]:
        if packet.command == "CancelJob":
            return b"R0000000: T0000001\r\n", False
        return b"R0000000: fake %d\r\n" % connection, False  # (it ignores _sys_KeepOpen)

    async with (scripted_server(old_server) as (port, received),
                Client("127.0.0.1", port) as client):
        assert await client.build_string() == "fake 1"
        assert (await client.cancel("T0000001")).transaction_id == "T0000001"
        assert await client.build_string() == "fake 3"
    assert [(n, p.command) for n, p in received] == [
        (1, "GetBuildString"), (2, "CancelJob"), (3, "GetBuildString")]
    assert all(p.variables["_sys_KeepOpen"] == "true" for _, p in received)


def breaks_on_third_packet(connection: int, count: int, packet: Packet
                           ) -> tuple[bytes, bool] | None:
    """Keeps the first connection for two packets, then closes it unanswered."""
    if connection == 1 and count == 3:
        return None
    if packet.command == "GetJobStatus":
        return STATUS_JSON, True
    return b"R0000000: T0000001\r\n", True


@pytest.mark.parametrize("call, resent", [
    (lambda client: client.status("T0000001"), True),
    (lambda client: client.submit("echo", job_token="nightly", monitor=False), True),
    (lambda client: client.cancel("T0000001"), False),
    (lambda client: client.submit("echo", monitor=False), False),
], ids=["status", "submit with a job token", "cancel", "submit"])
async def test_a_kept_connection_that_breaks_after_sending_resends_only_what_is_safe(
        call, resent):
    async with (scripted_server(breaks_on_third_packet) as (port, received),
                Client("127.0.0.1", port) as client):
        await client.build_string()
        await client.build_string()  # the server keeps connections
        if resent:
            await call(client)
        else:
            with pytest.raises(ConnectionError):
                await call(client)
    commands = [(n, p.command) for n, p in received]
    assert commands[:2] == [(1, "GetBuildString")] * 2 and commands[2][0] == 1
    assert len(commands) == (4 if resent else 3)
    if resent:
        assert commands[3] == (2, commands[2][1])


async def test_a_command_the_server_timed_out_before_reading_goes_again():
    def idle(connection: int, count: int, packet: Packet) -> tuple[bytes, bool] | None:
        if connection == 1 and count == 3:  # as if its idle timeout came first
            return b"R0005014: Connection idle too long: nothing received within 10 s\r\n", False
        return b"R0000000: T0000001\r\n", True

    async with scripted_server(idle) as (port, received), Client("127.0.0.1", port) as client:
        await client.build_string()
        await client.build_string()
        assert (await client.cancel("T0000001")).transaction_id == "T0000001"
    assert [(n, p.command) for n, p in received] == [
        (1, "GetBuildString"), (1, "GetBuildString"), (1, "CancelJob"), (2, "CancelJob")]


async def test_a_first_reuse_for_what_must_not_go_twice_checks_the_connection_first():
    # until the server has shown it keeps connections, a harmless command goes first
    async with (scripted_server(build_string) as (port, received),
                Client("127.0.0.1", port) as client):
        await client.submit("echo", monitor=False)
        await client.submit("echo", monitor=False)
        await client.submit("echo", monitor=False)
    assert [(n, p.command) for n, p in received] == [
        (1, "SubmitJob"), (1, "GetBuildString"), (1, "SubmitJob"), (1, "SubmitJob")]
