"""The real CLI process: SIGHUP and RestartServer reload the config file and the
job modules without dropping running jobs; ``--log-format json``."""

from __future__ import annotations

import json
import queue
import re
import signal
import threading
from pathlib import Path

from jobmonitor.users import hash_password

from ..support.helpers import Session, exchange, submit, xml_packet
from .test_cli import ServerProcess

HOLD_JOBS = '''
import asyncio
import pathlib

from jobmonitor import JobMonitor

app = JobMonitor()


@app.job("hold")
async def hold(job):
    job.info("holding")
    flag = pathlib.Path(job.params["Flag"])
    while not flag.exists():  # (the test creates the file to let the job end)
        await asyncio.sleep(0.02)
    job.info("released")
'''
ROOT_HASH = hash_password("root-pw")
CAROL_HASH = hash_password("carol-pw")


def config_text(jobs: Path, *, max_running: int, carol: bool = False,
                greet: bool = False) -> str:
    text = f'''
[server]
max_running = {max_running}
jobs = [{str(jobs)!r}]

[users.root]
password_hash = "{ROOT_HASH}"
role = "admin"
'''
    if carol:
        text += f'\n[users.carol]\npassword_hash = "{CAROL_HASH}"\n'
    if greet:
        text += '\n[projects.greet]\ncommand = ["echo", "hello from greet"]\n'
    return text


class LoggedServer(ServerProcess):
    """A server process whose log lines, after the ready line, can be waited for."""

    def __init__(self, *args: str) -> None:
        super().__init__(*args)
        self.lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.put(line)

    def wait_for(self, pattern: str, timeout_s: float = 10) -> list[str]:
        """The log lines up to the first that matches ``pattern``."""
        seen: list[str] = []
        while True:
            try:
                line = self.lines.get(timeout=timeout_s)
            except queue.Empty:
                raise AssertionError(f"no log line matched {pattern!r}: {''.join(seen)}") from None
            seen.append(line)
            self.log.append(line)
            if re.search(pattern, line):
                return seen

    def stop(self, signum: int = signal.SIGTERM, timeout_s: float = 15) -> int:
        self.proc.send_signal(signum)
        status = self.proc.wait(timeout_s)
        self._reader.join(timeout_s)
        return status


def as_user(name: str, password: str, **variables: str) -> dict[str, str]:
    return {**variables, "_sys_User": name, "_sys_Password": password}


def hold(flag: Path) -> bytes:
    return submit("hold", **as_user("root", "root-pw", Flag=str(flag)))


async def test_sighup_reloads_users_projects_and_limits_without_dropping_a_job(tmp_path):
    jobs = tmp_path / "hold_jobs.py"
    jobs.write_text(HOLD_JOBS)
    config = tmp_path / "jobmonitor.toml"
    config.write_text(config_text(jobs, max_running=1))
    server = LoggedServer("--config", str(config))
    try:
        running = await Session.open(server.port, hold(tmp_path / "first"))
        first = (await running.line()).removeprefix("R0000000: ")
        assert (await running.line()).startswith("J0000100: Machine name: ")
        assert await running.line() == "J0000100: holding"
        queued = await Session.open(server.port, hold(tmp_path / "second"))
        assert (await queued.line()).startswith("R0000000: T")
        assert (await queued.line()).startswith("J0000100: Machine name: ")
        assert "Queued: 1" in " ".join(await exchange(server.port, xml_packet(
            "GetJobQueueLen", as_user("root", "root-pw"))))

        config.write_text(config_text(jobs, max_running=3, carol=True, greet=True))
        server.proc.send_signal(signal.SIGHUP)
        assert await queued.line() == "J0000100: holding"  # max_running is 3 now
        log = "".join(server.wait_for(r"reloaded the settings"))
        assert "reload: max_running changed from 1 to 3" in log
        assert "reload: user 'carol' added (user)" in log
        assert "reload: project 'greet' added" in log
        assert CAROL_HASH not in log and ROOT_HASH not in log  # users by name only

        greeted = await exchange(server.port, submit("greet", **as_user("carol", "carol-pw")))
        assert "J0000100: hello from greet" in greeted
        assert greeted[-2] == "J0000020: Job completed successfully."

        (tmp_path / "first").touch()
        (tmp_path / "second").touch()
        assert await running.rest() == [
            "J0000100: released", "J0000020: Job completed successfully.",
            f"J0000001: Transaction {first} ended"]
        assert (await queued.rest())[-2] == "J0000020: Job completed successfully."
        await running.close()
        await queued.close()
        assert server.stop() == 0
    finally:
        server.kill()


async def test_a_config_file_that_fails_to_load_on_sighup_keeps_the_old_settings(tmp_path):
    jobs = tmp_path / "hold_jobs.py"
    jobs.write_text(HOLD_JOBS)
    config = tmp_path / "jobmonitor.toml"
    config.write_text(config_text(jobs, max_running=1))
    server = LoggedServer("--config", str(config))
    try:
        running = await Session.open(server.port, hold(tmp_path / "flag"))
        tid = (await running.line()).removeprefix("R0000000: ")
        config.write_text(config_text(jobs, max_running=2, carol=True) + "\n[server\n")
        server.proc.send_signal(signal.SIGHUP)
        failed = server.wait_for(r"reload failed")[-1]
        assert "ERROR jobmonitor.server: reload failed, nothing changed: " in failed
        assert f"{config}: not valid TOML" in failed
        # the old settings stay: carol is still unknown, root still works
        assert await exchange(server.port, submit("hold", **as_user("carol", "carol-pw"))) == [
            "R0005012: Not authenticated: wrong user or password"]
        assert (await exchange(server.port, xml_packet(
            "GetJobQueueLen", as_user("root", "root-pw"))))[0] == "R0000000- Queued: 0"

        config.write_text(config_text(tmp_path / "missing.py", max_running=2))
        server.proc.send_signal(signal.SIGHUP)
        assert "no such file" in server.wait_for(r"reload failed")[-1]

        (tmp_path / "flag").touch()
        assert (await running.rest())[-2:] == [
            "J0000020: Job completed successfully.", f"J0000001: Transaction {tid} ended"]
        await running.close()
        assert server.stop() == 0
    finally:
        server.kill()


async def test_restart_server_reloads_the_config_file_as_sighup_does(tmp_path):
    jobs = tmp_path / "hold_jobs.py"
    jobs.write_text(HOLD_JOBS)
    config = tmp_path / "jobmonitor.toml"
    config.write_text(config_text(jobs, max_running=1))
    server = LoggedServer("--config", str(config))
    try:
        config.write_text(config_text(jobs, max_running=4, carol=True, greet=True)
                          .replace("[server]", '[server]\nhost = "127.0.0.2"'))
        restart = xml_packet("RestartServer", as_user("root", "root-pw"))
        assert await exchange(server.port, restart) == ["R0000000: Job engine restarted"]
        log = "".join(server.wait_for(r"restarting the job engine"))
        assert ("reload: host changed to 127.0.0.2 but needs a restart: still 127.0.0.1"
                in log)
        assert "reload: max_running changed from 1 to 4" in log
        assert "reload: user 'carol' added (user)" in log
        greeted = await exchange(server.port, submit("greet", **as_user("carol", "carol-pw")))
        assert "J0000100: hello from greet" in greeted

        config.write_text("[server]\nmax_running = 0\n")
        [refused] = await exchange(server.port, restart)
        assert refused.startswith("R0005999: Internal server error: reloading job modules "
                                  "failed: ")
        assert "max_running: must be greater than 0" in refused
        assert "reload failed" in server.wait_for(r"reload failed")[-1]
        assert "J0000100: hello from greet" in await exchange(
            server.port, submit("greet", **as_user("carol", "carol-pw")))
        assert server.stop() == 0
    finally:
        server.kill()


async def test_log_format_json_writes_one_json_object_a_line(tmp_path):
    config = tmp_path / "jobmonitor.toml"
    config.write_text(f'[users.root]\npassword_hash = "{ROOT_HASH}"\n')
    server = LoggedServer("--config", str(config), "--log-format", "json")
    try:
        await exchange(server.port, submit("echo", **as_user("root", "not-the-password")))
        server.wait_for(r"login_failed")
        assert server.stop() == 0
        while not server.lines.empty():
            server.log.append(server.lines.get())
        entries = [json.loads(line) for line in server.log]  # every line
        assert all({"time", "level", "logger", "message"} <= entry.keys() for entry in entries)
        assert any(entry["message"].startswith("jobmonitor listening on 127.0.0.1:")
                   for entry in entries)
        [refusal] = [entry for entry in entries if entry.get("event") == "login_failed"]
        assert refusal == {
            "time": refusal["time"], "level": "WARNING", "logger": "jobmonitor.security",
            "message": "event=login_failed peer=127.0.0.1 user=root command=SubmitJob "
                       "reason=wrong_password",
            "event": "login_failed", "peer": "127.0.0.1", "user": "root",
            "command": "SubmitJob", "reason": "wrong_password"}
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", refusal["time"])
        assert entries[-1]["message"] == "jobmonitor stopped"
        assert "not-the-password" not in "".join(server.log)
    finally:
        server.kill()
