"""Results computed on de-identified copies, mapped back before they leave the node.

A SEG or SR made from a de-identified series references pseudonym UIDs and carries the patient
pseudonym. Re-identification swaps every UID that is one of this node's pseudonyms for its
original (study, series, frame of reference, referenced instances), takes the Patient and
General Study attributes from an original instance of the study, and drops the de-identification
flags: the object then files into the patient's real study. UIDs the result minted for itself
(its own SOP Instance and Series) are left as they are.
"""

from __future__ import annotations

import copy

from pydicom import Dataset

from .deidentify import match_file_meta
from .mapping import MappingStore

#: Patient and General Study module attributes copied from the original study.
IDENTITY_KEYWORDS = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyID",
    "StudyDescription",
)
DEIDENTIFICATION_FLAGS = (
    "PatientIdentityRemoved",
    "DeidentificationMethod",
    "DeidentificationMethodCodeSequence",
    "LongitudinalTemporalInformationModified",
)


class NotOurPseudonym(LookupError):
    """The result does not refer to a study this node de-identified."""


def _uid_elements(dataset: Dataset) -> list:
    found = []
    dataset.walk(lambda _, element: found.append(element) if element.VR == "UI" else None)
    return found


def reidentify(result: Dataset, store: MappingStore, original: Dataset) -> Dataset:
    """A copy of ``result`` referring to the study of ``original`` (any instance of it)."""
    dataset = copy.deepcopy(result)
    elements = _uid_elements(dataset)
    values = {str(v) for e in elements for v in (e.value if e.VM > 1 else [e.value]) if v}
    originals = store.originals(values)
    if originals.get(str(dataset.get("StudyInstanceUID", ""))) != original.StudyInstanceUID:
        raise NotOurPseudonym(
            "the result's Study Instance UID is not this node's pseudonym of the given study"
        )
    for element in elements:
        if element.VM > 1:
            element.value = [originals.get(str(v), str(v)) for v in element.value]
        elif element.value:
            element.value = originals.get(str(element.value), element.value)
    for keyword in IDENTITY_KEYWORDS:
        if keyword in original:
            setattr(dataset, keyword, original[keyword].value)
        elif keyword in dataset:  # absent means empty: emptied, a Type 2 attribute stays
            dataset[keyword].value = None
    for keyword in DEIDENTIFICATION_FLAGS:
        if keyword in dataset:
            delattr(dataset, keyword)
    match_file_meta(dataset)
    return dataset
