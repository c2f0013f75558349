"""jobmonitor: an asyncio server that runs jobs and streams their status live.

Clients send XML command packets over TCP; the server answers with coded
``R`` lines and streams a monitored job's ``J`` status lines as they happen.

Layers, from the bottom; each imports only those below it (and itself):

* ``wire/``: the protocol's bytes and values (codes, lines, packets, states,
  records, the status formats), sans-I/O; ``errors``: the exception tree;
* ``client/``: the Python client, on the wire layer alone;
* ``users``, ``queueing``, ``config``: the server's settings, one frozen ``Config``
  (``queueing``: its queues and recurring schedules);
* ``store/``: persistence (the interface, memory, ``sqlite/``);
* ``engine/``: running jobs and recording what they say;
* ``programs/``: program jobs, handlers built on the engine;
* ``server/``: the listener, connections, commands, authentication;
* ``app`` (the embedding API), ``loader`` (``--jobs`` modules),
  ``config_file`` (``jobmonitor.toml``);
* ``cli/``: the ``jobmonitor`` command.

``tests/unit/test_layers.py`` fails on an import that points up.

``JobMonitor``, ``Controller``, ``Server``, ``Config`` and ``Job`` are imported
on first use: a client (the ``jobmonitor`` command's client commands) that
imports ``jobmonitor`` does not pay for the server's side.
"""

from typing import TYPE_CHECKING

from ._lazy import lazy_names
from ._version import __version__
from .errors import (
    ConfigError,
    JobFailed,
    JobMonitorError,
    PacketError,
    ProtocolError,
    ReplyError,
    RequestError,
    StoreUnavailable,
)
from .wire.codes import Reply, Status
from .wire.states import JobState, Outcome

if TYPE_CHECKING:
    from .app import Controller, JobMonitor
    from .config import Config
    from .engine.job import Job
    from .server.server import Server

#: Names imported on first use, from the module that defines each: the server's
#: side (lxml, sqlite3, the engine) costs a client command most of its start-up.
_LAZY = {"JobMonitor": ".app", "Controller": ".app", "Server": ".server.server",
         "Config": ".config", "Job": ".engine.job"}

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
    "StoreUnavailable",
    "ReplyError",
    "ProtocolError",
]


__getattr__, __dir__ = lazy_names(__name__, _LAZY, __all__)
