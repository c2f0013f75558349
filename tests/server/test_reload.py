"""RestartServer re-imports the ``config.jobs`` modules: the app hands the server
a reload callback, and the server itself imports no job module."""

from __future__ import annotations

from jobmonitor import Config, ConfigError, JobMonitor, Server

from ..support.helpers import Session, exchange, submit, xml_packet

MODULE = '''
from jobmonitor import JobMonitor

app = JobMonitor()


@app.job({project!r})
def run(job):
    job.info("from {project}")
'''
RESTARTED = ["R0000000: Job engine restarted"]


async def test_restart_server_reloads_the_job_modules(tmp_path):
    module = tmp_path / "reloaded_jobs.py"
    module.write_text(MODULE.format(project="before"))
    own = JobMonitor()
    own.add_job("own", lambda job: None)
    async with own.serve("127.0.0.1", 0, jobs=(str(module),)) as server:
        assert server.engine.handler_names() == ["before", "own"]
        module.write_text(MODULE.format(project="after"))
        assert await exchange(server.port, xml_packet("RestartServer")) == RESTARTED
        assert server.engine.handler_names() == ["after", "own"]
        assert "J0000100: from after" in await exchange(server.port, submit("after"))

        module.write_text("raise RuntimeError('broken on purpose')\n")
        [reply] = await exchange(server.port, xml_packet("RestartServer"))
        assert "reloading job modules failed" in reply and "broken on purpose" in reply
        assert server.engine.handler_names() == ["after", "own"]  # the old ones stay


async def test_a_server_made_without_a_reload_keeps_its_handlers_on_restart():
    app = JobMonitor()
    app.add_job("only", lambda job: None)
    server = Server(app.handlers, Config(host="127.0.0.1", port=0))
    await server.start()
    try:
        assert await exchange(server.port, xml_packet("RestartServer")) == RESTARTED
        assert server.engine.handler_names() == ["only"]
    finally:
        server.close()
        await server.wait_closed()


async def test_a_reload_swaps_handlers_and_limits_and_running_jobs_go_on():
    """``Server.reload`` (SIGHUP): no job is stopped.  A job of a project the
    reload removed runs on with its handler, and can still be cancelled; a
    larger max_running starts a queued thread job at once (a new pool)."""
    from ..support import jobs

    config = Config(host="127.0.0.1", port=0, max_running=1, linger_s=1.0,
                    shutdown_grace_s=1.0)
    handlers = jobs.app.handlers
    fresh: list = [config, {"wait": handlers["wait"], "thread-wait": handlers["thread-wait"]}]

    def reread():
        if isinstance(fresh[0], Exception):
            raise fresh[0]
        return fresh[0], fresh[1]

    server = JobMonitor().make_server(config, projects=fresh[1], reread=reread)
    await server.start()
    try:
        waiting = await Session.open(server.port, submit("wait", Key="a"))
        tid = (await waiting.line()).removeprefix("R0000000: ")
        assert [await waiting.line() for _ in range(2)][-1] == "J0000100: waiting"
        queued = await Session.open(server.port, submit("thread-wait", Key="b"))
        assert (await queued.line()).startswith("R0000000: T")

        fresh[0] = ConfigError("broken on purpose")
        assert not await server.reload()
        assert server.config.max_running == 1 and "wait" in server.engine.handler_names()

        fresh[:] = [config.replace(max_running=2), {"thread-wait": handlers["thread-wait"]}]
        assert await server.reload()
        assert server.engine.handler_names() == ["thread-wait"]
        assert [await queued.line() for _ in range(2)][-1] == "J0000100: still working"
        cancel = xml_packet("CancelJob", {"_sys_TransactionID": tid})
        assert await exchange(server.port, cancel) == [f"R0000000: {tid}"]
        assert (await waiting.rest())[-2:] == [
            "J0000023: Job cancelled by user.", f"J0000001: Transaction {tid} ended"]
        assert (await exchange(server.port, submit("wait")))[0].startswith("R0005008")
        jobs.thread_releases["b"].set()
        assert (await queued.rest())[-2] == "J0000020: Job completed successfully."
        await waiting.close()
        await queued.close()
    finally:
        server.close()
        await server.wait_closed()
