"""AI reports as FHIR: the node's TID 1500 SRs (CT measurements, chest X-ray finding) become a
transaction Bundle that fhir.resources validates for R4 and R5 and that a real FHIR server
(Medplum, validating against the R4 structure definitions) accepts; the report says what the SR
says, and sending it again creates nothing new."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import highdicom as hd
import pydicom
import pytest
from fhir.resources.bundle import Bundle as BundleR5
from fhir.resources.R4B.bundle import Bundle as BundleR4

from dicom_node.config import ConfigError, parse_config
from fhir_bridge.client import FhirClient, Verdict
from fhir_bridge.resources import (
    IMAGING_REPORT,
    ResourceError,
    SeriesSummary,
    build_transaction,
    effective_time,
)
from fhir_bridge.settings import FhirSettings
from fhir_bridge.sr_content import NotAMeasurementReport, read_report

MRN = "urn:oid:1.2.826.0.1.3680043.9.7697.1"


def settings(**overrides) -> FhirSettings:
    return FhirSettings(
        base_url="http://127.0.0.1:1/fhir/R4", patient_identifier_system=MRN, **overrides
    )


def bundle_of(report: pydicom.Dataset, **overrides) -> dict:
    series = [SeriesSummary(str(report.SeriesInstanceUID), 1, "CR", "chest", 1)]
    return build_transaction(
        read_report(report),
        series,
        open(report.filename, "rb").read(),
        settings(**overrides),
        issued=datetime(2026, 11, 22, 10, 0, tzinfo=UTC),
    )


def resources(bundle: dict, kind: str) -> list[dict]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def by_full_url(bundle: dict) -> dict[str, dict]:
    return {entry["fullUrl"]: entry["resource"] for entry in bundle["entry"]}


def test_finding_report_as_diagnostic_report_with_observations(classified):
    _, result, header, _, report = classified
    bundle = bundle_of(report)
    BundleR4.model_validate_json(json.dumps(bundle))  # round trip through fhir.resources
    assert bundle["type"] == "transaction"
    for entry in bundle["entry"]:  # conditional creates, keyed on the resource's identifier
        identifier = entry["resource"]["identifier"][0]
        assert entry["request"]["method"] == "POST"
        assert entry["request"]["ifNoneExist"].startswith("identifier=")
        assert identifier["value"].replace(":", "%3A") in entry["request"]["ifNoneExist"]
    lookup = by_full_url(bundle)
    (diagnostic,) = resources(bundle, "DiagnosticReport")
    (patient,) = resources(bundle, "Patient")
    (study,) = resources(bundle, "ImagingStudy")
    (device,) = resources(bundle, "Device")
    assert diagnostic["status"] == "preliminary"
    assert diagnostic["category"][0]["coding"][0]["code"] == "RAD"
    # The SR's procedure (CID 100) is no LOINC code: LOINC's imaging report, then the procedure.
    assert diagnostic["code"]["coding"] == [
        IMAGING_REPORT,
        {"system": "http://snomed.info/sct", "code": "363679005", "display": "Imaging procedure"},
    ]
    assert diagnostic["identifier"][0]["value"] == f"urn:oid:{report.SOPInstanceUID}"
    assert lookup[diagnostic["subject"]["reference"]] is patient
    assert patient["identifier"] == [{"system": MRN, "value": str(header.PatientID)}]
    assert patient["birthDate"] == "1940-03-05" and patient["gender"] == "female"
    assert lookup[diagnostic["imagingStudy"][0]["reference"]] is study
    assert study["identifier"][0]["value"] == f"urn:oid:{header.StudyInstanceUID}"
    assert diagnostic["effectiveDateTime"].startswith("2004-08-26T18:50:59")
    assert diagnostic["issued"] == "2026-11-22T10:00:00+00:00"
    assert (
        base64.b64decode(diagnostic["presentedForm"][0]["data"])
        == open(report.filename, "rb").read()
    )
    assert "cxr_pneumonia 1.0.0" in diagnostic["conclusion"]
    assert diagnostic["performer"] == [{"display": "cxr_pneumonia 1.0.0 (AI model on AI_NODE)"}]
    # The model as Device, named with its version, on every Observation.
    assert device["version"] == [{"value": "1.0.0"}]
    assert {"name": "cxr_pneumonia 1.0.0", "type": "model-name"} in device["deviceName"]
    results = [lookup[ref["reference"]] for ref in diagnostic["result"]]
    assert all(lookup[o["device"]["reference"]] is device for o in results)
    assert all(lookup[o["derivedFrom"][0]["reference"]] is study for o in results)
    group, probability, presence = results
    assert group["code"]["coding"][0]["code"] == "233604007"  # pneumonia, SNOMED CT
    assert [m["reference"] for m in group["hasMember"]] == [
        r["reference"] for r in diagnostic["result"][1:]
    ]
    quantity = probability["valueQuantity"]
    assert quantity["value"] == pytest.approx(round(result.probabilities[result.positive], 4))
    assert (quantity["system"], quantity["code"]) == ("http://unitsofmeasure.org", "1")
    # the shared CR is an adult's: not assessed, SNOMED CT Indeterminate, no conclusion code
    assert not result.assessed
    assert presence["valueCodeableConcept"]["coding"][0]["code"] == "82334004"
    assert "conclusionCode" not in diagnostic


def test_measurement_report_gives_volumes_in_ml_and_mean_hu(measurements, ct_slab):
    seg, report = measurements
    bundle = bundle_of(report)
    groups = hd.sr.srread(report.filename).content.get_image_measurement_groups()
    observations = resources(bundle, "Observation")
    # One group Observation per segment, each with volume, mean and SD of attenuation.
    assert len(observations) == 4 * len(seg.SegmentSequence)
    by_text = {o["code"]["text"]: o for o in observations}
    for group, segment in zip(groups, seg.SegmentSequence, strict=True):
        measured = ct_slab.result.segments[segment.TrackingID]
        label = group.finding_type.meaning
        volume = by_text[f"{label}: Volume"]["valueQuantity"]
        assert volume["value"] == pytest.approx(measured.volume_ml, rel=1e-5)
        assert (volume["unit"], volume["code"]) == ("mL", "ml")
        mean = by_text[f"{label}: Mean"]
        assert mean["valueQuantity"]["value"] == pytest.approx(measured.mean_hu, rel=1e-5)
        assert mean["valueQuantity"]["code"] == "[hnsf'U]"
        assert mean["code"]["coding"][0]["code"] == "373098007"  # SNOMED CT Mean
        deviation = by_text[f"{label}: Standard Deviation"]["valueQuantity"]
        assert deviation["value"] == pytest.approx(measured.std_hu, rel=1e-5)
    (diagnostic,) = resources(bundle, "DiagnosticReport")
    assert "conclusionCode" not in diagnostic, "measurements assert no finding"
    assert diagnostic["code"]["coding"][0]["system"] == "http://loinc.org"


def test_r5_resources_are_valid_r5(classified, measurements):
    for report in (classified[-1], measurements[1]):
        bundle = bundle_of(report, version="R5", dicomweb_url="http://node.example:8080/dicomweb")
        BundleR5.model_validate_json(json.dumps(bundle))
        (diagnostic,) = resources(bundle, "DiagnosticReport")
        assert "study" in diagnostic and "imagingStudy" not in diagnostic
        (endpoint,) = resources(bundle, "Endpoint")
        assert endpoint["address"] == "http://node.example:8080/dicomweb"
        url = diagnostic["presentedForm"][0]["url"]
        assert url.endswith(f"/instances/{report.SOPInstanceUID}")


def test_a_report_without_patient_id_or_not_tid_1500_is_refused(classified, tmp_path):
    report = pydicom.dcmread(classified[-1].filename)
    report.PatientID = ""
    with pytest.raises(ResourceError, match="no Patient ID"):
        build_transaction(read_report(report), [], b"", settings())
    report.ContentTemplateSequence[0].TemplateIdentifier = "2000"
    with pytest.raises(NotAMeasurementReport):
        read_report(report)


@pytest.mark.filterwarnings("ignore:Invalid value for VR DA")
def test_study_time_gets_the_studys_own_time_zone():
    dataset = pydicom.Dataset()
    dataset.StudyDate, dataset.StudyTime = "20240131", "083015.25"
    dataset.TimezoneOffsetFromUTC = "-0500"
    assert effective_time(dataset) == "2024-01-31T08:30:15.250000-05:00"
    del dataset.StudyTime
    assert effective_time(dataset) == "2024-01-31"
    dataset.StudyDate = "2024-99-99"
    assert effective_time(dataset) is None


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"base_url": "http://ehr/fhir"}, "fhir.patient_identifier_system is needed"),
        ({"base_url": "not a url", "patient_identifier_system": MRN}, "fhir.base_url"),
        (
            {
                "base_url": "http://ehr/fhir",
                "patient_identifier_system": MRN,
                "auth": {"method": "oauth2", "client_id": "node"},
            },
            "needs token_url, client_secret or private_key_file",
        ),
        ({"auth": {"method": "bearer"}}, "fhir.auth.method bearer needs token"),
        ({"version": "R3"}, "fhir.version"),
        ({"unknown": 1}, "fhir.unknown: unknown key"),
    ],
)
def test_bad_fhir_configuration_is_refused_naming_the_key(section, message):
    with pytest.raises(ConfigError, match=message):
        parse_config({"fhir": section})


def test_medplum_accepts_the_reports_once_and_finds_them(fhir_server, classified, measurements):
    client = FhirClient(FhirSettings(base_url=fhir_server.base_url, patient_identifier_system=MRN))
    bodies = [json.dumps(bundle_of(r)).encode() for r in (classified[-1], measurements[1])]
    for body in bodies:
        delivery = client.post_transaction(body)
        assert delivery.verdict == Verdict.DELIVERED, delivery.message
    counts = {
        kind: len(fhir_server.search(kind))
        for kind in ("Patient", "Observation", "DiagnosticReport", "ImagingStudy", "Device")
    }
    for body in bodies:  # again: the conditional creates find what is there
        assert client.post_transaction(body).verdict == Verdict.DELIVERED
    assert {kind: len(fhir_server.search(kind)) for kind in counts} == counts
    header = classified[2]
    reports = fhir_server.reports_of_patient(MRN, str(header.PatientID))
    assert len(reports) == 1
    (study,) = fhir_server.search(
        "ImagingStudy", identifier=f"urn:dicom:uid|urn:oid:{header.StudyInstanceUID}"
    )
    assert fhir_server.search("DiagnosticReport", study=f"ImagingStudy/{study['id']}") == reports
