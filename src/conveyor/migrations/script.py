"""Splitting SQL scripts into statements, with sqlparse rather than a regex,
so semicolons inside strings, comments and quoted names are left alone."""

from __future__ import annotations

import sqlparse
from sqlparse import tokens as T

# Statements after which MySQL and MariaDB commit whatever came before, and
# themselves, whatever transaction is open ("Statements That Cause an
# Implicit Commit" in the MySQL manual).
_IMPLICIT_COMMIT_KEYWORDS = {"CREATE", "ALTER", "DROP", "RENAME", "TRUNCATE"}


def split_statements(script: str) -> list[str]:
    """The statements of ``script``, without their ending semicolons, leaving
    out any that hold nothing but comments and white space."""
    script = script.lstrip("\ufeff")
    statements = sqlparse.split(script, strip_semicolon=True)
    return [s for s in statements if first_keyword(s) is not None]


def first_keyword(statement: str) -> str | None:
    """The first word of ``statement`` that is not a comment, upper-cased.

    The lexer is lazy, so this reads only the start of a long statement.
    """
    tokens = sqlparse.lexer.tokenize(statement)  # type: ignore[no-untyped-call]
    for ttype, value in tokens:
        if ttype in T.Whitespace or ttype in T.Comment or ttype is T.Newline:
            continue
        return str(value).upper()
    return None


def commits_implicitly(statement: str) -> bool:
    """Whether MySQL commits on its own when it runs ``statement``."""
    return first_keyword(statement) in _IMPLICIT_COMMIT_KEYWORDS
