"""ListNodes on a single server: it lists itself (a cluster of one)."""

from __future__ import annotations

import asyncio
import json

from jobmonitor.client import Client, NodeInfo, SyncClient
from jobmonitor.users import User, hash_password

from ..conftest import MACHINE
from ..support.helpers import exchange, xml_packet


async def test_a_single_server_lists_itself_in_text_json_and_xml(make_server):
    server = await make_server()
    address = f"127.0.0.1:{server.port}"
    text = await exchange(server.port, xml_packet("ListNodes"))
    assert text[0] == "R0000000- 1 nodes"
    name, listed, started, age, running = text[1].removeprefix("R0000000: ").split("\t")
    assert (name, listed, age, running) == (MACHINE, address, "0.0", "0")
    assert started.endswith("Z")
    (reply,) = await exchange(server.port, xml_packet("ListNodes", {"_sys_Format": "json"}))
    assert json.loads(reply.removeprefix("R0000000: ")) == [
        {"Name": MACHINE, "Address": address, "Started": started, "HeartbeatAge": 0.0,
         "Running": 0}]
    xml = await exchange(server.port, xml_packet("ListNodes", {"_sys_Format": "xml"}))
    assert xml[:3] == ["R0000000- <Nodes>", "R0000000-   <Node>",
                       f"R0000000-     <Name>{MACHINE}</Name>"]
    nodes = await Client("127.0.0.1", server.port).list_nodes()
    assert [(n.name, n.address, n.started, n.running) for n in nodes] == [
        (MACHINE, address, started, 0)]

    def blocking() -> list[NodeInfo]:
        with SyncClient("127.0.0.1", server.port) as client:
            return client.list_nodes()

    assert await asyncio.get_running_loop().run_in_executor(None, blocking) == nodes


async def test_list_nodes_is_for_administrators_on_a_server_with_users(make_server):
    users = (User("ann", hash_password("ann-pw")),
             User("root", hash_password("root-pw"), role="admin"))
    server = await make_server(users=users)

    def packet(user: str, password: str) -> bytes:
        return xml_packet("ListNodes", {"_sys_User": user, "_sys_Password": password})

    assert await exchange(server.port, packet("ann", "ann-pw")) == [
        "R0005013: Permission denied: ListNodes is for administrators"]
    assert (await exchange(server.port, packet("root", "root-pw")))[0] == "R0000000- 1 nodes"
