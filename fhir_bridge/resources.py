"""One AI report as a FHIR ``transaction`` Bundle: Patient, Device, Endpoint, ImagingStudy,
Observations and the DiagnosticReport, each a conditional create keyed on its identifier, so
sending the same report again never makes a second copy of anything.

The report's measurements follow the DICOM SR to FHIR mapping's shape: each measurement group is
an Observation (its finding, with the group's members) and each measurement or qualitative
evaluation an Observation of its own (UCUM quantity, derivation as method, finding site as body
site), all derived from the ImagingStudy and naming the model's Device. The DiagnosticReport
carries the report's procedure (LOINC), the findings present as conclusion codes, a readable
conclusion, and the DICOM SR itself as presented form.

Resources are written for R4 (the 4.0.1 structures, validated with fhir.resources' R4B models,
identical for these resources) or R5, and validated before they leave.
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any
from urllib.parse import urlencode

import pydicom.valuerep
from fhir.resources.bundle import Bundle as BundleR5
from fhir.resources.R4B.bundle import Bundle as BundleR4
from pydantic import ValidationError
from pydicom import Dataset
from pydicom.sr.codedict import codes

from .coding import URI_SYSTEM, codeable, coding, dicom_uid
from .settings import FhirSettings, FhirVersion
from .sr_content import MeasurementGroup, ReportContent

DICOM_SYSTEM = "http://dicom.nema.org/resources/ontology/DCM"
#: LOINC "Diagnostic imaging study", when the report names no LOINC procedure of its own
IMAGING_REPORT = {
    "system": "http://loinc.org",
    "code": "18748-4",
    "display": "Diagnostic imaging study",
}
RADIOLOGY = {
    "coding": [
        {
            "system": "http://terminology.hl7.org/CodeSystem/v2-0074",
            "code": "RAD",
            "display": "Radiology",
        }
    ]
}
IMAGING = {
    "coding": [
        {
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "imaging",
            "display": "Imaging",
        }
    ]
}
PRESENT = codes.SCT.Present
NOT_FOR_DIAGNOSIS = "AI output, not for primary diagnosis unless validated"


class ResourceError(ValueError):
    """The report cannot be written as valid FHIR (the message says what is missing or wrong)."""


@dataclass(frozen=True)
class SeriesSummary:
    """A series of the study as the node holds it, for ImagingStudy."""

    uid: str
    number: int | None
    modality: str
    description: str
    instances: int


@dataclass
class _Entry:
    resource: dict
    identifier: dict

    @property
    def full_url(self) -> str:
        kind, found = self.resource["resourceType"], self.identifier
        key = f"{kind}|{found['system']}|{found['value']}"
        return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, key)}"

    @property
    def reference(self) -> dict:
        return {"reference": self.full_url}

    def bundle_entry(self) -> dict:
        kind = self.resource["resourceType"]
        search = urlencode(
            {"identifier": f"{self.identifier['system']}|{self.identifier['value']}"}
        )
        return {
            "fullUrl": self.full_url,
            "resource": self.resource,
            "request": {"method": "POST", "url": kind, "ifNoneExist": search},
        }


def _compact(fields: dict) -> dict:
    """``fields`` without the absent ones (None, empty list or text): FHIR has no empty values."""
    return {key: value for key, value in fields.items() if value not in (None, [], "")}


def _entry(kind: str, identifier: dict, **fields) -> _Entry:
    others = fields.pop("identifiers", [])
    return _Entry(
        _compact({"resourceType": kind, "identifier": [identifier, *others], **fields}), identifier
    )


def _derived_identifier(key: str) -> dict:
    """A stable identifier for a resource the SR has no UID of its own for."""
    return {"system": URI_SYSTEM, "value": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_OID, key)}"}


def effective_time(dataset: Dataset) -> str | None:
    """The study's date and time as a FHIR dateTime; a time needs a zone, taken from
    TimezoneOffsetFromUTC when the study gives it, else the node's own. None when undated."""
    try:
        day = pydicom.valuerep.DA(dataset.get("StudyDate") or None)
        moment = pydicom.valuerep.TM(dataset.get("StudyTime") or None)
    except ValueError:
        return None
    if day is None:
        return None
    if moment is None:
        return day.isoformat()
    when = datetime.combine(day, moment)
    offset = str(dataset.get("TimezoneOffsetFromUTC") or "")
    zone: tzinfo | None
    if len(offset) == 5 and offset[0] in "+-" and offset[1:].isdigit():
        sign = -1 if offset[0] == "-" else 1
        zone = timezone(sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[3:])))
    else:
        zone = when.astimezone().tzinfo  # the node's own: DICOM dates and times are local
    return when.replace(tzinfo=zone).isoformat()


def _patient(report: ReportContent, settings: FhirSettings) -> _Entry:
    dataset = report.dataset
    patient_id = str(dataset.get("PatientID") or "").strip()
    if not patient_id:
        raise ResourceError("the study has no Patient ID to find the patient by")
    identifier = {"system": settings.patient_identifier_system, "value": patient_id}
    name = dataset.get("PatientName")
    human = None
    if name:
        given = [part for part in (name.given_name, name.middle_name) if part]
        human = _compact(
            {
                "text": str(name.formatted("%(given_name)s %(family_name)s")).strip(),
                "family": name.family_name,
                "given": given,
                "prefix": [name.name_prefix] if name.name_prefix else None,
                "suffix": [name.name_suffix] if name.name_suffix else None,
            }
        )
    try:
        birth = pydicom.valuerep.DA(dataset.get("PatientBirthDate") or None)
    except ValueError:
        birth = None
    gender = {"M": "male", "F": "female", "O": "other"}.get(str(dataset.get("PatientSex", "")))
    return _entry(
        "Patient",
        identifier,
        name=[human] if human else None,
        birthDate=birth.isoformat() if birth else None,
        gender=gender,
    )


def _device(report: ReportContent, settings: FhirSettings) -> _Entry:
    name, version = report.algorithm
    device = report.device
    uid = device.uid if device else None
    identifier = (
        dicom_uid(uid) if uid else {"system": URI_SYSTEM, "value": f"urn:ai-model:{name}:{version}"}
    )
    model = device.model_name if device and device.model_name else f"{name} {version}".strip()
    if settings.version == FhirVersion.R4:
        names = {
            "deviceName": [
                {"name": model, "type": "model-name"},
                {"name": f"{name} (AI model)", "type": "user-friendly-name"},
            ],
            "type": {"text": "AI model"},
        }
    else:
        names = {
            "name": [
                {"value": model, "type": "registered-name"},
                {"value": f"{name} (AI model)", "type": "user-friendly-name"},
            ],
            "type": [{"text": "AI model"}],
        }
    return _entry(
        "Device",
        identifier,
        status="active",
        manufacturer=device.manufacturer if device else None,
        serialNumber=device.serial_number if device else None,
        version=[{"value": version}] if version else None,
        **names,
    )


def _endpoint(settings: FhirSettings) -> _Entry | None:
    if settings.dicomweb_url is None:
        return None
    address = settings.dicomweb_root
    kind = {
        "system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type",
        "code": "dicom-wado-rs",
        "display": "DICOM WADO-RS",
    }
    payload = {"text": "DICOM"}
    if settings.version == FhirVersion.R4:
        shape = {
            "connectionType": kind,
            "payloadType": [payload],
            "payloadMimeType": ["application/dicom"],
        }
    else:
        shape = {
            "connectionType": [{"coding": [kind]}],
            "payload": [{"type": [payload], "mimeType": ["application/dicom"]}],
        }
    return _entry(
        "Endpoint",
        {"system": URI_SYSTEM, "value": address},
        status="active",
        name="DICOM AI node DICOMweb",
        address=address,
        **shape,
    )


def _modality(code: str, settings: FhirSettings) -> dict:
    found = {"system": DICOM_SYSTEM, "code": code}
    return found if settings.version == FhirVersion.R4 else {"coding": [found]}


def _imaging_study(
    report: ReportContent,
    series: list[SeriesSummary],
    subject: _Entry,
    endpoint: _Entry | None,
    started: str | None,
    settings: FhirSettings,
) -> _Entry:
    dataset = report.dataset
    accession = str(dataset.get("AccessionNumber") or "")
    accession_id = {
        "type": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]
        },
        "value": accession,
    }
    modalities = sorted({s.modality for s in series if s.modality})
    return _entry(
        "ImagingStudy",
        dicom_uid(str(dataset.StudyInstanceUID)),
        identifiers=[accession_id] if accession else [],
        status="available",
        subject=subject.reference,
        started=started,
        description=str(dataset.get("StudyDescription") or "") or None,
        modality=[_modality(code, settings) for code in modalities],
        numberOfSeries=len(series),
        numberOfInstances=sum(s.instances for s in series),
        endpoint=[endpoint.reference] if endpoint else None,
        series=[
            _compact(
                {
                    "uid": s.uid,
                    "number": s.number,
                    "modality": _modality(s.modality or "OT", settings),
                    "description": s.description,
                    "numberOfInstances": s.instances,
                }
            )
            for s in series
        ],
    )


def _label(group: MeasurementGroup) -> str:
    if group.finding_type is not None:
        return str(group.finding_type.meaning)
    return group.tracking_identifier or "Finding"


def _observations(report: ReportContent, common: dict) -> tuple[list[_Entry], list[str]]:
    """Group and member Observations of every measurement group, and the conclusion's lines."""
    made: list[_Entry] = []
    lines: list[str] = []
    for number, group in enumerate(report.groups, 1):
        label = _label(group)
        key = f"{report.sop_instance_uid}/{group.tracking_uid or number}"
        members: list[_Entry] = []
        said: list[str] = []
        for index, measured in enumerate(group.measurements, 1):
            name = str(measured.name.meaning)
            if measured.derivation is not None:
                name += f" ({measured.derivation.meaning})"
            unit = str(measured.unit.value)
            shown = "mL" if unit == "ml" else unit  # UCUM allows both; mL is what people read
            members.append(
                _entry(
                    "Observation",
                    _derived_identifier(f"{key}/m{index}"),
                    code=codeable(measured.name, text=f"{label}: {name}"),
                    method=codeable(measured.derivation) if measured.derivation else None,
                    bodySite=codeable(group.finding_sites[0]) if group.finding_sites else None,
                    valueQuantity={
                        "value": round(measured.value, 6),
                        "unit": shown,
                        "system": "http://unitsofmeasure.org",
                        "code": unit,
                    },
                    **common,
                )
            )
            said.append(
                f"{name.lower()} {measured.value:.4g}" + ("" if unit == "1" else f" {shown}")
            )
        for index, evaluation in enumerate(group.evaluations, 1):
            members.append(
                _entry(
                    "Observation",
                    _derived_identifier(f"{key}/e{index}"),
                    code=codeable(evaluation.name, text=f"{label}: {evaluation.name.meaning}"),
                    valueCodeableConcept=codeable(evaluation.value),
                    **common,
                )
            )
            said.insert(0, str(evaluation.value.meaning).lower())
        identifier = (
            dicom_uid(group.tracking_uid) if group.tracking_uid else _derived_identifier(key)
        )
        made.append(
            _entry(
                "Observation",
                identifier,
                code=codeable(group.finding_type) if group.finding_type else {"text": label},
                bodySite=codeable(group.finding_sites[0]) if group.finding_sites else None,
                hasMember=[member.reference for member in members],
                **common,
            )
        )
        made.extend(members)
        lines.append(f"{label}: {', '.join(said)}" if said else label)
    return made, lines


def _findings_present(report: ReportContent) -> list[dict]:
    return [
        codeable(group.finding_type)
        for group in report.groups
        if group.finding_type is not None
        and any(
            e.name == codes.DCM.PresenceOfProperty and e.value == PRESENT for e in group.evaluations
        )
    ]


def build_transaction(
    report: ReportContent,
    series: list[SeriesSummary],
    sr_file: bytes,
    settings: FhirSettings,
    issued: datetime | None = None,
) -> dict:
    """The transaction Bundle for ``report`` (the SR's content, ``sr_file`` its DICOM file) in
    the study whose series are ``series``; validated, as JSON-ready data. ResourceError when the
    report cannot make valid resources."""
    issued_at = (issued or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="seconds")
    dataset = report.dataset
    patient = _patient(report, settings)
    device = _device(report, settings)
    endpoint = _endpoint(settings)
    effective = effective_time(dataset)
    study = _imaging_study(report, series, patient, endpoint, effective, settings)
    common = {
        "status": settings.report_status.value,
        "category": [IMAGING],
        "subject": patient.reference,
        "effectiveDateTime": effective,
        "issued": issued_at,
        "device": device.reference,
        "derivedFrom": [study.reference],
    }
    observations, lines = _observations(report, common)
    name, version = report.algorithm
    model = f"{name} {version}".strip()
    conclusion = f"{model} ({NOT_FOR_DIAGNOSIS}). " + "; ".join(lines)
    # R4 and R5 take no Device as performer: the model is named here, the Device is on every
    # Observation.
    on = (
        f" on {report.device.serial_number}"
        if report.device and report.device.serial_number
        else ""
    )
    performer = {"display": f"{model} (AI model{on})"}
    loinc = [c for c in report.procedures if str(c.scheme_designator) == "LN"]
    code: dict[str, Any] = (
        codeable(*report.procedures)
        if loinc
        else {"coding": [IMAGING_REPORT], "text": "AI imaging report"}
    )
    if not loinc and report.procedures:
        code["coding"] += [coding(c) for c in report.procedures]
    sr_url = None
    if settings.dicomweb_root is not None:
        sr_url = (
            f"{settings.dicomweb_root}/studies/{dataset.StudyInstanceUID}"
            f"/series/{dataset.SeriesInstanceUID}/instances/{dataset.SOPInstanceUID}"
        )
    presented = _compact(
        {
            "contentType": "application/dicom",
            "data": base64.b64encode(sr_file).decode("ascii"),
            "url": sr_url,
            "title": str(dataset.get("SeriesDescription") or "AI report (DICOM SR)"),
        }
    )
    results = [entry.reference for entry in observations]
    diagnostic = _entry(
        "DiagnosticReport",
        dicom_uid(report.sop_instance_uid),
        status=settings.report_status.value,
        category=[RADIOLOGY],
        code=code,
        subject=patient.reference,
        effectiveDateTime=effective,
        issued=issued_at,
        performer=[performer],
        result=results,
        conclusion=conclusion,
        conclusionCode=_findings_present(report) or None,
        presentedForm=[presented],
        **{"imagingStudy" if settings.version == FhirVersion.R4 else "study": [study.reference]},
    )
    entries = [patient, device, *([endpoint] if endpoint else []), study, *observations, diagnostic]
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [entry.bundle_entry() for entry in entries],
    }
    validate_bundle(bundle, settings.version)
    return bundle


def validate_bundle(bundle: dict, version: FhirVersion) -> None:
    """ResourceError unless ``bundle`` is valid for ``version`` (fhir.resources' models)."""
    model = BundleR4 if version == FhirVersion.R4 else BundleR5
    try:
        model.model_validate(bundle)
    except ValidationError as error:
        raise ResourceError(f"not a valid FHIR {version.value} Bundle: {error}") from None
