"""Finding job classes by name, in the configured job folders and packages
only, so a payload can never make a worker import anything else."""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from conveyor.exceptions import ConfigError, JobNotFound

_PACKAGE_NAME = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_FOLDER_MODULE_PREFIX = "conveyor_jobs"


def is_job_class(value: Any) -> bool:
    return isinstance(value, type) and callable(getattr(value, "handle", None))


class JobRegistry:
    """Job classes by name (the class name), from folders and packages."""

    def __init__(self, classes: dict[str, type[Any]]) -> None:
        self._classes = classes

    @classmethod
    def load(cls, sources: Iterable[str], root: Path) -> JobRegistry:
        """Import every module of ``sources`` (folders relative to ``root``,
        or importable package names) and collect the job classes defined in
        them. Two classes of one name are refused."""
        classes: dict[str, type[Any]] = {}
        origins: dict[str, str] = {}
        for source in sources:
            for module in _modules_of(source, root):
                for name, value in vars(module).items():
                    if not is_job_class(value) or value.__module__ != module.__name__:
                        continue
                    where = getattr(module, "__file__", None) or module.__name__
                    if name in classes and classes[name] is not value:
                        raise ConfigError(
                            f"job class {name} is defined twice: in {origins[name]} "
                            f"and {where}; rename one"
                        )
                    classes[name] = value
                    origins[name] = str(where)
        return cls(classes)

    def resolve(self, name: str) -> type[Any]:
        try:
            return self._classes[name]
        except KeyError:
            raise JobNotFound(
                f"no job class named {name!r} in the job folders or packages"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._classes)


def _modules_of(source: str, root: Path) -> Iterator[ModuleType]:
    folder = root / source
    if folder.is_dir():
        yield from _folder_modules(folder)
    elif _PACKAGE_NAME.match(source):
        yield from _package_modules(source)
    else:
        raise ConfigError(
            f"jobs: {source!r} is neither a folder under {root} nor a package name"
        )


def _folder_modules(folder: Path) -> Iterator[ModuleType]:
    # The folder's parent goes on sys.path so job modules can import their
    # siblings the way the application does (``from jobs.mail import ...``).
    parent = str(folder.resolve().parent)
    if parent not in sys.path:
        sys.path.insert(0, parent)
    for path in sorted(folder.rglob("*.py")):
        if "__pycache__" in path.parts or path.name.startswith("."):
            continue
        relative = path.relative_to(folder).with_suffix("")
        dotted = ".".join(part for part in relative.parts if part != "__init__")
        module_name = f"{_FOLDER_MODULE_PREFIX}.{folder.name}.{dotted}".rstrip(".")
        yield _import_file(module_name, path)


def _import_file(module_name: str, path: Path) -> ModuleType:
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{path}: cannot be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(module_name, None)
        raise ConfigError(
            f"{path}: cannot import job module: {type(exc).__name__}: {exc}"
        ) from exc
    return module


def _package_modules(package_name: str) -> Iterator[ModuleType]:
    try:
        package = importlib.import_module(package_name)
    except ImportError as exc:
        raise ConfigError(
            f"jobs: cannot import package {package_name!r}: {exc}"
        ) from exc
    yield package
    for info in pkgutil.walk_packages(
        getattr(package, "__path__", []), prefix=f"{package_name}."
    ):
        yield importlib.import_module(info.name)
