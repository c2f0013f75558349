"""`jobmonitor serve --http-port` and `[server] http_port`: the real process."""

from __future__ import annotations

import json
import re
import signal
import socket
import urllib.request

from .test_cli import ServerProcess, run_cli

HTTP_READY = re.compile(r"jobmonitor HTTP listening on (http://\S+)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(server: ServerProcess) -> str:
    assert server.proc.stderr is not None
    for line in server.proc.stderr:
        server.log.append(line)
        match = HTTP_READY.search(line)
        if match:
            return match.group(1)
    raise AssertionError(f"no HTTP ready line: {''.join(server.log)}")


def test_serve_with_http_port_answers_http_and_stops_on_sigterm(tmp_path):
    port = free_port()
    config = tmp_path / "jobmonitor.toml"
    config.write_text(f"[server]\nhttp_port = {port}\n")
    server = ServerProcess("--config", str(config), "--jobs", "examples/demo_jobs.py")
    try:
        url = wait_http(server)
        assert url == f"http://127.0.0.1:{port}/"
        with urllib.request.urlopen(url + "api/v1/projects", timeout=10) as answer:
            assert "count" in json.loads(answer.read())
        with urllib.request.urlopen(url, timeout=10) as page:
            assert page.headers["Content-Type"].startswith("text/html")
        assert server.stop(signal.SIGTERM) == 0
    finally:
        server.kill()


def test_an_open_http_listener_beyond_loopback_is_refused_at_start():
    result = run_cli("serve", "--store", "memory://", "--port", "0", "--http-port", "1",
                     "--http-host", "0.0.0.0")
    assert result.returncode == 2
    assert "reachable from the network and no users are configured" in result.stderr
