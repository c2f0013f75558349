"""The engine layer: running jobs and recording what they say.

``job`` (the handler's API and a job's state), ``stream`` (a job's status lines
and their watchers), ``handlers`` (a registered project), ``directory`` (the
table of live and stored jobs), ``runner`` (the queue and the running jobs) and
``engine`` (what each command does to a job).

Rule: imports the wire layer, ``errors``, ``config`` and the store interface;
never a socket, the server, the app or anything above them.
"""
