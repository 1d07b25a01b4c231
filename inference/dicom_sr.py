"""Model results as TID 1500 Imaging Measurement Reports (highdicom Comprehensive 3D SR), the
only SR template OHIF renders.

Every group is a TID 1501 Measurement Group whose every measurement is INFERRED FROM a region on
one source image (TID 300 row 8, TID 320: an SCOORD inside the NUM item), the layout OHIF's own SR
writer uses: OHIF 3.13 lists a measurement and draws it only where each NUM carries its SCOORD
(a TID 1411 group's segment reference, or a group-level region, leaves its panel empty or crashes
its viewport).

OHIF lists a group in its measurement panel only where it can make one of its tools of it: the
Tracking Identifier starts with that tool's name (``OHIF_TOOLS``: a circle for a tissue, a
rectangle for a finding's box), then says what the group is; OHIF's label for it is the group's
Comment, which states the values in words (pixelmed's validator warns that TID 1501 does not
list a Comment; it is no error).

A segmentation gives one group per SEG segment, tracked by the segment's own Tracking UID and
label: its volume (mL) and mean and standard deviation (HU), drawn as a circle at the
segment's deepest point on the slice where it is widest. Mean and standard deviation are the
NUMs' concept names (SCT 373098007, 386136009) in HU, as OHIF's own SR writer has them: OHIF
lists a NUM by its concept name alone, so the TID 1419 way (Attenuation Coefficient with a
Mean or Standard Deviation derivation) shows two alike "Attenuation Coefficient" lines.

A classification gives one group on the image: the finding type of its positive class (the
bundle's ``finding_codes``), the model's probability for it drawn as the box around the
explanation's evidence, and whether it is present at the model's threshold (also said by the
group's Tracking Identifier, which OHIF lists); for an image outside the model's input domain
the presence is Indeterminate (SCT 82334004) and the Comment says why it was not assessed. The
probability is the calibrated one, on the same scale as the threshold. Every group names the
algorithm; the model is the observer device. The report's Qualitative Evaluations say, as text,
that it is not for primary diagnosis.
"""

from __future__ import annotations

import highdicom as hd
import numpy as np
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from .bundle import Bundle
from .dicom_seg import (
    EXPLANATION_BANDS,
    NOT_FOR_DIAGNOSIS,
    ResultIdentity,
    derived_uid,
    explanation_map,
    highdicom_source,
    segment_masks,
    series_description,
)
from .result_codes import metadata_code
from .run import Classification, Segmentation

MILLILITER = Code("ml", "UCUM", "milliliter")
NO_UNITS = Code("1", "UCUM", "no units")
#: OHIF 3.13 lists a measurement group in its panel (hydrates it) only where its Tracking
#: Identifier starts with the name of the cornerstone tool that draws its region (dcmjs
#: adapters), and labels it with the group's Comment.
OHIF_TOOLS = "Cornerstone3DTools@^0.1.0"
#: TID 1500 row 12, the report's own qualitative evaluations (not in pydicom's code dictionary)
QUALITATIVE_EVALUATIONS = Code("C0034375", "UMLS", "Qualitative Evaluations")


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


def _tracked(tool: str, identifier: str, uid: str) -> hd.sr.TrackingIdentifier:
    """A group's tracking identifier: ``identifier`` after the OHIF tool that draws it."""
    return hd.sr.TrackingIdentifier(uid=uid, identifier=f"{OHIF_TOOLS}:{tool}:{identifier}")


def _commented(group: hd.sr.MeasurementsAndQualitativeEvaluations, text: str):
    """``group`` with ``text`` as its Comment (a TEXT qualitative evaluation, TID 1501): the
    values as a reader sees them, the label OHIF lists the group by."""
    group[0].ContentSequence.append(
        hd.sr.TextContentItem(
            name=codes.DCM.Comment,
            value=text,
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
        )
    )
    return group


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


def _region(
    source: Dataset, graphic_type: str, points: np.ndarray
) -> hd.sr.CoordinatesForMeasurement:
    """``points`` (column, row) on ``source``: where a measurement is (TID 320)."""
    return hd.sr.CoordinatesForMeasurement(
        graphic_type=graphic_type,
        graphic_data=points.astype(np.float32),
        source_image=hd.sr.SourceImageForRegion.from_source_image(highdicom_source(source)),
    )


def _erode(mask: np.ndarray) -> np.ndarray:
    """``mask`` less every pixel with a 4-neighbour (or the image edge) outside it."""
    inner = mask.copy()
    inner[[0, -1], :] = inner[:, [0, -1]] = False
    inner[1:] &= mask[:-1]
    inner[:-1] &= mask[1:]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return inner


def inscribed_circle(volume: np.ndarray) -> tuple[int, np.ndarray]:
    """The slice where ``volume`` (slices, rows, columns) is widest, and on it the centre and a
    rim point (column, row) of a circle at the mask's deepest point: the mask peeled until one
    more peel leaves nothing, the centre the remaining pixel nearest their mean, the radius the
    peels (every pixel that many steps away along the rows or columns is in the mask)."""
    index = int(volume.sum(axis=(1, 2)).argmax())
    core, depth = volume[index], 0
    while (inner := _erode(core)).any():
        core, depth = inner, depth + 1
    rows, columns = np.nonzero(core)
    nearest = int(np.hypot(rows - rows.mean(), columns - columns.mean()).argmin())
    centre = np.array([columns[nearest] + 0.5, rows[nearest] + 0.5])
    return index, np.stack([centre, centre + [depth + 0.5, 0.0]])


def encode_measurements(
    bundle: Bundle,
    result: Segmentation,
    segmentation: Dataset,
    sources: list[Dataset],
    identity: ResultIdentity,
) -> hd.sr.Comprehensive3DSR:
    """Volume and HU statistics of every segment of ``segmentation`` (the SEG of ``result``, made
    on ``sources``), each group tracked as its segment; the SEG and the slices are the report's
    evidence."""
    masks = dict(segment_masks(result))
    hu = codes.UCUM.HounsfieldUnit
    groups = []
    for description in segmentation.SegmentSequence:
        name = str(description.TrackingID)
        measured = result.segments[name]
        index, circle = inscribed_circle(masks[name])
        where = [_region(sources[index], hd.sr.GraphicTypeValues.CIRCLE, circle)]
        statistics = (
            (measured.mean_hu, codes.SCT.Mean),
            (measured.std_hu, codes.SCT.StandardDeviation),
        )
        measurements = [
            hd.sr.Measurement(
                name=codes.SCT.Volume,
                value=measured.volume_ml,
                unit=MILLILITER,
                referenced_coordinates=where,
            ),
            *(
                hd.sr.Measurement(name=name, value=value, unit=hu, referenced_coordinates=where)
                for value, name in statistics
            ),
        ]
        property_type = description.SegmentedPropertyTypeCodeSequence[0]
        label = str(description.SegmentLabel)
        group = hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=_tracked("CircleROI", label, str(description.TrackingUID)),
            finding_type=hd.sr.CodedConcept.from_dataset(property_type),
            algorithm_id=_algorithm(bundle),
            measurements=measurements,
        )
        text = (
            f"{label}: volume {measured.volume_ml:.1f} mL, mean {measured.mean_hu:.0f} HU,"
            f" SD {measured.std_hu:.0f} HU"
        )
        groups.append(_commented(group, text))
    return _report(bundle, identity, [*sources, segmentation], groups)


def evidence_box(result: Classification, source: Dataset) -> np.ndarray:
    """The closed outline (column, row) of the box around the explanation's evidence on
    ``source``: every pixel of the map in the lowest ``EXPLANATION_BANDS`` band or above."""
    rows, columns = np.nonzero(explanation_map(result, source) >= EXPLANATION_BANDS[0][0])
    left, top = columns.min(), rows.min()
    right, bottom = columns.max() + 1, rows.max() + 1
    return np.array([[left, top], [right, top], [right, bottom], [left, bottom], [left, top]])


def encode_finding(
    bundle: Bundle, result: Classification, source: Dataset, identity: ResultIdentity
) -> hd.sr.Comprehensive3DSR:
    """The positive class's finding on ``source`` (the classified image's header): its
    probability where the explanation points, and whether it is present at the bundle's
    threshold; for an image outside the model's domain, Indeterminate and why."""
    probability = result.probabilities[result.positive]
    if result.assessed:
        present = result.finding == result.positive
        verdict = "present" if present else "absent"
        presence = codes.SCT.Present if present else codes.SCT.Absent
        text = f"{result.positive} {verdict}: probability {probability:.2f}"
    else:
        verdict, presence = "not assessed", codes.SCT.Indeterminate
        text = (
            f"{result.positive} not assessed, input outside the model's domain "
            f"({'; '.join(result.concerns)}): probability {probability:.2f} not reliable"
        )
    text += f" (threshold {result.threshold:g})"
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracked(
            "RectangleROI",
            f"{result.positive} {verdict} (threshold {result.threshold:g})",
            derived_uid(identity.sop_instance_uid, "finding"),
        ),
        finding_type=metadata_code(bundle, "finding_codes", result.positive),
        algorithm_id=_algorithm(bundle),
        measurements=[
            hd.sr.Measurement(
                name=codes.DCM.Probability,
                value=round(probability, 4),
                unit=NO_UNITS,
                algorithm_id=_algorithm(bundle),
                referenced_coordinates=[
                    _region(source, hd.sr.GraphicTypeValues.POLYLINE, evidence_box(result, source))
                ],
            )
        ],
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(codes.DCM.PresenceOfProperty, presence)
        ],
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(source)],
    )
    return _report(bundle, identity, [source], [_commented(group, text)])
