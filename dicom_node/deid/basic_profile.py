"""The Basic Application Level Confidentiality Profile column of PS3.15 Table E.1-1.

The table itself is not typed here: it comes from dicom-anonymizer's copy of the standard's 2026c
edition (``dicomfields_2026c``), which that project regenerates from the standard's DocBook
source. This module turns it into one action per tag (or tag pattern, for repeating groups).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from dicomanonymizer.dicom_anonymization_databases import dicomfields_2026c as table

EDITION = "2026c"


class Action(StrEnum):
    """PS3.15 Table E.1-1 action codes (the combined ones resolved by :func:`resolve`)."""

    REMOVE = "X"
    EMPTY = "Z"
    DUMMY = "D"
    UID = "U"
    KEEP = "K"
    CLEAN = "C"  # only from an option column: see options.py


#: Combined codes: the action that keeps any IOD valid without knowing the attribute's type there.
#: "X unless Z is required" becomes Z, "... unless D is required" becomes D: an empty or dummy value
#: leaks nothing, and a Type 1 or 2 attribute is never removed. X/Z/U* keeps the sequence and
#: replaces the UIDs within it.
_LISTS = {
    "D_TAGS": Action.DUMMY,
    "Z_TAGS": Action.EMPTY,
    "X_TAGS": Action.REMOVE,
    "U_TAGS": Action.UID,
    "Z_D_TAGS": Action.DUMMY,
    "X_Z_TAGS": Action.EMPTY,
    "X_D_TAGS": Action.DUMMY,
    "X_Z_D_TAGS": Action.DUMMY,
    "X_Z_U_STAR_TAGS": Action.UID,
}


@dataclass(frozen=True)
class TagPattern:
    """A repeating-group entry such as (50xx,xxxx): the tag matches where ``mask`` bits agree."""

    tag: int
    mask: int

    def matches(self, tag: int) -> bool:
        return tag & self.mask == self.tag & self.mask


def _load() -> tuple[dict[int, Action], list[tuple[TagPattern, Action]]]:
    exact: dict[int, Action] = {}
    patterns: list[tuple[TagPattern, Action]] = []
    for name, action in _LISTS.items():
        for entry in getattr(table, name):
            if len(entry) == 2:
                exact[(entry[0] << 16) | entry[1]] = action
            else:
                group, element, group_mask, element_mask = entry
                pattern = TagPattern((group << 16) | element, (group_mask << 16) | element_mask)
                patterns.append((pattern, action))
    return exact, patterns


EXACT, PATTERNS = _load()


def action_for(tag: int) -> Action:
    """The profile's action for a (public) tag; attributes the table does not list are kept."""
    if tag in EXACT:
        return EXACT[tag]
    for pattern, action in PATTERNS:
        if pattern.matches(tag):
            return action
    return Action.KEEP
