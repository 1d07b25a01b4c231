"""Person names in the form case-insensitive matching compares (PS3.4 C.2.2.2.4).

SQLite's lower() and LIKE fold ASCII letters only (`müller*` would miss `MÜLLER`), so the index
keeps a folded copy of each name, made here in Python with full Unicode case folding, and
matches it case-sensitively against a pattern folded the same way, on every database alike.
"""

from __future__ import annotations

import unicodedata


def folded(name: str) -> str:
    """Canonical caseless form of `name` (Unicode 3.13 D145: NFD, case fold, then NFC to keep it
    compact)."""
    return unicodedata.normalize("NFC", unicodedata.normalize("NFD", name).casefold())
