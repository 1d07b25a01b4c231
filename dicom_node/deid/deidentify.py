"""Applying the Basic Application Level Confidentiality Profile to a dataset.

Every attribute, at every depth of every sequence, gets its Table E.1-1 action; private attributes
are removed; UIDs become keyed pseudonyms (so a series stays a series and references still
resolve); the patient becomes a keyed pseudonym in Patient ID and Patient's Name. The result says
what was done (Patient Identity Removed, De-identification Method and its code sequence).
Pixel data is left untouched: burned-in text is a separate decision.
"""

from __future__ import annotations

import copy

from pydicom import Dataset
from pydicom.dataelem import DataElement
from pydicom.sr.codedict import codes

from .basic_profile import EDITION, Action, action_for
from .pseudonyms import Pseudonymizer

DUMMY_TEXT = "ANONYMIZED"
#: Dummy values (action D) by value representation; text VRs not listed get DUMMY_TEXT.
DUMMY_BY_VR: dict[str, object] = {
    "DA": "19000101",
    "TM": "000000",
    "DT": "19000101000000",
    "AS": "000D",
    "IS": "0",
    "DS": "0",
    "US": 0,
    "SS": 0,
    "UL": 0,
    "SL": 0,
    "UV": 0,
    "SV": 0,
    "FL": 0.0,
    "FD": 0.0,
}
BINARY_VRS = {"OB", "OW", "OF", "OD", "OL", "OV", "UN"}
METHOD = f"PS3.15 Basic Profile {EDITION}; keyed pseudonyms"  # LO: 64 characters at most


def match_file_meta(dataset: Dataset) -> None:
    """Media Storage SOP Instance UID follows the dataset's (possibly replaced) SOP Instance UID."""
    meta = getattr(dataset, "file_meta", None)
    if meta is not None and "SOPInstanceUID" in dataset:
        meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID


class Deidentifier:
    """De-identifies datasets under one pseudonym key (one per node)."""

    def __init__(self, pseudonyms: Pseudonymizer) -> None:
        self.pseudonyms = pseudonyms

    def __call__(self, original: Dataset) -> Dataset:
        """A de-identified copy; ``original`` is not modified."""
        dataset = copy.deepcopy(original)
        patient = self.pseudonyms.patient(str(original.get("PatientID", "")))
        self._clean(dataset)
        dataset.PatientID = patient
        dataset.PatientName = patient
        dataset.PatientIdentityRemoved = "YES"
        dataset.DeidentificationMethod = METHOD
        profile = codes.DCM.BasicApplicationConfidentialityProfile
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator = profile.value, profile.scheme_designator
        item.CodeMeaning = profile.meaning
        dataset.DeidentificationMethodCodeSequence = [item]
        dataset.LongitudinalTemporalInformationModified = "REMOVED"
        match_file_meta(dataset)
        return dataset

    def _clean(self, dataset: Dataset) -> None:
        for tag in list(dataset.keys()):
            element = dataset[tag]
            if tag.is_private or (tag.element == 0 and tag.group != 0x0002):
                del dataset[tag]  # private data, and group lengths the edits would make wrong
                continue
            action = action_for(int(tag))
            if action is Action.REMOVE:
                del dataset[tag]
            elif action is Action.EMPTY:
                element.value = [] if element.VR == "SQ" else None
            elif element.VR == "SQ":  # D, U and K on a sequence: keep it, clean each item
                for item in element.value:
                    self._clean(item)
            elif action is Action.DUMMY or action is Action.UID:
                self._replace(element)

    def _replace(self, element: DataElement) -> None:
        if element.value is None or element.value == "":
            return
        if element.VR == "UI":
            values = element.value if element.VM > 1 else [element.value]
            pseudonyms = [self.pseudonyms.uid(str(v)) for v in values]
            element.value = pseudonyms if element.VM > 1 else pseudonyms[0]
        elif element.VR in BINARY_VRS:
            element.value = b""
        elif element.VR in DUMMY_BY_VR:
            element.value = DUMMY_BY_VR[element.VR]
        else:
            element.value = DUMMY_TEXT
