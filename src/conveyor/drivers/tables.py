"""The queue's tables, as SQLAlchemy Core tables.

Times are whole epoch seconds in UTC, computed by the application, never by
the database server's clock or time zone.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Connection

from conveyor.config import QueueSettings

# SQLite only makes INTEGER PRIMARY KEY an alias of the rowid; MySQL's TEXT
# stops at 64 KiB, which a payload may outgrow.
_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_LongText = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
# Queue names match exactly: MySQL's default collations would let a worker on
# "mail" take jobs of "Mail" or "maïl". (Names with surrounding white space,
# which a PAD SPACE collation would still merge, are refused at push.)
_QueueName = sa.String(255).with_variant(
    mysql.VARCHAR(255, collation="utf8mb4_bin"), "mysql", "mariadb"
)


CLAIM_COLUMNS = ("queue", "reserved_at", "id", "available_at")


def claim_index(table: str) -> str:
    return f"ix_{table}_claim"


def superseded_index(table: str) -> str:
    """The claim index of versions before ``available_at`` joined it."""
    return f"ix_{table}_queue"


@dataclass(frozen=True)
class QueueTables:
    metadata: sa.MetaData
    jobs: sa.Table
    failed: sa.Table
    workers: sa.Table


def queue_tables(settings: QueueSettings) -> QueueTables:
    metadata = sa.MetaData()
    jobs = sa.Table(
        settings.table,
        metadata,
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("queue", _QueueName, nullable=False),
        sa.Column("payload", _LongText, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, default=0),
        sa.Column("reserved_at", sa.BigInteger, nullable=True),
        sa.Column("available_at", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("reservation", sa.String(32), nullable=True),
        # The worker holding it, so a dead worker's jobs can be released as
        # soon as its heartbeat stops. Not indexed: it is searched only when
        # a worker died, and an index would cost every claim a write.
        sa.Column("reserved_by", sa.String(32), nullable=True),
        # How many times a worker died while running it (poison jobs).
        sa.Column("crashes", sa.Integer, nullable=False, default=0, server_default="0"),
        # Serves the claim: the oldest ready job of a queue is the first
        # entry under (queue, NULL), with no sort of the backlog; leases that
        # ran out are a short range of reserved_at. available_at rides along
        # so that neither the claim's due-time check nor ``queue status``'s
        # counts read the rows themselves (see ``upgrade_indexes``).
        sa.Index(claim_index(settings.table), *CLAIM_COLUMNS),
        # PostgreSQL cannot read "reserved_at IS NULL" as an equality, so it
        # would sort every ready row by id; a partial index hands it the
        # ready jobs of a queue in id order.
        sa.Index(
            f"ix_{settings.table}_ready",
            "queue",
            "id",
            postgresql_where=sa.text("reserved_at IS NULL"),
        ).ddl_if(dialect="postgresql"),
        # Without AUTOINCREMENT SQLite hands out the ids of deleted rows
        # again, and a log's "#12" would name two different jobs.
        sqlite_autoincrement=True,
    )
    failed = sa.Table(
        settings.failed_table,
        metadata,
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("uuid", sa.String(36), nullable=False, unique=True),
        sa.Column("queue", _QueueName, nullable=False),
        sa.Column("payload", _LongText, nullable=False),
        sa.Column("exception", _LongText, nullable=False),
        sa.Column("failed_at", sa.BigInteger, nullable=False),
        sqlite_autoincrement=True,
    )
    workers = sa.Table(
        settings.workers_table,
        metadata,
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("queues", sa.String(1000), nullable=False),
        sa.Column("started_at", sa.BigInteger, nullable=False),
        sa.Column("heartbeat_at", sa.BigInteger, nullable=False),
        sa.Column("current_job", sa.BigInteger, nullable=True),
        sa.Column("stop_requested", sa.Boolean, nullable=False, default=False),
    )
    return QueueTables(metadata, jobs, failed, workers)


def upgrade_indexes(connection: Connection, jobs: sa.Table) -> None:
    """Give a jobs table made by an earlier version the claim index it
    lacks, and drop the one that index replaces (every index costs each
    push and claim a write). A no-op on a table this version made.

    Building the index keeps pushes waiting while it runs, except on
    MariaDB/MySQL, which builds it online: once, 1 to 5 s at 1,000,000 jobs
    on a busy 2-core machine."""
    present = {index["name"] for index in sa.inspect(connection).get_indexes(jobs.name)}
    claim = claim_index(jobs.name)
    if claim not in present:
        for index in jobs.indexes:
            if index.name == claim:
                index.create(connection)
    old = superseded_index(jobs.name)
    if old in present:
        # A stand-in of the old index on a stand-in table, so that the real
        # table's metadata never holds it (create_all would build it again).
        stand_in = sa.Table(jobs.name, sa.MetaData(), sa.Column("queue", _QueueName))
        sa.Index(old, stand_in.c.queue).drop(connection)
