"""DICOM JSON (PS3.18 F.2) for values the index holds, without building pydicom datasets:
a QIDO-RS answer of a thousand studies is assembled from rows in a few milliseconds."""

from __future__ import annotations

import json
from functools import lru_cache

from pydicom.datadict import dictionary_VR, tag_for_keyword

DICOM_JSON = "application/dicom+json"
_NUMBERS = {"IS", "DS", "US", "SS", "UL", "SL", "FL", "FD", "UV", "SV"}


#: Both looked up for every attribute of every match (pydicom's dictionary lookups were a sixth
#: of a QIDO-RS search of a dozen studies); keywords are the dictionary's, a bounded set.
_CACHED_KEYWORDS = 4096


@lru_cache(maxsize=_CACHED_KEYWORDS)
def tag_key(keyword: str) -> str:
    """The JSON key of `keyword`: its tag as eight upper-case hex digits."""
    return f"{tag_for_keyword(keyword):08X}"


@lru_cache(maxsize=_CACHED_KEYWORDS)
def _vr(keyword: str) -> str:
    return dictionary_VR(keyword)


def element(keyword: str, value) -> dict:
    """`{"vr": ..., "Value": [...]}` for one attribute; empty values carry no `Value`."""
    vr = _vr(keyword)
    values = value if isinstance(value, list) else [value]
    values = [item for item in values if item is not None and item != ""]
    if not values:
        return {"vr": vr}
    if vr == "PN":
        return {"vr": vr, "Value": [{"Alphabetic": str(item)} for item in values]}
    if vr in _NUMBERS:
        return {"vr": vr, "Value": [_number(item) for item in values]}
    return {"vr": vr, "Value": [str(item) for item in values]}


def _number(item) -> int | float:
    if isinstance(item, int | float):
        return item
    text = str(item).strip()
    try:
        return int(text)
    except ValueError:
        return float(text)


def dump(value: list | dict) -> bytes:
    """A DICOM JSON body: compact, UTF-8."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
