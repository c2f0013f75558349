"""RestartServer re-imports the ``config.jobs`` modules: the app hands the server
a reload callback, and the server itself imports no job module."""

from __future__ import annotations

from jobmonitor import Config, JobMonitor, Server

from ..support.helpers import exchange, submit, xml_packet

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
