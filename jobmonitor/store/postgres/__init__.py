"""The PostgreSQL store (``postgresql://`` URLs): one database the servers of a
cluster share (``store``, ``node``), its tables and queries (``sql``), reaching
it (``connect``) and checking it (``check``).  Needs the asyncpg driver: the
``postgres`` extra."""
