"""``--check-store`` for PostgreSQL: reach the database, and read every job back."""

from __future__ import annotations

import asyncpg

from ...errors import ConfigError
from ..sqlite.rows import JOB_COLUMNS, job_record, transaction_id_of
from . import sql
from .connect import Settings

__all__ = ["check_schema"]

#: Jobs read back per query.
PAGE = 1000


async def check_schema(settings: Settings) -> list[str]:
    """What is wrong with the jobs stored in the schema (none: an empty list).

    Raises:
        ConfigError: the database cannot be reached, the schema is missing, or it
            was made by a newer jobmonitor.
    """
    try:
        db = await asyncpg.connect(**settings.connect_kwargs())
    except Exception as exc:  # noqa: BLE001 - any failure: one line
        raise ConfigError(f"store: cannot connect to {settings.where}: {exc}") from None
    try:
        if await db.fetchval("SELECT to_regclass('meta')") is None:
            raise ConfigError(f"store: {settings.where} holds no jobmonitor tables")
        version = int(await db.fetchval("SELECT value FROM meta WHERE key = 'schema_version'"))
        if version > sql.SCHEMA_VERSION:
            raise ConfigError(f"store: schema {settings.schema} was made by a newer jobmonitor "
                              f"(version {version}, this one knows {sql.SCHEMA_VERSION})")
        return await _undecodable(db)
    except asyncpg.PostgresError as exc:
        raise ConfigError(f"store: cannot read {settings.where}: {exc}") from None
    finally:
        await db.close()


async def _undecodable(db: asyncpg.Connection[asyncpg.Record]) -> list[str]:
    found = []
    after = 0
    while True:
        rows = await db.fetch(f"SELECT {JOB_COLUMNS} FROM jobs WHERE number > $1 "
                              "ORDER BY number LIMIT $2", after, PAGE)
        for row in rows:
            try:
                job_record(tuple(row))
            except ValueError as exc:
                found.append(f"job {transaction_id_of(row[0])} does not decode: {exc}")
        if len(rows) < PAGE:
            return found
        after = rows[-1][0]
