"""Server settings: one frozen dataclass, built once and passed around.

The CLI builds it from flags, embedding code from keyword arguments; every
option is spelled out here and only here.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError
from .queueing import DEFAULT_QUEUE, QueueSettings, ScheduleSettings
from .users import User
from .wire import DEFAULT_PORT

__all__ = ["Config", "DEFAULT_PORT", "LOG_FORMATS", "NEEDS_RESTART", "CLUSTER_SCHEMES"]

LOG_FORMATS = ("text", "json")
#: The settings a reload (SIGHUP, RestartServer) cannot change: what the server
#: bound, opened or wrote into every stream at its start.  Every other one takes
#: effect at a reload (a connection already open keeps the limits it started with).
NEEDS_RESTART = ("host", "port", "store", "data_dir", "commit_interval_s",
                 "sqlite_synchronous", "tls_cert", "tls_key", "machine_name", "node_name",
                 "cluster_heartbeat_s", "cluster_lease_s")
#: The store URL schemes of a cluster's shared store (issue 18).
CLUSTER_SCHEMES = ("postgresql", "postgres")
#: ``host`` values that listen on every address of the machine.
_EVERY_ADDRESS = frozenset({"", "0.0.0.0", "::"})


def _setting(default: Any, help: str, *, flag: bool = True) -> Any:
    """A field with its help text; ``flag`` fields become ``serve`` options."""
    return field(default=default, metadata={"help": help, "flag": flag})


@dataclass(frozen=True, slots=True)
class Config:
    """Every server setting, with its default and its help text."""

    host: str = _setting("127.0.0.1", "address to listen on")
    port: int = _setting(DEFAULT_PORT, "port to listen on (0 picks a free port)")
    jobs: tuple[str, ...] = _setting(
        (), "job module to load: pkg.module[:attr] or path/file.py[:attr] (repeatable)")
    store: str | None = _setting(
        None, "where jobs are kept: sqlite:///PATH, sqlite:////ABSOLUTE/PATH, memory://, or "
        "postgresql://USER[:PASSWORD]@HOST[:PORT]/DBNAME[?schema=NAME] for a cluster's node "
        "(default: jobmonitor.db in --data-dir for `jobmonitor serve`, memory when embedded)")
    data_dir: str = _setting(".", "folder of the default SQLite database")
    keep_days: float = _setting(7.0, "days finished jobs are kept (0 keeps them forever)")
    max_finished_in_memory: int = _setting(
        10_000, "finished jobs the memory store keeps for queries and re-attaching, the "
        "oldest forgotten first (0: no limit; a durable store keeps them on disk instead)")
    commit_interval_s: float = _setting(
        0.05, "longest time a change waits before the SQLite store commits it")
    sqlite_synchronous: str = _setting(
        "full", "full: an acknowledged job survives a power loss (fsync per commit); normal: "
        "it survives a crash of the server, not of the machine (faster)")
    max_running: int = _setting(
        8, "jobs that may run at once, in all queues together; the rest wait, by priority "
        "then age")
    max_queued_jobs: int = _setting(0, "most jobs that may wait, those not due yet included; "
                                       "beyond it SubmitJob is refused as busy (0: no limit)")
    max_lines_in_memory: int = _setting(
        100_000, "most stored lines of one job kept in memory for slow monitors (older ones "
        "are read back from the store)")
    max_packet_bytes: int = _setting(1024 * 1024, "largest command packet accepted, in bytes")
    max_packet_variables: int = _setting(
        10_000, "most variables (var elements, in both sections) in one command packet")
    packet_timeout_s: float = _setting(30.0, "seconds a client has to send a complete packet")
    linger_s: float = _setting(
        2.0, "seconds to keep reading the input of a closing client that sent more than "
        "its packet, so it can read our last reply")
    shutdown_grace_s: float = _setting(
        10.0, "seconds running jobs get to finish at shutdown before they are cancelled")
    idle_timeout_s: float = _setting(
        10.0, "seconds a new connection may stay silent before it is closed")
    max_connections: int = _setting(
        20000, "most client connections at once; beyond it a busy reply and close "
        "(`jobmonitor serve` raises the open-file limit to fit, where it may)")
    max_monitors_per_job: int = _setting(1000, "most clients monitoring one job at once")
    max_pending_output_bytes: int = _setting(
        256 * 1024, "output queued for one slow client before the server stops adding to it")
    monitor_stall_s: float = _setting(
        30.0, "seconds a client may accept no bytes while output waits for it: a monitor is "
        "then told where to re-attach from and closed, any other connection is reset")
    http_port: int = _setting(
        0, "port of the HTTP API, live page and metrics (0: no HTTP listener)")
    http_host: str | None = _setting(None, "address of the HTTP listener (default: --host)")
    tls_cert: str | None = _setting(None, "PEM certificate (chain) file: serve TLS")
    tls_key: str | None = _setting(None, "PEM private key file for --tls-cert")
    allow_anonymous_network: bool = _setting(
        False, "serve without users on a non-loopback address (not recommended)")
    # -- queues and schedules (issue 20) --
    queues: tuple[QueueSettings, ...] = _setting(
        (), "queues with their own max_running or paused ([queues.NAME] tables in the "
        "config file)", flag=False)
    allow_new_queues: bool = _setting(
        True, "a job may name a queue that is not configured (it gets the server's limits); "
        "--no-allow-new-queues refuses it")
    schedules: tuple[ScheduleSettings, ...] = _setting(
        (), "recurring jobs ([schedules.NAME] tables in the config file)", flag=False)
    users: tuple[User, ...] = _setting(
        (), "users who may connect ([users.NAME] tables in the config file)", flag=False)
    machine_name: str | None = _setting(
        None, "machine name reported at the start of each stream (default: host name)")
    # -- the cluster (issue 18) --
    node_name: str | None = _setting(
        None, "this node's name in a cluster (a postgresql:// store): the machine name of "
        "the jobs it runs, and its name in ListNodes (default: host name:port)")
    cluster_heartbeat_s: float = _setting(
        1.0, "seconds between a cluster node's heartbeats (and its polls for work)")
    cluster_lease_s: float = _setting(
        3.0, "seconds without a heartbeat after which the other nodes declare a node dead "
        "and take over its jobs")
    log_level: str = _setting("info", "debug, info, warning or error")
    log_format: str = _setting(
        "text", "text, or json: one JSON object a line (time, level, logger, message and "
        "the fields of a refusal), for log shippers")

    def __post_init__(self) -> None:
        _check_positive(self, "max_running", "max_packet_bytes", "max_packet_variables",
                        "packet_timeout_s", "commit_interval_s", "max_lines_in_memory",
                        "idle_timeout_s", "max_connections", "max_monitors_per_job",
                        "max_pending_output_bytes", "monitor_stall_s", "cluster_heartbeat_s",
                        "cluster_lease_s")
        if self.cluster_lease_s <= self.cluster_heartbeat_s:
            raise ConfigError(f"cluster_lease_s: must be longer than cluster_heartbeat_s "
                              f"({self.cluster_heartbeat_s:g}), got {self.cluster_lease_s:g}")
        if self.sqlite_synchronous not in ("full", "normal"):
            raise ConfigError(f"sqlite_synchronous: must be full or normal, got "
                              f"{self.sqlite_synchronous!r}")
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(f"log_format: must be text or json, got {self.log_format!r}")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("tls_cert and tls_key: give both or neither")
        _check_non_negative(self, "linger_s", "shutdown_grace_s", "keep_days", "max_queued_jobs",
                            "max_finished_in_memory")
        for name in ("port", "http_port"):
            if not 0 <= getattr(self, name) <= 65535:
                raise ConfigError(f"{name}: must be 0..65535, got {getattr(self, name)}")
        _check_queues(self)

    @property
    def clustered(self) -> bool:
        """True when the store is a cluster's shared store (``postgresql://``)."""
        return (self.store or "").partition("://")[0] in CLUSTER_SCHEMES

    def node_settings(self) -> dict[str, Any]:
        """What ``open_store`` takes for a cluster's store: this node's name and
        address, and the heartbeat and lease; nothing for any other store."""
        if not self.clustered:
            return {}
        import socket

        return {"node_name": self.node_name or f"{socket.gethostname()}:{self.port}",
                "address": self.node_address(self.port),
                "heartbeat_s": self.cluster_heartbeat_s, "lease_s": self.cluster_lease_s}

    def node_address(self, port: int) -> str:
        """``HOST:PORT`` of this node as the others see it (``ListNodes``)."""
        import socket

        host = self.host
        if host in _EVERY_ADDRESS:  # (ListNodes would show 0.0.0.0: the machine's name says more)
            host = socket.gethostname()
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def replace(self, **changes: Any) -> Config:
        """Return a copy with ``changes`` applied (None values are ignored).

        Raises:
            ConfigError: an unknown setting or a bad value.
        """
        known = {field.name for field in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(unknown)}")
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


def _check_queues(config: Config) -> None:
    names = [queue.name for queue in config.queues]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ConfigError(f"queues: {twice[0]!r} is configured twice")
    schedules = [schedule.name for schedule in config.schedules]
    twice = sorted({name for name in schedules if schedules.count(name) > 1})
    if twice:
        raise ConfigError(f"schedules: {twice[0]!r} is configured twice")
    if not config.allow_new_queues:
        known = {DEFAULT_QUEUE, *names}
        for schedule in config.schedules:
            if schedule.queue is not None and schedule.queue not in known:
                raise ConfigError(f"schedules.{schedule.name}.queue: unknown queue "
                                  f"{schedule.queue!r} (allow_new_queues is false)")


def _check_positive(config: Config, *names: str) -> None:
    for name in names:
        value = _finite(name, getattr(config, name))
        if value <= 0:
            raise ConfigError(f"{name}: must be greater than 0, got {value}")


def _check_non_negative(config: Config, *names: str) -> None:
    for name in names:
        value = _finite(name, getattr(config, name))
        if value < 0:
            raise ConfigError(f"{name}: must not be negative, got {value}")


def _finite(name: str, value: float) -> float:
    # nan compares false with everything: "value <= 0" alone would let it through.
    if not math.isfinite(value):
        raise ConfigError(f"{name}: must be a finite number, got {value}")
    return value
