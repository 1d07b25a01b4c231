"""What a TID 1500 Imaging Measurement Report says, read with highdicom into plain values the
FHIR resources are made of: who the patient and study are, the observer device (the model), the
procedure reported and each measurement group's measurements and qualitative evaluations.

Any TID 1500 SR can be read, not only the node's own: a report is bridged by what it contains.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import highdicom as hd
from pydicom import Dataset
from pydicom.sr.codedict import codes


class NotAMeasurementReport(ValueError):
    """The SR is not a TID 1500 Imaging Measurement Report."""


@dataclass(frozen=True)
class MeasuredValue:
    name: hd.sr.CodedConcept
    value: float
    unit: hd.sr.CodedConcept
    derivation: hd.sr.CodedConcept | None


@dataclass(frozen=True)
class Evaluation:
    name: hd.sr.CodedConcept
    value: hd.sr.CodedConcept


@dataclass(frozen=True)
class MeasurementGroup:
    tracking_uid: str
    tracking_identifier: str
    finding_type: hd.sr.CodedConcept | None
    finding_sites: list[hd.sr.CodedConcept]
    #: the algorithm's name and version, as the group's TID 4019 gives them ("" when it does not)
    algorithm_name: str
    algorithm_version: str
    measurements: list[MeasuredValue]
    evaluations: list[Evaluation]


@dataclass(frozen=True)
class ObserverDevice:
    uid: str
    name: str
    manufacturer: str
    model_name: str
    serial_number: str


@dataclass(frozen=True)
class ReportContent:
    dataset: Dataset  # the SR itself: patient, study and series attributes
    procedures: list[hd.sr.CodedConcept]
    device: ObserverDevice | None
    groups: list[MeasurementGroup]

    @property
    def sop_instance_uid(self) -> str:
        return str(self.dataset.SOPInstanceUID)

    @property
    def algorithm(self) -> tuple[str, str]:
        """Name and version of the algorithm the groups name (the first one that does), else the
        device's model name and no version."""
        for group in self.groups:
            if group.algorithm_name:
                return group.algorithm_name, group.algorithm_version
        return (self.device.model_name if self.device else "AI model"), ""


_DOCUMENT_CLASSES: dict[
    str, type[hd.sr.Comprehensive3DSR | hd.sr.ComprehensiveSR | hd.sr.EnhancedSR]
] = {
    "1.2.840.10008.5.1.4.1.1.88.34": hd.sr.Comprehensive3DSR,
    "1.2.840.10008.5.1.4.1.1.88.33": hd.sr.ComprehensiveSR,
    "1.2.840.10008.5.1.4.1.1.88.22": hd.sr.EnhancedSR,
}


def _text(items: list[Dataset]) -> str:
    return str(items[0].TextValue) if items else ""


#: a TID 1500 measurement group: image, planar ROI or volumetric ROI
_Group = (
    hd.sr.MeasurementsAndQualitativeEvaluations
    | hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
    | hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations
)


def _algorithm(group: _Group) -> tuple[str, str]:
    items = group[0].ContentSequence
    return _text(items.find(codes.DCM.AlgorithmName)), _text(items.find(codes.DCM.AlgorithmVersion))


def _group(group: _Group) -> MeasurementGroup:
    name, version = _algorithm(group)
    return MeasurementGroup(
        tracking_uid=str(group.tracking_uid or ""),
        tracking_identifier=str(group.tracking_identifier or ""),
        finding_type=group.finding_type,
        finding_sites=[site.value for site in group.finding_sites],
        algorithm_name=name,
        algorithm_version=version,
        measurements=[
            MeasuredValue(m.name, float(m.value), m.unit, m.derivation)
            for m in group.get_measurements()
        ],
        evaluations=[
            # highdicom annotates QualitativeEvaluation.value as int | float, but it returns its
            # CODE content item's value: a CodedConcept
            Evaluation(e.name, cast(hd.sr.CodedConcept, e.value))
            for e in group.get_qualitative_evaluations()
        ],
    )


def _device(report: hd.sr.MeasurementReport) -> ObserverDevice | None:
    for context in report.get_observer_contexts(observer_type=codes.DCM.Device):
        # a Device observer context: highdicom's union also has the Person attributes
        found = cast(
            hd.sr.DeviceObserverIdentifyingAttributes, context.observer_identifying_attributes
        )
        return ObserverDevice(
            uid=str(found.uid),
            name=str(found.name or ""),
            manufacturer=str(found.manufacturer_name or ""),
            model_name=str(found.model_name or ""),
            serial_number=str(found.serial_number or ""),
        )
    return None


def read_report(dataset: Dataset) -> ReportContent:
    """The content of a TID 1500 report; NotAMeasurementReport for any other SR."""
    templates = dataset.get("ContentTemplateSequence", [])
    if not templates or str(templates[0].TemplateIdentifier) != "1500":
        raise NotAMeasurementReport("the SR is not a TID 1500 Imaging Measurement Report")
    document = _DOCUMENT_CLASSES.get(str(dataset.SOPClassUID))
    if document is None:
        raise NotAMeasurementReport(f"SR storage class {dataset.SOPClassUID} cannot hold TID 1500")
    # highdicom reads a TID 1500 document's content as a MeasurementReport (checked above), but
    # types ``content`` as the ContentSequence it derives from
    report = cast(hd.sr.MeasurementReport, document.from_dataset(dataset, copy=True).content)
    root = report[0].ContentSequence
    groups: list[_Group] = [
        *report.get_image_measurement_groups(),
        *report.get_planar_roi_measurement_groups(),
        *report.get_volumetric_roi_measurement_groups(),
    ]
    return ReportContent(
        dataset=dataset,
        procedures=[
            hd.sr.CodedConcept.from_dataset(item.ConceptCodeSequence[0])
            for item in root.find(codes.DCM.ProcedureReported)
        ],
        device=_device(report),
        groups=[_group(group) for group in groups],
    )
