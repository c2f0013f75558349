"""The HTTP face of a server: a JSON API, live lines as server-sent events,
Prometheus metrics and a live web page, on a port of their own.

An adapter beside ``server``: each API call is turned into the command packet
the TCP port would have read and goes through the same ``Commands``, so users,
roles, job tokens and refusals are the TCP port's.  HTTP/1.1 framing is h11's
(``connection``); routes are ``server`` (page, health, metrics) and ``api``;
``events`` streams a job's lines; ``metrics`` renders the counters.  See
docs/http.md.
"""

from .server import HttpServer, start_serving, stop_serving

__all__ = ["HttpServer", "start_serving", "stop_serving"]
