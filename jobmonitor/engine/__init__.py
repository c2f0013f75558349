"""The engine layer: running jobs and recording what they say.

``job`` (the handler's API and a job's state), ``stream`` (a job's status lines
and their watchers), ``handlers`` (a registered project) and ``registry`` (the
set of them an app or a config file fills), ``lifecycle`` (the table of allowed
state transitions), ``directory`` (the table of live and stored jobs),
``runner`` (the running jobs), ``queues`` (the waiting lines, by queue and
priority), ``schedule`` (due times, recurring schedules and the clock they
read), ``time_limit`` (a running job's timeout), ``engine`` (what each command
does to a job) and ``placing`` (its part for queues, due times and reruns).

Rule: imports the wire layer, ``errors``, ``config``, ``queueing`` and the store; never a
socket, the server, the app or anything above them.
"""
