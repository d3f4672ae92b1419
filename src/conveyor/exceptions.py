"""Every error Conveyor raises on purpose.

::

    ConveyorError                   base; the CLI prints its message as one line
    ├── ConfigError                 a settings file, option or URL that cannot work
    │   └── DatabaseRefused         a server that refuses the database or user named
    ├── DatabaseError               the database cannot be reached or refused a query
    ├── QueueError                  anything the queue refuses
    │   ├── PayloadError            job data JSON cannot hold, or a payload row
    │   │                           that cannot be read
    │   └── JobNotFound             a job name no job folder or package defines
    └── MigrationError              anything the migration tool refuses or fails at
        ├── MigrationFileError      a migration file that cannot be used as written
        ├── MigrationTableError     the bookkeeping table has a shape we do not own
        ├── MigrationLockTimeout    another run held the migration lock too long
        └── MigrationFailed         a migration's up() or down() raised

Errors coming from SQLAlchemy or a driver are wrapped in one of these with the
original chained as ``__cause__``, so ``-v`` can still show where they began.
"""

from __future__ import annotations


class ConveyorError(Exception):
    """Base of every error Conveyor raises on purpose."""


class ConfigError(ConveyorError):
    """Raised when a settings file, an option or a database URL cannot work."""


class DatabaseRefused(ConfigError):
    """Raised when the server answers but refuses the settings: a database
    or user that does not exist, a wrong password. Waiting would not help,
    unlike a server that is down."""


class DatabaseError(ConveyorError):
    """Raised when the database cannot be reached or rejects a query."""


class QueueError(ConveyorError):
    """Base of the errors raised by the queue."""


class PayloadError(QueueError):
    """Raised at push time for data JSON cannot hold (naming the key), and by
    a worker for a stored payload it cannot read."""


class JobNotFound(QueueError):
    """Raised when a job name is not defined in the configured job folders or
    packages; the worker never imports anything else."""


class MigrationError(ConveyorError):
    """Base of the errors raised by the migration tool."""


class MigrationFileError(MigrationError):
    """Raised when a migration file cannot be used: it does not compile or
    import, defines no migration class or two, duplicates another file's
    name, is missing for a recorded migration, or has no ``down()``."""


class MigrationTableError(MigrationError):
    """Raised when the migrations table exists with columns we do not own,
    such as CodeIgniter 3's one-row ``version`` table."""


class MigrationLockTimeout(MigrationError):
    """Raised when another run holds the migration lock past the timeout."""


class MigrationFailed(MigrationError):
    """Raised when a migration's ``up()`` or ``down()`` raised.

    ``reason`` is the error alone, without the file; ``statement`` is the SQL
    that failed, when the failure came from the
    database, and ``committed`` how many statements before it are known to
    have been committed anyway (only ever non-zero on MySQL and MariaDB, whose
    DDL commits itself).
    """

    def __init__(
        self,
        message: str,
        *,
        migration: str,
        reason: str,
        statement: str | None = None,
        committed: int = 0,
    ) -> None:
        super().__init__(message)
        self.migration = migration
        self.reason = reason
        self.statement = statement
        self.committed = committed
