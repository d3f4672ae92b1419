"""Importing migration files, each in a module namespace of its own, so two
files may declare classes of the same name without clashing."""

from __future__ import annotations

import importlib.util
import sys
import traceback
from types import ModuleType

from conveyor.exceptions import MigrationFileError
from conveyor.migrations.discovery import MigrationFile
from conveyor.migrations.migration import Migration

_MODULE_PREFIX = "conveyor_migrations."


def check_syntax(file: MigrationFile) -> None:
    """Compile the file without running it, naming the line of a syntax
    error."""
    try:
        source = file.path.read_bytes()
        compile(source, str(file.path), "exec", dont_inherit=True)
    except SyntaxError as exc:
        raise MigrationFileError(
            f"{file.path}:{exc.lineno}: syntax error: {exc.msg}"
        ) from exc
    except OSError as exc:
        raise MigrationFileError(f"{file.path}: cannot be read: {exc}") from exc


def load_migration_class(file: MigrationFile) -> type[Migration]:
    """Import ``file`` and return the one ``Migration`` subclass it defines."""
    module = _import(file)
    classes = [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, Migration)
        and value is not Migration
        and value.__module__ == module.__name__
    ]
    if not classes:
        raise MigrationFileError(
            f"{file.path}: defines no migration class "
            "(a subclass of conveyor.Migration)"
        )
    if len(classes) > 1:
        names = ", ".join(sorted(c.__name__ for c in classes))
        raise MigrationFileError(
            f"{file.path}: defines {len(classes)} migration classes ({names}); "
            "keep one per file"
        )
    return classes[0]


def _import(file: MigrationFile) -> ModuleType:
    module_name = _MODULE_PREFIX + file.name
    spec = importlib.util.spec_from_file_location(module_name, file.path)
    if spec is None or spec.loader is None:
        raise MigrationFileError(f"{file.path}: cannot be imported")
    module = importlib.util.module_from_spec(spec)
    # Registered before running, as importlib does, so dataclasses and
    # pickling inside the file can find their module.
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        sys.modules.pop(module_name, None)
        raise MigrationFileError(
            f"{file.path}:{exc.lineno}: syntax error: {exc.msg}"
        ) from exc
    except Exception as exc:
        sys.modules.pop(module_name, None)
        line = line_in_file(exc, file)
        where = f"{file.path}:{line}" if line else str(file.path)
        raise MigrationFileError(
            f"{where}: cannot import: {type(exc).__name__}: {exc}"
        ) from exc
    return module


def line_in_file(exc: BaseException, file: MigrationFile) -> int | None:
    """The deepest line of ``file`` in the traceback of ``exc``."""
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == str(file.path):
            line = frame.lineno
    return line
