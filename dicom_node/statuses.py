"""DIMSE status codes, named once (PS3.7 Annex C, PS3.4 B.2.3, C.4 and GG.4.2) for the handlers,
the SCU, the ingest path and STOW-RS. The Cxxx codes past C000 are ours, within the "Cannot
understand" range the standard leaves to the implementation."""

from __future__ import annotations

SUCCESS = 0x0000
#: PS3.7 Annex C "Invalid Object Instance": a UID that breaks the UID construction rules
INVALID_UID = 0x0117
PENDING = 0xFF00
#: Storage warnings a peer may answer for an object it did keep
COERCION_OF_DATA_ELEMENTS = 0xB000
ELEMENTS_DISCARDED = 0xB006
DATASET_DOES_NOT_MATCH_SOP_CLASS_WARNING = 0xB007
STORED_WITH_WARNING = frozenset(
    {COERCION_OF_DATA_ELEMENTS, ELEMENTS_DISCARDED, DATASET_DOES_NOT_MATCH_SOP_CLASS_WARNING}
)
#: C-MOVE/C-GET: one or more sub-operations failed (same code as the coercion warning)
SUB_OPERATION_FAILED = 0xB000
OUT_OF_RESOURCES = 0xA700
INDEX_UNAVAILABLE = 0xA701
MOVE_DESTINATION_UNKNOWN = 0xA801
DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS = 0xA900
CANNOT_UNDERSTAND = 0xC000
UNABLE_TO_PROCESS = 0xC000
UID_MISSING = 0xC001
UID_MISMATCH = 0xC002
DUPLICATE_REJECTED = 0xC003
#: STOW-RS to /studies/{uid} of an instance of another study (dcm4chee's code for it)
STUDY_MISMATCH = 0xC409
