"""The ``jobmonitor`` command: the top layer, the only one that prints or exits.

``main`` (the parser, ``serve`` and ``hash-password``), ``client_commands``
(submit, watch, status, ...) and ``output`` (how they print).  The console
script is ``jobmonitor.cli:main``.

Rule: anything may be imported from here; nothing imports the CLI.
"""

from .main import build_parser, main

__all__ = ["main", "build_parser"]
