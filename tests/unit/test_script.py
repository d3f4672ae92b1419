"""Splitting SQL scripts."""

from __future__ import annotations

from conveyor.migrations.script import commits_implicitly, split_statements


def test_split_respects_strings_comments_and_quoted_names() -> None:
    script = (
        "\ufeff-- header; with a semicolon\n"
        "CREATE TABLE \"a;b\" (x TEXT DEFAULT ';');\n"
        "/* block; comment */\n"
        "INSERT INTO t VALUES ('it''s; fine');\n"
        "-- trailing comment only\n"
    )

    statements = split_statements(script)

    assert len(statements) == 2
    assert statements[0].endswith("CREATE TABLE \"a;b\" (x TEXT DEFAULT ';')")
    assert statements[1].endswith("INSERT INTO t VALUES ('it''s; fine')")


def test_implicit_commits_are_recognised_past_comments() -> None:
    assert commits_implicitly("/* why */ create table t (id int)")
    assert commits_implicitly("  ALTER TABLE t ADD x INT")
    assert not commits_implicitly("-- note\nINSERT INTO t VALUES (1)")
    assert not commits_implicitly("")
