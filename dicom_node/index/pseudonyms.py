"""The pseudonym mapping store (`deid.mapping.MappingStore`), in the node's index database: it
never leaves the node and is never logged."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.engine import Engine

from .database import dialect_insert
from .schema import pseudonyms


class PseudonymTable:
    """Pseudonym -> original, written as pseudonyms are given out, read to re-identify results."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def save(self, issued: dict[str, tuple[str, str]]) -> None:
        if not issued:
            return
        rows = [{"pseudonym": p, "original": o, "kind": k} for p, (o, k) in issued.items()]
        insert = dialect_insert(self.engine)(pseudonyms).on_conflict_do_nothing()
        with self.engine.begin() as connection:
            connection.execute(insert, rows)

    def originals(self, values: Iterable[str]) -> dict[str, str]:
        """The originals of those ``values`` that are pseudonyms of this node."""
        wanted = sorted(set(values))
        found: dict[str, str] = {}
        with self.engine.connect() as connection:
            for start in range(0, len(wanted), 500):
                query = select(pseudonyms.c.pseudonym, pseudonyms.c.original).where(
                    pseudonyms.c.pseudonym.in_(wanted[start : start + 500])
                )
                found.update((row[0], row[1]) for row in connection.execute(query))
        return found
