"""What the node's results in a study say, read back from the stored DICOM objects themselves
(the TID 1500 reports and their SEGs), so the console shows what the PACS and the EHR got: a
classifier's finding (label, probability, the model's threshold) with its explanation SEG, or, for
an image outside the model's domain (presence Indeterminate), *not assessed* with the report's
reason, and a segmentation's tissue volumes with its SEG."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import pydicom
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import Comprehensive3DSRStorage, SegmentationStorage
from sqlalchemy import Engine

from inference.bundle import Bundle

from ..index.contents import own_instances
from ..store.storage import StorageArea

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Finding:
    """A classifier's finding on one image, as its report states it."""

    model: str
    label: str
    probability: float
    threshold: float | None
    present: bool
    #: the classified image (study, series, instance UIDs) and the report
    series: str
    image: str
    report: str
    #: the explanation SEG's SOP Instance UID, when it is stored
    explanation: str | None = None
    #: False for an image outside the model's domain: no finding, ``reason`` says why
    assessed: bool = True
    #: the report's comment on a finding not assessed (its probability is not reliable)
    reason: str = ""


@dataclass(frozen=True)
class TissueVolume:
    name: str
    volume_ml: float
    mean_hu: float | None
    std_hu: float | None


@dataclass(frozen=True)
class Measurements:
    """A segmentation model's report: each segment's volume and HU, and its SEG."""

    model: str
    report: str
    segmentation: str | None
    volumes: list[TissueVolume] = field(default_factory=list)


@dataclass(frozen=True)
class StudyResults:
    findings: list[Finding]
    measurements: list[Measurements]


def _code(item: Dataset, sequence: str = "ConceptNameCodeSequence") -> tuple[str, str]:
    codes_given = item.get(sequence) or [Dataset()]
    return str(codes_given[0].get("CodeValue", "")), str(
        codes_given[0].get("CodingSchemeDesignator", "")
    )


def _key(code) -> tuple[str, str]:
    return code.value, code.scheme_designator


def _is(item: Dataset, code) -> bool:
    return _code(item) == _key(code)


def _items(dataset: Dataset) -> Iterator[Dataset]:
    """Every content item of an SR, depth first."""
    for item in dataset.get("ContentSequence", []):
        yield item
        yield from _items(item)


def _number(item: Dataset) -> float | None:
    values = item.get("MeasuredValueSequence")
    return float(values[0].NumericValue) if values else None


def _text(dataset: Dataset, code) -> str:
    return next(
        (str(i.TextValue) for i in _items(dataset) if _is(i, code) and "TextValue" in i), ""
    )


def _evidence(dataset: Dataset) -> list[tuple[str, str, str]]:
    """(series UID, SOP Class UID, SOP Instance UID) of every object the report cites."""
    return [
        (
            str(series.SeriesInstanceUID),
            str(sop.ReferencedSOPClassUID),
            str(sop.ReferencedSOPInstanceUID),
        )
        for study in dataset.get("CurrentRequestedProcedureEvidenceSequence", [])
        for series in study.get("ReferencedSeriesSequence", [])
        for sop in series.get("ReferencedSOPSequence", [])
    ]


def read_finding(report: Dataset, bundles: dict[str, Bundle]) -> Finding | None:
    probability = next((_number(i) for i in _items(report) if _is(i, codes.DCM.Probability)), None)
    if probability is None:
        return None
    group = next(
        (
            g
            for g in _items(report)
            if _is(g, codes.DCM.MeasurementGroup)
            and any(_is(i, codes.DCM.PresenceOfProperty) for i in g.get("ContentSequence", []))
        ),
        Dataset(),
    )
    presence = next(
        (i for i in group.get("ContentSequence", []) if _is(i, codes.DCM.PresenceOfProperty)),
        Dataset(),
    )
    verdict = _code(presence, "ConceptCodeSequence")
    present = verdict == _key(codes.SCT.Present)
    assessed = verdict != _key(codes.SCT.Indeterminate)
    model = _text(report, codes.DCM.AlgorithmName)
    bundle = bundles.get(model)
    labels = [bundle.labels[k] for k in sorted(bundle.labels)] if bundle else ["absent", "present"]
    derived = (SegmentationStorage, Comprehensive3DSRStorage)
    images = [e for e in _evidence(report) if e[1] not in derived]
    series, _, image = images[0] if images else ("", "", "")
    return Finding(
        model=model,
        label=(labels[-1] if present else labels[0]) if assessed else "not assessed",
        probability=probability,
        threshold=bundle.threshold if bundle else None,
        present=present,
        series=series,
        image=image,
        report=str(report.SOPInstanceUID),
        assessed=assessed,
        reason="" if assessed else _text(group, codes.DCM.Comment),
    )


def _measurements(report: Dataset) -> Measurements | None:
    volumes = []
    for group in _items(report):
        if not _is(group, codes.DCM.MeasurementGroup):
            continue
        numbers = {
            _code(i): _number(i) for i in group.get("ContentSequence", []) if i.ValueType == "NUM"
        }
        volume = numbers.get(_key(codes.SCT.Volume))
        if volume is None:
            continue
        tracking = _text(group, codes.DCM.TrackingIdentifier)
        volumes.append(
            TissueVolume(
                name=tracking.rsplit(":", 1)[-1],
                volume_ml=volume,
                mean_hu=numbers.get(_key(codes.SCT.Mean)),
                std_hu=numbers.get(_key(codes.SCT.StandardDeviation)),
            )
        )
    if not volumes:
        return None
    segmentation = next((e[2] for e in _evidence(report) if e[1] == SegmentationStorage), None)
    return Measurements(
        _text(report, codes.DCM.AlgorithmName), str(report.SOPInstanceUID), segmentation, volumes
    )


def _explained_image(seg: Dataset) -> str:
    """The SOP Instance UID of the one image an explanation SEG lies on."""
    for series in seg.get("ReferencedSeriesSequence", []):
        for instance in series.get("ReferencedInstanceSequence", []):
            return str(instance.ReferencedSOPInstanceUID)
    return ""


def study_results(
    engine: Engine, storage: StorageArea, study_uid: str, ae_title: str, bundles: dict[str, Bundle]
) -> StudyResults:
    """The findings and measurements of the node's results stored in the study."""
    findings: list[Finding] = []
    measurements: list[Measurements] = []
    explanations: dict[str, str] = {}
    for own in own_instances(engine, study_uid, ae_title):
        try:
            dataset = pydicom.dcmread(storage.path(own.path), stop_before_pixels=True)
        except Exception as error:  # a damaged result file: the others still show
            log.warning("console: result %s unreadable: %s", own.path, error)
            continue
        if own.sop_class_uid == SegmentationStorage:
            explanations[_explained_image(dataset)] = own.sop_instance_uid
        elif own.sop_class_uid == Comprehensive3DSRStorage:
            finding = read_finding(dataset, bundles)
            if finding is not None:
                findings.append(finding)
            elif (measured := _measurements(dataset)) is not None:
                measurements.append(measured)
    findings = [replace(f, explanation=explanations.get(f.image)) for f in findings]
    return StudyResults(findings, measurements)
