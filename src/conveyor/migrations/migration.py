"""What a migration file subclasses, and the helpers it is handed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, CursorResult

if TYPE_CHECKING:
    # Alembic is imported only when a migration runs, which keeps status fast.
    from alembic.operations import Operations

Params = Mapping[str, Any] | Sequence[Mapping[str, Any]]


class Database:
    """Raw SQL for a migration, as ``self.db``, on the migration's own
    connection and inside its transaction.

    Under ``--pretend`` nothing reaches the database: each statement is
    written to the pretend output instead, and ``execute`` returns ``None``.
    """

    def __init__(
        self,
        connection: Connection | None,
        *,
        dialect: sa.Dialect,
        folder: Path,
        pretend_output: IO[str] | None = None,
    ) -> None:
        self._connection = connection
        self._dialect = dialect
        self._folder = folder
        self._pretend_output = pretend_output

    def execute(
        self, sql: str, params: Params | None = None
    ) -> CursorResult[Any] | None:
        """Run one statement, with ``:name`` placeholders bound from ``params``
        (a mapping, or a list of mappings to run it once per item)."""
        statement = sa.text(sql)
        if self._pretend_output is not None:
            self._pretend(_render(statement, params, self._dialect))
            return None
        assert self._connection is not None
        if params is None:
            return self._connection.execute(statement)
        if isinstance(params, Mapping):
            return self._connection.execute(statement, dict(params))
        return self._connection.execute(statement, [dict(p) for p in params])

    def execute_script(self, script: str | Path) -> int:
        """Run every statement of a multi-statement SQL script and return how
        many ran.

        ``script`` is SQL text, or a path to a ``.sql`` file (a ``Path``, or a
        string ending in ``.sql``), relative paths being taken from the
        migration's folder. Statements go to the driver as written: no
        placeholders are bound, so ``%`` and ``:`` need no escaping.
        """
        # sqlparse is loaded by the first script, not by every command that
        # imports this module (status does, to check pending files).
        from conveyor.migrations.script import split_statements

        statements = split_statements(self._read_script(script))
        for statement in statements:
            if self._pretend_output is not None:
                self._pretend(statement)
                continue
            assert self._connection is not None
            self._connection.exec_driver_sql(
                statement, execution_options={"no_parameters": True}
            )
        return len(statements)

    def _read_script(self, script: str | Path) -> str:
        is_path = isinstance(script, Path) or (
            "\n" not in script and script.strip().endswith(".sql")
        )
        if not is_path:
            return str(script)
        path = self._folder / Path(script)
        return path.read_text(encoding="utf-8-sig")

    def _pretend(self, statement: str) -> None:
        assert self._pretend_output is not None
        self._pretend_output.write(f"{statement.strip()};\n\n")


def _render(
    statement: sa.TextClause, params: Params | None, dialect: sa.Dialect
) -> str:
    """The statement with its values inlined, for ``--pretend`` output."""
    if params is None:
        return str(statement)
    rows = [params] if isinstance(params, Mapping) else list(params)
    rendered = []
    for row in rows:
        bound = statement.bindparams(**dict(row))
        try:
            compiled = bound.compile(
                dialect=dialect, compile_kwargs={"literal_binds": True}
            )
            rendered.append(str(compiled))
        except sa.exc.CompileError:
            rendered.append(f"{statement} -- with {dict(row)!r}")
    return ";\n".join(rendered)


class Migration:
    """One schema change, undone by its ``down()``.

    Subclass it in a file of the migrations folder and write ``up()`` and
    ``down()`` with what the runner hands over:

    ``self.db``
        a :class:`Database` for raw SQL and SQL scripts;
    ``self.schema``
        Alembic's ``Operations`` on the same connection, for DDL that works on
        every database (``create_table``, ``add_column``, and
        ``batch_alter_table`` for changes SQLite can only make by copying);
    ``self.dialect``
        ``"sqlite"``, ``"postgresql"`` or ``"mysql"`` (MariaDB too), for the
        rare branch that must differ.

    The runner builds the instance; do not override ``__init__``.
    """

    def __init__(self, *, db: Database, schema: Operations, dialect: str) -> None:
        self.db = db
        self.schema = schema
        self.dialect = dialect

    def up(self) -> None:
        """Make the change."""
        raise NotImplementedError(f"{type(self).__name__} has no up()")

    def down(self) -> None:
        """Undo what ``up()`` did."""
        raise NotImplementedError(f"{type(self).__name__} has no down()")

    @classmethod
    def can_roll_back(cls) -> bool:
        """Whether the class defines its own ``down()``."""
        return cls.down is not Migration.down
