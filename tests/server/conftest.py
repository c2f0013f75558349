"""Fixtures of the tests that run a server on a free port."""

from __future__ import annotations

import pytest

from jobmonitor.http import HttpServer


@pytest.fixture
async def web(make_server):
    """Start a server with its HTTP listener on a free port: ``await web(**settings)``."""
    listeners = []

    async def start(**settings):
        server = await make_server(**settings)
        http = HttpServer(server, port=0)
        await http.start()
        listeners.append(http)
        return server, http

    yield start
    for http in listeners:
        http.close()
        await http.wait_closed()
