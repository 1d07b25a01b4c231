"""DICOM coded concepts as FHIR codings: the coding scheme designators of PS3.16 Table 8-1 mapped
to the FHIR system URIs of the same code systems."""

from __future__ import annotations

from pydicom import Dataset

#: PS3.16 Table 8-1 designator -> FHIR system (HL7 terminology's canonical URIs)
SYSTEMS = {
    "DCM": "http://dicom.nema.org/resources/ontology/DCM",
    "SCT": "http://snomed.info/sct",
    "SRT": "http://snomed.info/sct",  # the retired SNOMED-RT designator
    "LN": "http://loinc.org",
    "UCUM": "http://unitsofmeasure.org",
    "RADLEX": "http://radlex.org",
    "FMA": "http://purl.org/sig/ont/fma",
    "NCIt": "http://ncicb.nci.nih.gov/xml/owl/EVS/Thesaurus.owl",
    "I10": "http://hl7.org/fhir/sid/icd-10",
}
DICOM_UID_SYSTEM = "urn:dicom:uid"
URI_SYSTEM = "urn:ietf:rfc:3986"


def coding(concept: Dataset) -> dict:
    """A FHIR Coding of a DICOM code (Code Value/Scheme Designator/Meaning); a designator with no
    known system keeps the meaning only, as a display without a system."""
    found = {"code": str(concept.CodeValue), "display": str(concept.CodeMeaning)}
    system = SYSTEMS.get(str(concept.CodingSchemeDesignator))
    return {"system": system, **found} if system else {"display": found["display"]}


def codeable(*concepts: Dataset, text: str | None = None) -> dict:
    """A CodeableConcept of one or more DICOM codes, with ``text`` (default: the first meaning)."""
    return {
        "coding": [coding(concept) for concept in concepts],
        "text": text or str(concepts[0].CodeMeaning),
    }


def dicom_uid(uid: str) -> dict:
    """An Identifier holding a DICOM UID, as FHIR writes them (``urn:oid:`` under urn:dicom:uid)."""
    return {"system": DICOM_UID_SYSTEM, "value": f"urn:oid:{uid}"}
