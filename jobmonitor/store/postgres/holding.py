"""The SQL of a cluster's nodes: their rows and heartbeats, who holds which job
(claims, takes, releases by a dead node's reaper, strays), the actions one
node asks of another's job, and the queues paused in the whole cluster.  Each
query a function given a connection, as in ``sql``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ...wire.records import JobRecord
from .sql import FINAL_STATES, RUNNING_STATES, select_records

if TYPE_CHECKING:
    from .sql import Db

__all__ = ["register", "namesakes", "set_address", "heartbeat", "unregister", "live_nodes",
           "claim", "set_paused", "paused_queues", "take", "request", "take_requests",
           "put_back_requests", "reap", "strays"]

#: A node is live while its heartbeat is younger than the lease ($1: seconds).
_LIVE = "SELECT node_id FROM nodes WHERE heartbeat >= now() - make_interval(secs => $1)"


async def register(db: Db, node_id: str, name: str, address: str, started: float) -> None:
    await db.execute("INSERT INTO nodes (node_id, name, address, started) "
                     "VALUES ($1, $2, $3, $4)", node_id, name, address, started)


async def namesakes(db: Db, node_id: str, name: str, lease_s: float) -> int:
    """How many other live nodes have this name."""
    count: int = await db.fetchval(
        f"SELECT count(*) FROM nodes WHERE name = $2 AND node_id <> $3 AND node_id IN ({_LIVE})",
        lease_s, name, node_id)
    return count


async def set_address(db: Db, node_id: str, address: str) -> None:
    await db.execute("UPDATE nodes SET address = $2 WHERE node_id = $1", node_id, address)


async def heartbeat(db: Db, node_id: str) -> bool:
    """Say this node is alive; False when it was declared dead (its row is gone)."""
    row = await db.fetchrow(
        "UPDATE nodes SET heartbeat = now(), running = (SELECT count(*) FROM jobs "
        "WHERE node_id = $1 AND status = ANY($2::text[])) WHERE node_id = $1 RETURNING 1",
        node_id, RUNNING_STATES)
    return row is not None


async def unregister(db: Db, node_id: str) -> None:
    """Declare this node dead now: the next reaper takes its jobs without waiting
    for its lease to end (and ``live_nodes`` leaves it out at once)."""
    await db.execute("UPDATE nodes SET heartbeat = '-infinity' WHERE node_id = $1", node_id)


async def live_nodes(db: Db, lease_s: float) -> list[tuple[str, str, float, float, int]]:
    """(name, address, started, heartbeat age in seconds, running) of each live node."""
    rows = await db.fetch(
        "SELECT name, address, started, extract(epoch FROM now() - heartbeat)::float8, running "
        "FROM nodes WHERE heartbeat >= now() - make_interval(secs => $1) ORDER BY name, node_id",
        lease_s)
    return [(row[0], row[1], row[2], max(row[3], 0.0), row[4]) for row in rows]


async def claim(db: Db, node_id: str, limit: int, queues: Sequence[str] | None,
                now: float) -> tuple[list[tuple[JobRecord, int]], bool]:
    """Hold up to ``limit`` waiting jobs (highest priority, then oldest, first);
    their records and the epochs they are held by, and whether an action is
    still asked of one (``requested`` is kept: see ``take_requests``).

    A queued job waiting out a retry's delay is claimed once it is due
    (``retry_at``); one stored by an older node without it, at once (the
    claimer waits out the rest of the delay: ``JobRunner.queue_recovered``)."""
    where = ("node_id IS NULL AND ((status = 'Queued' AND (retry_at IS NULL "
             "OR retry_at <= $3)) OR (status = 'Created' AND (run_at IS NULL OR run_at <= $3))) "
             "AND queue NOT IN (SELECT name FROM paused_queues)")
    args: list[Any] = [node_id, limit, now]
    if queues is not None:
        args.append(list(queues))
        where += " AND queue = ANY($4::text[])"
    async with db.transaction():
        held = await db.fetch(
            f"WITH picked AS (SELECT number FROM jobs WHERE {where} "
            "ORDER BY priority DESC, created, number LIMIT $2 FOR UPDATE SKIP LOCKED) "
            "UPDATE jobs j SET node_id = $1, epoch = j.epoch + 1 "
            "FROM picked WHERE j.number = picked.number "
            "RETURNING j.number, j.epoch, j.requested IS NOT NULL", *args)
        records = await _held_records(db, held, "ORDER BY priority DESC, created, number")
    return records, any(row[2] for row in held)


async def set_paused(db: Db, queue: str, paused: bool, channel: str) -> None:
    """Pause or resume ``queue`` in the whole cluster; the nodes are told on
    ``channel``."""
    async with db.transaction():
        if paused:
            await db.execute("INSERT INTO paused_queues VALUES ($1) ON CONFLICT DO NOTHING",
                             queue)
        else:
            await db.execute("DELETE FROM paused_queues WHERE name = $1", queue)
        await db.execute("SELECT pg_notify($1, '')", channel)


async def paused_queues(db: Db) -> frozenset[str]:
    return frozenset(row[0] for row in await db.fetch("SELECT name FROM paused_queues"))


async def take(db: Db, node_id: str, number: int, lease_s: float
               ) -> tuple[tuple[JobRecord, int] | None, bool]:
    """Hold this unfinished job if nobody holds it or a dead node did; and
    whether an action is still asked of it (as ``claim``)."""
    async with db.transaction():
        held = await db.fetch(
            "UPDATE jobs SET node_id = $2, epoch = epoch + 1 "
            "WHERE number = $3 AND status <> ALL($4::text[]) AND (node_id IS NULL "
            f"OR node_id NOT IN ({_LIVE})) RETURNING number, epoch, requested IS NOT NULL",
            lease_s, node_id, number, FINAL_STATES)
        records = await _held_records(db, held, "")
    return (records[0] if records else None), any(row[2] for row in held)


async def _held_records(db: Db, held: Sequence[Any], order: str) -> list[tuple[JobRecord, int]]:
    if not held:
        return []
    epochs = {row[0]: row[1] for row in held}
    records = await select_records(db, f"number = ANY($1::integer[]) {order}", list(epochs))
    return [(record, epochs[record.number]) for record in records]


async def request(db: Db, number: int, action: str, lease_s: float,
                  channel: str) -> str | None:
    """Ask the live node holding this unfinished job for ``action``; its node id, or
    None when no live node holds it.  The node is told on ``channel``.  Actions
    asked before the holder read them are kept in order, comma-separated (a
    cancel right after a resume must not replace it unread)."""
    async with db.transaction():
        node_id: str | None = await db.fetchval(
            "UPDATE jobs SET requested = concat_ws(',', requested, $3::text) WHERE number = $2 "
            f"AND status <> ALL($4::text[]) AND node_id IN ({_LIVE}) RETURNING node_id",
            lease_s, number, action, FINAL_STATES)
        if node_id is not None:
            await db.execute("SELECT pg_notify($1, $2)", channel, node_id)
        return node_id


async def take_requests(db: Db, node_id: str,
                        releasing: Sequence[int] = ()) -> list[tuple[int, str]]:
    """The actions asked of this node's jobs since it last looked (cleared now),
    but those of the jobs it is letting go of (``releasing``).

    An action asked just before the holder let go of the job goes back to it
    with the release (``RELEASE``), for it to pass on, or stays with the job.
    One left on a job nobody holds (by a node that stopped) is the next
    holder's: ``claim`` and ``take`` keep it, and say so, for that node to
    read it here."""
    rows = await db.fetch(
        "UPDATE jobs j SET requested = NULL FROM (SELECT number, requested FROM jobs "
        "WHERE node_id = $1 AND requested IS NOT NULL AND number <> ALL($2::integer[]) "
        "FOR UPDATE) AS old WHERE j.number = old.number RETURNING j.number, old.requested",
        node_id, list(releasing))
    return [(row[0], row[1]) for row in rows]


async def put_back_requests(db: Db, requests: Sequence[tuple[int, str]]) -> None:
    """Give back (number, actions) read from jobs this node let go of meanwhile:
    before any asked since, for whoever holds each job next (or now: it reads
    them at its next look)."""
    await db.execute(
        "UPDATE jobs j SET requested = concat_ws(',', b.actions, j.requested) "
        "FROM unnest($1::integer[], $2::text[]) AS b(number, actions) "
        "WHERE j.number = b.number AND j.status <> ALL($3::text[])",
        [number for number, _ in requests], [actions for _, actions in requests],
        FINAL_STATES)


async def reap(db: Db, schema: str, node_id: str, lease_s: float, work_channel: str,
               sweep: bool) -> tuple[list[str], list[int], list[tuple[JobRecord, int]]]:
    """Declare the nodes whose heartbeat is older than the lease dead (one reaper
    at a time); let go of their waiting jobs and hold their running ones here.
    Returns the dead nodes' names, the numbers let go, and the jobs taken over
    (with their epochs); nothing when another node is reaping.  Other nodes
    hear of the jobs let go on ``work_channel``.  The jobs are looked for only
    when a node died, or when asked to ``sweep`` (for jobs held under an id no
    node has, such as a claim by a node that did not know it was declared dead)."""
    async with db.transaction():
        if not await db.fetchval("SELECT pg_try_advisory_xact_lock("
                                 "hashtext('jobmonitor reaper ' || $1))", schema):
            return [], [], []
        dead = await db.fetch("DELETE FROM nodes WHERE heartbeat < now() - "
                              "make_interval(secs => $1) RETURNING name", lease_s)
        if not dead and not sweep:
            return [], [], []
        orphaned = ("node_id IS NOT NULL AND node_id <> $1 AND "
                    "NOT EXISTS (SELECT 1 FROM nodes n WHERE n.node_id = jobs.node_id)")
        released = await db.fetch(
            f"UPDATE jobs SET node_id = NULL, epoch = epoch + 1, requested = NULL "
            f"WHERE {orphaned} AND status <> ALL($2::text[]) RETURNING number",
            node_id, RUNNING_STATES)
        held = await db.fetch(
            f"UPDATE jobs SET node_id = $1, epoch = epoch + 1, requested = NULL "
            f"WHERE {orphaned} AND status = ANY($2::text[]) RETURNING number, epoch",
            node_id, RUNNING_STATES)
        taken = await _held_records(db, held, "ORDER BY number")
        if released:
            await db.execute("SELECT pg_notify($1, '')", work_channel)
    return [row[0] for row in dead], [row[0] for row in released], taken


async def strays(db: Db, node_id: str, known: list[int], work_channel: str
                 ) -> tuple[list[int], list[tuple[JobRecord, int]]]:
    """The jobs held by this node that it does not know it holds (a claim or take
    whose answer was lost with its connection): let go of the waiting ones, and
    hold the running ones anew (returned with their new epochs, to recover)."""
    async with db.transaction():
        released = await db.fetch(
            "UPDATE jobs SET node_id = NULL, epoch = epoch + 1, requested = NULL "
            "WHERE node_id = $1 AND number <> ALL($2::integer[]) "
            "AND status <> ALL($3::text[]) RETURNING number", node_id, known, RUNNING_STATES)
        held = await db.fetch(
            "UPDATE jobs SET epoch = epoch + 1, requested = NULL "
            "WHERE node_id = $1 AND number <> ALL($2::integer[]) "
            "AND status = ANY($3::text[]) RETURNING number, epoch", node_id, known,
            RUNNING_STATES)
        taken = await _held_records(db, held, "ORDER BY number")
        if released:
            await db.execute("SELECT pg_notify($1, '')", work_channel)
    return [row[0] for row in released], taken
