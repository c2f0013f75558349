"""jobmonitor: an asyncio server that runs jobs and streams their status live.

Clients send XML command packets over TCP; the server answers with coded
``R`` lines and streams a monitored job's ``J`` status lines as they happen.

Layers, from the wire up: ``codes`` (the code table), ``lines`` and ``packet``
(sans-I/O wire format); ``states``, ``records``, ``job``, ``stream``,
``handlers``, ``directory`` and ``engine`` (running jobs and recording what
they say); ``store`` and ``sqlite_store`` (persistence); ``auth``,
``representations``, ``commands``, ``connection`` and ``server`` (the network
side); ``app`` (the embedding API); ``programs`` and ``config_file`` (program
jobs and ``jobmonitor.toml``); ``client`` (the Python client) and
``cli``/``cli_client`` (the command).
"""

from ._version import __version__
from .app import Controller, JobMonitor
from .wire.codes import Reply, Status
from .config import Config
from .errors import (
    ConfigError,
    JobFailed,
    JobMonitorError,
    PacketError,
    ProtocolError,
    ReplyError,
    RequestError,
)
from .engine.job import Job
from .server.server import Server
from .wire.states import JobState, Outcome

__all__ = [
    "__version__",
    "JobMonitor",
    "Controller",
    "Server",
    "Config",
    "Job",
    "JobState",
    "Outcome",
    "Reply",
    "Status",
    "JobMonitorError",
    "ConfigError",
    "JobFailed",
    "RequestError",
    "PacketError",
    "ReplyError",
    "ProtocolError",
]
