"""The systemd unit in examples/ says what the server accepts and allows for."""

from __future__ import annotations

import configparser
import shlex
from pathlib import Path

from jobmonitor.cli.main import build_parser
from jobmonitor.cli.signals import STOP_MARGIN_S
from jobmonitor.config import Config

UNIT = Path(__file__).resolve().parents[2] / "examples" / "jobmonitor.service"


def _service() -> configparser.SectionProxy:
    unit = configparser.ConfigParser(interpolation=None, strict=True)
    # Keys keep their case (configparser lowers them).
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(UNIT.read_text())
    return unit["Service"]


def test_the_units_command_is_one_the_server_accepts() -> None:
    program, *argv = shlex.split(_service()["ExecStart"])
    assert program.endswith("/bin/jobmonitor")
    args = build_parser().parse_args(argv)
    assert (args.command, args.config, args.data_dir) == (
        "serve", "/etc/jobmonitor/jobmonitor.toml", "/var/lib/jobmonitor")


def test_systemd_waits_longer_than_an_orderly_stop_can_take() -> None:
    service = _service()
    defaults = Config()
    longest_stop_s = defaults.shutdown_grace_s + defaults.linger_s + STOP_MARGIN_S
    assert int(service["TimeoutStopSec"]) > longest_stop_s
    # SIGTERM to the server alone: the programs its jobs run keep their grace.
    assert service["KillMode"] == "mixed"
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert int(service["LimitNOFILE"]) > defaults.max_connections
    assert service["WorkingDirectory"] in service["ReadWritePaths"].split()
