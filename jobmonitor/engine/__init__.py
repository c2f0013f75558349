"""The engine layer: running jobs and recording what they say.

``job`` (the handler's API and what is recorded about a job), ``stream`` (a
job's status lines and their watchers), ``history`` (the names of a job's own
history events), ``lifecycle`` (the table of moves between states, and the one
place a job's state changes), ``handlers`` (a registered project) and
``registry`` (the set of them an app or a config file fills), ``directory``
(the table of live and stored jobs), ``run`` (one run of a job: cancel,
suspend, time limit), ``time_limit`` (a run's clock, which stops while the job
is suspended), ``queues`` (the waiting lines, by queue and priority),
``schedule`` (due times, recurring schedules and the clock they read),
``runner`` (the waiting lines and the running jobs), ``pacing`` (a job that
never checkpoints held to the store's pace), ``engine`` (what each command
does to a job) and its parts: ``controls`` (cancel, suspend, resume,
delete), ``placing`` (queues, due times and reruns), ``keeping`` (recovery,
stored lines, purges), and a cluster's node's
``claims`` (claims and takeovers), ``elsewhere`` (commands on jobs other nodes
hold) and ``cluster`` (what the cluster shows); ``parts`` declares what the
parts use of the engine.

Rule: imports the wire layer, ``errors``, ``config``, ``queueing`` and the store; never a
socket, the server, the app or anything above them.
"""
