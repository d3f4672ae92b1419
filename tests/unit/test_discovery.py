"""Reading a migrations folder without importing it."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.exceptions import MigrationFileError
from conveyor.migrations.discovery import check_unique_names, class_name_for, discover


def touch(folder: Path, *names: str) -> None:
    folder.mkdir(exist_ok=True)
    for name in names:
        (folder / name).write_text("")


def test_files_in_name_order_and_strays_skipped(tmp_path: Path) -> None:
    touch(
        tmp_path,
        "2024_05_01_120000_b.py",
        "2024_05_01_120000_a.py",
        "2023_12_31_235959_first.py",
        "notes.txt",
        "2024_bad.py",
        "2024_01_01_000000_Upper.py",
        "__init__.py",
        ".hidden.py",
    )
    (tmp_path / "__pycache__").mkdir()

    found = discover(tmp_path)

    assert [f.name for f in found.files] == [
        "2023_12_31_235959_first",
        "2024_05_01_120000_a",
        "2024_05_01_120000_b",
    ]
    assert sorted(p.name for p in found.skipped) == [
        "2024_01_01_000000_Upper.py",
        "2024_bad.py",
        "notes.txt",
    ]


def test_missing_folder_is_empty(tmp_path: Path) -> None:
    found = discover(tmp_path / "nope")

    assert found.files == () and not found.folder_exists


def test_checksum_ignores_line_endings_bom_and_trailing_blanks(tmp_path: Path) -> None:
    a, b, c = (tmp_path / f"2024_01_01_00000{i}_x{i}.py" for i in range(3))
    a.write_bytes(b"def up():\n    pass\n")
    b.write_bytes(b"\xef\xbb\xbfdef up():  \r\n    pass\r\n\r\n")
    c.write_bytes(b"def up():\n    return\n")
    files = {f.path: f for f in discover(tmp_path).files}

    assert files[a].checksum == files[b].checksum
    assert files[a].checksum != files[c].checksum


def test_duplicate_names_after_the_timestamp_are_refused(tmp_path: Path) -> None:
    touch(tmp_path, "2024_01_01_000000_add_flag.py", "2024_02_01_000000_add_flag.py")

    with pytest.raises(MigrationFileError, match="duplicate migration name 'add_flag'"):
        check_unique_names(discover(tmp_path).files)


def test_class_names() -> None:
    assert class_name_for("create_users_table") == "CreateUsersTable"
    assert class_name_for("add_v2_to_items") == "AddV2ToItems"
