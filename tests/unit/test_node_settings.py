"""A cluster node's name and address, as ``Config.node_settings`` gives them to the store."""

from __future__ import annotations

import socket

import pytest

from jobmonitor.config import Config

URL = "postgresql://jm@db.example/jobs"


def test_a_node_is_named_after_its_host_and_port_by_default():
    settings = Config(store=URL, host="10.0.0.11", port=7400).node_settings()
    assert (settings["node_name"], settings["address"]) == (
        f"{socket.gethostname()}:7400", "10.0.0.11:7400")
    named = Config(store=URL, port=7400, node_name="press-01").node_settings()
    assert named["node_name"] == "press-01"


@pytest.mark.parametrize("host", ["0.0.0.0", "::", ""])
def test_a_node_listening_on_every_address_shows_its_host_name(host):
    # (ListNodes shows the address: "0.0.0.0:7400" would say nothing of the node)
    settings = Config(store=URL, host=host, port=7400).node_settings()
    assert settings["address"] == f"{socket.gethostname()}:7400"


def test_an_ipv6_address_is_bracketed_and_other_stores_take_nothing():
    assert Config(store=URL, host="::1", port=7400).node_settings()["address"] == "[::1]:7400"
    assert Config(store="sqlite://", port=7400).node_settings() == {}
