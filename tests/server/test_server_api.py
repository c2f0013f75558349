"""``Server`` used as an ``asyncio.Server`` is, and ``Controller`` start-up that gives up."""

from __future__ import annotations

import asyncio
import threading

import pytest

from jobmonitor import Config, Controller, Server
from jobmonitor.errors import ConfigError

from ..conftest import MACHINE, release
from ..support import jobs
from ..support.helpers import Session, exchange, submit

COMPLETED = "J0000020: Job completed successfully."


def new_server(**settings: object) -> Server:
    config = Config(host="127.0.0.1", port=0, machine_name=MACHINE, linger_s=1.0,
                    shutdown_grace_s=1.0).replace(**settings)
    return jobs.app.make_server(config)


async def refused(port: int) -> bool:
    """Whether nothing listens on ``port`` any more."""
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return True
    writer.close()
    await writer.wait_closed()
    return False


async def test_async_with_starts_listening_and_closes_at_the_end():
    server = new_server()
    assert not server.is_serving()
    async with server:
        assert server.is_serving()
        assert (await exchange(server.port, submit("echo")))[-2] == COMPLETED
    assert not server.is_serving()
    assert await refused(server.port)


async def test_is_serving_from_start_until_close():
    server = new_server()
    await server.start_serving()
    try:
        assert server.is_serving()
        port = server.port
        await server.start_serving()  # idempotent, as asyncio.Server's
        assert server.is_serving() and server.port == port
    finally:
        server.close()
        server.close()  # idempotent too
    assert not server.is_serving()
    await server.wait_closed()
    assert await refused(port)
    with pytest.raises(RuntimeError, match="closed"):
        await server.start()


async def test_cancelling_serve_forever_closes_the_server():
    server = new_server()
    await server.start()
    forever = asyncio.ensure_future(server.serve_forever())
    try:
        # A round trip: the task runs, and the server answers meanwhile.
        assert (await exchange(server.port, submit("echo")))[-2] == COMPLETED
        forever.cancel()
        with pytest.raises(asyncio.CancelledError):
            await forever
        assert not server.is_serving()
        assert await refused(server.port)
    finally:
        server.close()
        await server.wait_closed()


async def test_serve_forever_starts_the_server_and_returns_after_close():
    server = new_server()
    forever = asyncio.ensure_future(server.serve_forever())
    await server.start_serving()  # waits for the start serve_forever began
    assert (await exchange(server.port, submit("echo")))[-2] == COMPLETED
    server.close()
    await asyncio.wait_for(forever, 10)
    assert await refused(server.port)


@pytest.mark.parametrize("problem", ["tls file", "store url", "store path"])
async def test_the_constructor_does_no_io_start_raises(tmp_path, problem):
    (tmp_path / "a-file").write_text("not a folder")
    settings: dict[str, object] = {
        "tls file": {"tls_cert": str(tmp_path / "missing.pem"),
                     "tls_key": str(tmp_path / "missing.pem")},
        "store url": {"store": "nosuch://here"},
        "store path": {"store": f"sqlite:///{tmp_path / 'a-file' / 'j.db'}"},
    }[problem]
    server = new_server(**settings)  # no file is read, nothing is opened
    assert not server.is_serving()
    with pytest.raises((ConfigError, OSError)):
        await server.start()
    assert not server.is_serving() and server.sockets == ()
    await asyncio.wait_for(server.wait_closed(), 5)  # nothing to wait for
    with pytest.raises(RuntimeError, match="start failed"):
        await asyncio.wait_for(server.serve_forever(), 5)
    server.close()
    await asyncio.wait_for(server.wait_closed(), 5)


async def test_a_bad_tls_file_opens_no_store(tmp_path):
    """The TLS files are read before the store is opened, so a start that fails
    on them leaves the database unlocked for the next try."""
    url = f"sqlite:///{tmp_path / 'j.db'}"
    server = new_server(store=url, tls_cert=str(tmp_path / "missing.pem"),
                        tls_key=str(tmp_path / "missing.pem"))
    with pytest.raises(ConfigError, match="tls_cert: cannot load"):
        await server.start()
    async with new_server(store=url) as again:
        assert (await exchange(again.port, submit("echo")))[-2] == COMPLETED


async def test_wait_connections_closed_waits_for_the_last_connection(server):
    await asyncio.wait_for(server.wait_connections_closed(), 5)  # none yet: at once
    session = await Session.open(server.port, submit("wait", Key="held"))
    assert (await session.line()).startswith("R0000000: T")
    gone = asyncio.ensure_future(server.wait_connections_closed())
    try:
        # Another connection comes and goes; the monitor still holds its own.
        assert (await exchange(server.port, submit("echo")))[-2] == COMPLETED
        assert not gone.done()
        await release("held")
        await session.rest()
        await session.close()
        await asyncio.wait_for(gone, 5)
        assert server.connection_count == 0
    finally:
        gone.cancel()


# -- Controller -----------------------------------------------------------------------

SLOW_MODULE = """
import time
from jobmonitor import JobMonitor

app = JobMonitor()
time.sleep({delay_s})  # an import that takes a while (the loader runs it at start-up)

@app.job("slow-import")
async def job(job):
    pass
"""


def controller_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate()
            if thread.name == "jobmonitor-controller" and thread.is_alive()]


def test_a_controller_that_does_not_start_in_time_leaves_nothing_running(tmp_path):
    module = tmp_path / "slow_jobs.py"
    module.write_text(SLOW_MODULE.format(delay_s=0.5))
    controller = Controller(jobs.app, port=0, jobs=[f"{module}:app"])
    with pytest.raises(TimeoutError):
        controller.start(timeout_s=0.05)
    assert controller_threads() == []
    with pytest.raises(RuntimeError, match="not started"):
        _ = controller.port
    # Nothing is left half started: the same controller starts when given the time.
    with controller:
        assert (controller.run_coroutine(exchange(controller.port, submit("slow-import")))
                [-2] == COMPLETED)
    assert controller_threads() == []


def test_a_controller_start_error_after_its_timeout_is_the_error_raised(tmp_path):
    """A start that fails while ``start()`` gives up waiting: the failure, not
    the timeout, says why."""
    module = tmp_path / "late_failure.py"
    module.write_text("import time\ntime.sleep(0.3)\nraise ImportError('broken on purpose')\n")
    controller = Controller(jobs.app, port=0, jobs=[f"{module}"])
    with pytest.raises(ConfigError, match="broken on purpose"):
        controller.start(timeout_s=0.05)
    assert controller_threads() == []
