"""The store layer: where jobs outlive the process.

``base`` is the interface the engine talks to (``Store``, ``Recordable``,
``Recovery``, ``TaskEvent``); ``sqlite`` is the durable backend.  A store deals
in ``JobRecord``s and encoded lines, never in running jobs.

Rule: imports only the wire layer and ``errors``; never the engine, the server
or anything above them.
"""
