"""The wire layer: the protocol's bytes and values, and nothing that runs.

The code table (``codes``), status lines (``lines``), job states and records
(``states``, ``records``), command packets in and out (``packet`` and its parts
``packet_encoding``, ``packet_fast``, ``packet_shape``, ``packet_build``), the
protocol's own variables and their values (``variables``) and the
text/JSON/XML status formats (``formats``).  Shared by the server and the client.

Rule: no asyncio, no sockets, no jobs.  Imports only ``jobmonitor.errors``
(which imports only ``codes``) and the standard library and lxml.
"""

__all__ = ["DEFAULT_PORT"]

#: The TCP port a server listens on, and a client connects to, unless told otherwise.
DEFAULT_PORT = 7400
