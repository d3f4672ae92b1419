"""Finding job classes by name: in job folders and in importable packages,
and nowhere else."""

from __future__ import annotations

import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor.exceptions import ConfigError, JobNotFound
from conveyor.queue.registry import JobRegistry


def write(path: Path, source: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source), encoding="utf-8")


@pytest.fixture
def package(tmp_path: Path) -> Iterator[str]:
    """An importable package of a unique name with a job in a sub-module,
    and a helper class without ``handle`` that is not a job."""
    name = f"shop_{uuid.uuid4().hex[:8]}"
    write(tmp_path / "site" / name / "__init__.py", "")
    write(tmp_path / "site" / name / "billing" / "__init__.py", "")
    write(
        tmp_path / "site" / name / "billing" / "charges.py",
        """
        class ChargeCard:
            def handle(self, data):
                return data

        class Receipt:
            pass
        """,
    )
    sys.path.insert(0, str(tmp_path / "site"))
    try:
        yield name
    finally:
        sys.path.remove(str(tmp_path / "site"))
        for module in [m for m in sys.modules if m.split(".")[0] == name]:
            del sys.modules[module]


def test_jobs_are_found_in_the_sub_modules_of_a_package(
    package: str, tmp_path: Path
) -> None:
    registry = JobRegistry.load([package], tmp_path)

    assert registry.names() == ["ChargeCard"]
    assert registry.resolve("ChargeCard").__module__ == f"{package}.billing.charges"


def test_jobs_are_found_in_a_folder_and_a_package_together(
    package: str, tmp_path: Path
) -> None:
    write(
        tmp_path / "jobs" / "mail.py",
        """
        class SendWelcomeEmail:
            def handle(self, data):
                pass
        """,
    )

    registry = JobRegistry.load(["jobs", package], tmp_path)

    assert registry.names() == ["ChargeCard", "SendWelcomeEmail"]


def test_a_name_outside_the_sources_is_not_found_and_not_imported(
    package: str, tmp_path: Path
) -> None:
    registry = JobRegistry.load([package], tmp_path)

    with pytest.raises(JobNotFound, match="'os.system'"):
        registry.resolve("os.system")
    with pytest.raises(JobNotFound, match="'Receipt'"):
        registry.resolve("Receipt")


def test_a_class_name_defined_in_two_modules_is_refused(tmp_path: Path) -> None:
    job = """
        class Report:
            def handle(self, data):
                pass
    """
    write(tmp_path / "jobs" / "a.py", job)
    write(tmp_path / "jobs" / "b.py", job)

    with pytest.raises(ConfigError, match="job class Report is defined twice"):
        JobRegistry.load(["jobs"], tmp_path)


def test_a_source_that_is_neither_folder_nor_package_is_named(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError, match="'no/such dir' is neither a folder"):
        JobRegistry.load(["no/such dir"], tmp_path)
    with pytest.raises(ConfigError, match="cannot import package 'no_such_pkg_x'"):
        JobRegistry.load(["no_such_pkg_x"], tmp_path)


def test_a_job_module_that_fails_to_import_is_named(tmp_path: Path) -> None:
    write(tmp_path / "jobs" / "broken.py", "import no_such_module_x\n")

    with pytest.raises(ConfigError, match=r"broken\.py: cannot import job module"):
        JobRegistry.load(["jobs"], tmp_path)
