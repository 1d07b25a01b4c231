"""Case-sensitive wildcard matching (`*`, `?`) of PS3.4 C.2.2.2.4 on SQLite and PostgreSQL.

SQLite's LIKE ignores the case of ASCII letters, so `PatientID=abc12?` matched `ABC123` and a
retrieve delivered another patient's studies; its GLOB is case-sensitive and takes `*` and `?`
as they are. PostgreSQL's LIKE is case-sensitive. The pattern is converted at bind time, when
the dialect is known, so one statement serves both.
"""

from __future__ import annotations

from sqlalchemy import Boolean, ColumnElement, String, TypeDecorator, literal
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement


def has_wildcard(value: str) -> bool:
    return "*" in value or "?" in value


class _DicomPattern(TypeDecorator):
    """A DICOM wildcard pattern, bound as the dialect's GLOB or LIKE pattern."""

    impl = String
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect) -> str | None:
        if value is None:
            return None
        if dialect.name == "sqlite":
            return value.replace("[", "[[]")  # GLOB's only special character DICOM lacks
        escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return escaped.replace("*", "%").replace("?", "_")


class _WildcardMatch(FunctionElement):
    type = Boolean()
    inherit_cache = True
    # A comparison already: SQLite must not get `... GLOB ? = 1`, which no index serves.
    _is_implicitly_boolean = True


def wildcard_match(column: ColumnElement, pattern: str) -> ColumnElement[bool]:
    """`column` matches the DICOM wildcard `pattern`, case-sensitively."""
    return _WildcardMatch(column, literal(pattern, type_=_DicomPattern()))


@compiles(_WildcardMatch)
def _like(element: _WildcardMatch, compiler, **kw) -> str:
    column, pattern = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"{column} LIKE {pattern} ESCAPE '\\'"


@compiles(_WildcardMatch, "sqlite")
def _glob(element: _WildcardMatch, compiler, **kw) -> str:
    column, pattern = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"{column} GLOB {pattern}"
