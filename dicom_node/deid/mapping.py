"""What de-identification needs of a pseudonym mapping store: record the pseudonyms given out,
and find the originals of pseudonyms. The index implements it (`index.pseudonyms`); this package
only names the shape, so it stays free of databases."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol


class MappingStore(Protocol):
    """Pseudonym -> original, written as pseudonyms are given out, read to re-identify results."""

    def save(self, issued: dict[str, tuple[str, str]]) -> None:
        """Record ``{pseudonym: (original, kind)}`` durably (before any copy leaves)."""

    def originals(self, values: Iterable[str]) -> dict[str, str]:
        """The originals of those ``values`` that are pseudonyms of this node."""
