"""Applying the Basic Application Level Confidentiality Profile, and its options, to a dataset.

Every attribute, at every depth of every sequence, gets its Table E.1-1 action (the Basic
Profile's, or a selected option's); private attributes are removed unless listed as safe; UIDs
become keyed pseudonyms (so a series stays a series and references still resolve); the patient
becomes a keyed pseudonym in Patient ID and Patient's Name. The result says what was done
(Patient Identity Removed, De-identification Method and its code sequence, Longitudinal Temporal
Information Modified). Pixel data is left untouched: burned-in text is a separate decision.
"""

from __future__ import annotations

import copy
import warnings

from pydicom import Dataset
from pydicom.dataelem import DataElement
from pydicom.tag import BaseTag

from .basic_profile import EDITION, Action, action_for
from .cleaning import Cleaner, identifying_values
from .options import option_actions, option_codes
from .pseudonyms import Pseudonymizer
from .settings import DateHandling, DeidentificationOptions

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
LONGITUDINAL = {
    DateHandling.REMOVE: "REMOVED",
    DateHandling.FULL: "UNMODIFIED",
    DateHandling.SHIFTED: "MODIFIED",
}


class DeidentificationError(ValueError):
    """The dataset cannot be de-identified safely: a sequence or a value does not parse, so
    nobody can tell what it holds. The original is left as it is."""


def match_file_meta(dataset: Dataset) -> None:
    """Media Storage SOP Instance UID follows the dataset's (possibly replaced) SOP Instance UID."""
    meta = getattr(dataset, "file_meta", None)
    if meta is not None and "SOPInstanceUID" in dataset:
        meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID


def _safe_private(entries: list[str]) -> set[tuple[int, str, int]]:
    """``"0019,GEMS_ACQU_01,1E"`` as (group, creator, element offset within the block)."""
    parsed = set()
    for entry in entries:
        group, creator, offset = entry.split(",")
        parsed.add((int(group, 16), creator.strip(), int(offset, 16)))
    return parsed


class Deidentifier:
    """De-identifies datasets under one pseudonym key (one per node) and one set of options."""

    def __init__(
        self, pseudonyms: Pseudonymizer, options: DeidentificationOptions | None = None
    ) -> None:
        self.pseudonyms = pseudonyms
        self.options = options or DeidentificationOptions()
        self._actions = option_actions(self.options)
        #: only an option that cleans needs the dataset's identifying values
        self._cleans = Action.CLEAN in self._actions.values()
        self._safe_private = _safe_private(self.options.safe_private)

    def action(self, tag: int) -> Action:
        """The action for a public tag under the profile and the selected options."""
        return self._actions.get(tag) or action_for(tag)

    def __call__(self, original: Dataset) -> Dataset:
        """A de-identified copy; ``original`` is not modified. Raises DeidentificationError."""
        with warnings.catch_warnings():
            # pydicom substitutes characters it cannot decode: text we cannot read, we cannot clean
            warnings.filterwarnings("error", message="Failed to decode", category=UserWarning)
            try:
                return self._deidentify(original)
            except (UserWarning, ValueError, TypeError, KeyError, NotImplementedError) as error:
                raise DeidentificationError(f"cannot be de-identified safely: {error}") from None

    def _deidentify(self, original: Dataset) -> Dataset:
        dataset = copy.deepcopy(original)
        patient_id = str(original.get("PatientID", ""))
        shifted = self.options.dates is DateHandling.SHIFTED
        cleaner = Cleaner(
            identifying_values(original, self.action) if self._cleans else (),
            self.pseudonyms.date_offset(patient_id) if shifted else 0,
        )
        patient = self.pseudonyms.patient(patient_id)
        self._clean(dataset, cleaner)
        dataset.PatientID = patient
        dataset.PatientName = patient
        dataset.PatientIdentityRemoved = "YES"
        methods = option_codes(self.options)
        dataset.DeidentificationMethod = [METHOD, *(code.meaning for code in methods[1:])]
        items = []
        for code in methods:
            item = Dataset()
            item.CodeValue, item.CodingSchemeDesignator = code.value, code.scheme_designator
            item.CodeMeaning = code.meaning
            items.append(item)
        dataset.DeidentificationMethodCodeSequence = items
        dataset.LongitudinalTemporalInformationModified = LONGITUDINAL[self.options.dates]
        match_file_meta(dataset)
        return dataset

    def _keeps_private(self, tag: BaseTag, creators: dict[tuple[int, int], str]) -> bool:
        if not self._safe_private:
            return False
        if tag.is_private_creator:
            creator = creators.get((tag.group, tag.element), "")
            return any(g == tag.group and c == creator for g, c, _ in self._safe_private)
        creator = creators.get((tag.group, tag.element >> 8), "")
        return (tag.group, creator, tag.element & 0xFF) in self._safe_private

    def _clean(self, dataset: Dataset, cleaner: Cleaner) -> None:
        creators = {
            (tag.group, tag.element): str(dataset[tag].value).strip()
            for tag in dataset.keys()
            if tag.is_private_creator
        }
        for tag in list(dataset.keys()):
            element = dataset[tag]
            if tag.is_private:
                if not self._keeps_private(tag, creators):
                    del dataset[tag]
                elif element.VR == "SQ":
                    for item in element.value:
                        self._clean(item, cleaner)
                continue
            if tag.element == 0 and tag.group != 0x0002:
                del dataset[tag]  # group lengths the edits would make wrong
                continue
            action = self.action(int(tag))
            if action is Action.REMOVE:
                del dataset[tag]
            elif action is Action.EMPTY:
                element.value = [] if element.VR == "SQ" else None
            elif element.VR == "SQ":  # D, U, K and C on a sequence: keep it, clean each item
                for item in element.value:
                    self._clean(item, cleaner)
            elif action is Action.DUMMY or action is Action.UID:
                self._replace(element)
            elif action is Action.CLEAN:
                cleaner.clean(element)

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
