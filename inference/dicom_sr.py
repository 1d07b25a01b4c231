"""Model results as TID 1500 Imaging Measurement Reports (highdicom Comprehensive 3D SR), the
only SR template OHIF renders.

A segmentation gives one volumetric measurement group per SEG segment: the segment it measures,
its volume (mL) and mean and standard deviation (HU). A classification gives one image-level
group referencing the image: the finding type of its positive class (the bundle's
``finding_codes``), the model's probability for it, and whether it is present at the model's
threshold. Every group has its own Tracking UID and names the algorithm; the model is the
observer device. The report's Qualitative Evaluations say, as text, that it is not for primary
diagnosis.
"""

from __future__ import annotations

import highdicom as hd
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from .bundle import Bundle
from .dicom_seg import (
    NOT_FOR_DIAGNOSIS,
    ResultIdentity,
    derived_uid,
    display_color,
    highdicom_source,
    metadata_code,
    series_description,
)
from .run import Classification, Segmentation

MILLILITER = Code("ml", "UCUM", "milliliter")
NO_UNITS = Code("1", "UCUM", "no units")
#: TID 1500 row 12, the report's own qualitative evaluations (not in pydicom's code dictionary)
QUALITATIVE_EVALUATIONS = Code("C0034375", "UMLS", "Qualitative Evaluations")


def check_result_codes(bundle: Bundle) -> None:
    """Raise BundleError naming the first code the bundle's results need that its metadata
    lacks, so a new bundle fails when it is configured rather than in its first job."""
    needed = [("algorithm_family",), ("procedure_code",)]
    if bundle.task == "segmentation":
        names = [name for label, name in bundle.labels.items() if label != 0]
        names += list(bundle.metadata.get("composite_segments", {}))
    else:
        needed.append(("finding_codes", bundle.labels[max(bundle.labels)]))
        names = ["explanation"]
    needed += [("segment_codes", name, part) for name in names for part in ("category", "type")]
    for keys in needed:
        metadata_code(bundle, *keys)
    for name in names:
        display_color(bundle, name)


def _observation_context(bundle: Bundle, identity: ResultIdentity) -> hd.sr.ObservationContext:
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=identity.device_uid,
        name=bundle.name,
        manufacturer_name=identity.manufacturer,
        model_name=f"{bundle.name} {bundle.version}"[:64],
        serial_number=identity.device_serial_number,
    )
    return hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device, observer_identifying_attributes=device
        )
    )


def _algorithm(bundle: Bundle) -> hd.sr.AlgorithmIdentification:
    return hd.sr.AlgorithmIdentification(name=bundle.name, version=bundle.version)


def _disclaimer() -> hd.sr.ContainerContentItem:
    """TID 1500 row 12 holding the disclaimer as a comment (row 14), for whoever reads the
    report's content rather than its series description; highdicom's MeasurementReport has no
    argument for this row."""
    container = hd.sr.ContainerContentItem(
        name=QUALITATIVE_EVALUATIONS, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
    )
    container.ContentSequence = hd.sr.ContentSequence(
        [
            hd.sr.TextContentItem(
                name=codes.DCM.Comment,
                value=NOT_FOR_DIAGNOSIS,
                relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
            )
        ]
    )
    return container


def _report(
    bundle: Bundle,
    identity: ResultIdentity,
    evidence: list[Dataset],
    groups: list,
) -> hd.sr.Comprehensive3DSR:
    report = hd.sr.MeasurementReport(
        observation_context=_observation_context(bundle, identity),
        procedure_reported=metadata_code(bundle, "procedure_code"),
        imaging_measurements=groups,
        title=codes.DCM.ImagingMeasurementReport,
    )
    report[0].ContentSequence.append(_disclaimer())
    return hd.sr.Comprehensive3DSR(
        evidence=[highdicom_source(dataset) for dataset in evidence],
        content=report,
        series_instance_uid=identity.series_instance_uid,
        series_number=identity.series_number,
        sop_instance_uid=identity.sop_instance_uid,
        instance_number=identity.instance_number,
        manufacturer=identity.manufacturer,
        is_complete=True,
        series_description=series_description(bundle, "report"),
        software_versions=identity.software_version,
        device_serial_number=identity.device_serial_number,
    )


def encode_measurements(
    bundle: Bundle,
    result: Segmentation,
    segmentation: Dataset,
    sources: list[Dataset],
    identity: ResultIdentity,
) -> hd.sr.Comprehensive3DSR:
    """Volume and HU statistics of every segment of ``segmentation`` (the SEG of ``result``, made
    on ``sources``). Each segment references the source series, not its every slice
    (``ReferencedSegment.from_segmentation``), which keeps a whole CT's report small: the slices
    are listed once, as the report's evidence."""
    source_series = hd.sr.SourceSeriesForSegmentation(
        segmentation.ReferencedSeriesSequence[0].SeriesInstanceUID
    )
    groups = []
    for description in segmentation.SegmentSequence:
        name = str(description.TrackingID)
        measured = result.segments[name]
        hu = codes.UCUM.HounsfieldUnit
        measurements = [
            hd.sr.Measurement(name=codes.SCT.Volume, value=measured.volume_ml, unit=MILLILITER),
            hd.sr.Measurement(
                name=codes.DCM.AttenuationCoefficient,
                value=measured.mean_hu,
                unit=hu,
                derivation=codes.SCT.Mean,
            ),
            hd.sr.Measurement(
                name=codes.DCM.AttenuationCoefficient,
                value=measured.std_hu,
                unit=hu,
                derivation=codes.SCT.StandardDeviation,
            ),
        ]
        property_type = description.SegmentedPropertyTypeCodeSequence[0]
        groups.append(
            hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=str(description.TrackingUID), identifier=str(description.SegmentLabel)
                ),
                referenced_segment=hd.sr.ReferencedSegment(
                    sop_class_uid=segmentation.SOPClassUID,
                    sop_instance_uid=segmentation.SOPInstanceUID,
                    segment_number=int(description.SegmentNumber),
                    source_series=source_series,
                ),
                finding_type=hd.sr.CodedConcept.from_dataset(property_type),
                algorithm_id=_algorithm(bundle),
                measurements=measurements,
            )
        )
    return _report(bundle, identity, [*sources, segmentation], groups)


def encode_finding(
    bundle: Bundle, result: Classification, source: Dataset, identity: ResultIdentity
) -> hd.sr.Comprehensive3DSR:
    """The positive class's finding on ``source`` (the classified image's header): its
    probability, and whether it is present at the bundle's threshold."""
    present = result.finding == result.positive
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=derived_uid(identity.sop_instance_uid, "finding"),
            identifier=f"{bundle.name} finding",
        ),
        finding_type=metadata_code(bundle, "finding_codes", result.positive),
        algorithm_id=_algorithm(bundle),
        measurements=[
            hd.sr.Measurement(
                name=codes.DCM.Probability,
                value=round(result.probabilities[result.positive], 4),
                unit=NO_UNITS,
                algorithm_id=_algorithm(bundle),
            )
        ],
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(
                codes.DCM.PresenceOfProperty, codes.SCT.Present if present else codes.SCT.Absent
            )
        ],
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(source)],
    )
    return _report(bundle, identity, [source], [group])
