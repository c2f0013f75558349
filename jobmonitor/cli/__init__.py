"""The ``jobmonitor`` command: the top layer, the only one that prints or exits.

``main`` (the parser, ``serve``, ``hash-password``), ``signals`` (what
SIGINT, SIGTERM and SIGHUP do to ``serve``), ``client_commands`` (the client
commands' options, and how one runs), ``actions`` (what submit, watch,
status, ... each do), ``endpoint`` (where a command connects, as whom),
``output`` and ``tables`` (how they print) and ``logs`` (the server's log:
text or JSON lines).  The console script is ``jobmonitor.cli:main``.

Rule: anything may be imported from here; nothing imports the CLI.
"""

from .main import build_parser, main

__all__ = ["main", "build_parser"]
