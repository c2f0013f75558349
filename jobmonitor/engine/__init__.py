"""The engine layer: running jobs and recording what they say.

``job`` (the handler's API and a job's state), ``stream`` (a job's status lines
and their watchers), ``handlers`` (a registered project) and ``registry`` (the
set of them an app or a config file fills), ``lifecycle`` (the table of allowed
state transitions), ``directory`` (the table of live and stored jobs),
``runner`` (the queue and the running jobs), ``time_limit`` (a running job's
timeout) and ``engine`` (what each command does to a job).

Rule: imports the wire layer, ``errors``, ``config`` and the store; never a
socket, the server, the app or anything above them.
"""
