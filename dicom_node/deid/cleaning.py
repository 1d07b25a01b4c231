"""Action C of PS3.15 Table E.1-1, "clean": keep the value's meaning, not the patient's identity.

Free text (descriptions, comments) keeps its words except any that repeat an identifying value
of the same dataset: the values the profile removes, empties or replaces elsewhere (names, IDs,
accession number, birth date...). Dates move back by the patient's offset, so intervals between
a patient's studies survive; times of day are kept. Binary values cannot be cleaned: they are
emptied.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import date, timedelta

from pydicom import Dataset
from pydicom.dataelem import DataElement
from pydicom.multival import MultiValue

from .basic_profile import Action

SCRUBBED = "XXXX"
#: Value representations whose values are free text that may name someone.
TEXT_VRS = {"LO", "SH", "ST", "LT", "UT", "UC", "PN"}
#: Identifying values shorter than this are not searched for in text (too many false matches).
MIN_IDENTIFIER_LENGTH = 3
_IDENTIFYING_VRS = {"PN", "LO", "SH", "DA", "AE"}
_BINARY_VRS = {"OB", "OW", "OF", "OD", "OL", "OV", "UN"}


def _values(element: DataElement) -> list[str]:
    value = element.value
    values = value if isinstance(value, MultiValue | list) else [value]
    return [str(v) for v in values if v not in (None, "")]


def _spellings(value: str, vr: str) -> set[str]:
    """The ways a value may appear in text: a name in full and by component, a date formatted."""
    spellings = {value.strip()}
    if vr == "PN":
        spellings |= {part.strip() for part in re.split(r"[\^=]", value)}
    if vr == "DA" and re.fullmatch(r"\d{8}", value):
        y, m, d = value[:4], value[4:6], value[6:]
        spellings |= {f"{y}-{m}-{d}", f"{d}.{m}.{y}", f"{m}/{d}/{y}", f"{d}/{m}/{y}"}
    return {s for s in spellings if len(s) >= MIN_IDENTIFIER_LENGTH}


def identifying_values(dataset: Dataset, action: Callable[[int], Action]) -> set[str]:
    """Every value, at any depth, that the profile removes, empties or replaces."""
    found: set[str] = set()

    def visit(_: Dataset, element: DataElement) -> None:
        if element.VR in _IDENTIFYING_VRS and action(int(element.tag)) in (
            Action.REMOVE,
            Action.EMPTY,
            Action.DUMMY,
        ):
            for value in _values(element):
                found.update(_spellings(value, element.VR))

    dataset.walk(visit)
    return found


def shift_date(value: str, days: int) -> str:
    """A DA value ``days`` earlier; an unreadable or partial date becomes empty (cannot be kept)."""
    try:
        moved = date(int(value[:4]), int(value[4:6]), int(value[6:8])) - timedelta(days=days)
    except ValueError:
        return ""
    return moved.strftime("%Y%m%d") if len(value) == 8 else ""


class Cleaner:
    """Cleans values for one dataset: its identifying values, its patient's date offset."""

    def __init__(self, identifiers: Iterable[str], date_offset_days: int) -> None:
        words = sorted(set(identifiers), key=len, reverse=True)
        self._pattern = (
            re.compile(r"(?<!\w)(?:" + "|".join(map(re.escape, words)) + r")(?!\w)", re.IGNORECASE)
            if words
            else None
        )
        self.date_offset_days = date_offset_days

    def text(self, value: str) -> str:
        return self._pattern.sub(SCRUBBED, value) if self._pattern else value

    def _one(self, vr: str, value: str) -> str:
        if vr == "DA":
            return shift_date(value, self.date_offset_days)
        if vr == "DT":  # the date part moves; time of day and UTC offset stay
            return (
                shift_date(value[:8], self.date_offset_days) + value[8:] if len(value) >= 8 else ""
            )
        if vr in TEXT_VRS:
            return self.text(value)
        return value  # times of day, codes, numbers: nothing to clean

    def clean(self, element: DataElement) -> None:
        if element.value in (None, "", b""):
            return
        if element.VR in _BINARY_VRS:
            element.value = b""
            return
        if element.VR not in TEXT_VRS | {"DA", "DT"}:
            return
        cleaned = [self._one(element.VR, value) for value in _values(element)]
        element.value = cleaned if element.VM > 1 else cleaned[0]
