"""The server layer: the listener, its connections, and the commands they run.

``server`` (``Server``: listening, connections, ordered shutdown),
``connection`` (one client: read a packet, answer, maybe stream a job),
``input`` (a connection's reading: packets one at a time, their deadlines,
kept connections), ``output`` (a connection's write path: batching, corks,
flow control, ending), ``commands`` (one method per command), ``placement``
(reading a submit's queue, priority and due time), ``auth`` (checking credentials and
throttling), ``refusals`` (the operator's log of refused logins and
permissions), ``reloading`` (what a reload changes), and the socket-level
helpers ``deadlines``, ``sockets`` and ``eager``.

Rule: imports the engine, the store, ``config``, ``users``, the wire layer and
``errors``; never the app, the loader of job modules, programs, the client or
the CLI.
"""
