"""Results as TID 1500 reports and the classifier's explanation as a banded BINARY SEG: valid,
read back by highdicom, and saying what the model computed, and where."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from monai.transforms import Resize
from pydicom import Dataset
from pydicom.sr.codedict import codes

from inference.dicom_seg import EXPLANATION_BANDS, NOT_FOR_DIAGNOSIS, derived_uid
from inference.dicom_sr import OHIF_TOOLS, encode_finding

from .conftest import pixelmed_sr_errors, result_identity


def test_measurement_report_is_tid_1500_with_one_group_per_segment(measurements, ct_slab):
    seg, report = measurements
    assert report.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    assert report.ConceptNameCodeSequence[0].CodeValue == "126000"  # Imaging Measurement Report
    groups = hd.sr.srread(report.filename).content.get_image_measurement_groups()
    assert len(groups) == len(seg.SegmentSequence)
    slices = {d.SOPInstanceUID: d for d in ct_slab.volume.datasets}
    labels = {
        d.SOPInstanceUID: labels
        for d, labels in zip(ct_slab.volume.datasets, ct_slab.result.labels, strict=True)
    }
    label_of = {name: label for label, name in ct_slab.result.names.items()}
    for group, segment in zip(groups, seg.SegmentSequence, strict=True):
        # OHIF needs the Tracking UID; it is the SEG segment's own, and so is the label.
        assert group.tracking_uid == segment.TrackingUID
        assert group.tracking_identifier == f"{OHIF_TOOLS}:CircleROI:{segment.SegmentLabel}"
        (comment,) = [item for item in group[0].ContentSequence if item.name == codes.DCM.Comment]
        assert comment.value.startswith(f"{segment.SegmentLabel}: volume ")
        measured = ct_slab.result.segments[segment.TrackingID]
        # Every measurement inferred from one circle inside the segment on a source slice.
        regions = [m.referenced_coordinates for m in group.get_measurements()]
        assert len(regions) == 3 and all(r == regions[0] for r in regions)
        (circle,) = regions[0]
        assert circle.graphic_type == hd.sr.GraphicTypeValues.CIRCLE
        image = circle.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        assert image in slices
        (column, row), rim = circle.value
        depth, row, column = int(rim[0] - column), int(row), int(column)
        # The centre and the points the circle's radius away along the axes lie in the segment.
        for dr, dc in ((0, 0), (-depth, 0), (depth, 0), (0, -depth), (0, depth)):
            assert labels[image][row + dr, column + dc] == label_of[segment.TrackingID]
        (volume,) = group.get_measurements(name=codes.SCT.Volume)
        assert volume.value == pytest.approx(measured.volume_ml, rel=1e-6)
        assert volume.unit.value == "ml"
        # Named as OHIF lists them (its panel shows a NUM's concept name, not its derivation).
        (mean,) = group.get_measurements(name=codes.SCT.Mean)
        (std,) = group.get_measurements(name=codes.SCT.StandardDeviation)
        assert mean.value == pytest.approx(measured.mean_hu, rel=1e-6)
        assert std.value == pytest.approx(measured.std_hu, rel=1e-6)
        assert mean.unit.value == std.unit.value == "[hnsf'U]"
    evidence = {
        item.ReferencedSOPInstanceUID
        for study in report.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for item in series.ReferencedSOPSequence
    }
    assert seg.SOPInstanceUID in evidence
    assert {str(d.SOPInstanceUID) for d in ct_slab.volume.datasets} <= evidence


def finding_group(report: Dataset):
    (group,) = hd.sr.srread(report.filename).content.get_image_measurement_groups()
    (comment,) = [item for item in group[0].ContentSequence if item.name == codes.DCM.Comment]
    (presence,) = group.get_qualitative_evaluations(name=codes.DCM.PresenceOfProperty)
    return group, presence.value, comment.value


@pytest.mark.parametrize("present", [True, False])
def test_an_assessed_finding_is_present_or_absent_at_the_threshold(classified, tmp_path, present):
    """The CR's result as if it were within the model's domain, its probability on either side
    of the threshold: the report says present or absent, at which threshold."""
    bundle, result, header, _, _ = classified
    probability = bundle.threshold + (0.01 if present else -0.01)
    assessed = replace(
        result, concerns=[], probabilities={"normal": 1 - probability, "pneumonia": probability}
    )
    report = encode_finding(bundle, assessed, header, result_identity(904))
    report.save_as(tmp_path / "sr.dcm")
    group, presence, comment = finding_group(pydicom.dcmread(tmp_path / "sr.dcm"))
    assert presence == (codes.SCT.Present if present else codes.SCT.Absent)
    verdict = "present" if present else "absent"
    # OHIF 3.13 lists (hydrates) a measurement whose Tracking Identifier names one of its tools,
    # and labels it by the group's Comment.
    assert group.tracking_identifier == (
        f"{OHIF_TOOLS}:RectangleROI:pneumonia {verdict} (threshold {bundle.threshold:g})"
    )
    assert comment == (
        f"pneumonia {verdict}: probability {probability:.2f} (threshold {bundle.threshold:g})"
    )


def test_finding_report_names_the_model_and_the_image(classified):
    """The adult CR: its probability, Indeterminate presence and the reason it was not
    assessed."""
    bundle, result, header, _, report = classified
    assert report.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    group, presence, comment = finding_group(report)
    assert group.finding_type.value == "233604007"  # SNOMED CT pneumonia
    (probability,) = group.get_measurements(name=codes.DCM.Probability)
    assert probability.value == pytest.approx(result.probabilities["pneumonia"], abs=1e-4)
    assert presence == codes.SCT.Indeterminate
    (source,) = group.source_images
    assert source.referenced_sop_instance_uid == header.SOPInstanceUID
    assert group.tracking_identifier == (
        f"{OHIF_TOOLS}:RectangleROI:pneumonia not assessed (threshold {bundle.threshold:g})"
    )
    probability_text = f"{result.probabilities['pneumonia']:.2f}"
    assert comment.startswith(
        "pneumonia not assessed, input outside the model's domain (patient age outside the "
        "trained 0-17 years"
    )
    assert comment.endswith(
        f"probability {probability_text} not reliable (threshold {bundle.threshold:g})"
    )
    # The probability inferred from the box around the explanation's strongest evidence.
    (box,) = probability.referenced_coordinates
    assert box.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
    corners = box.value
    assert (corners[0] == corners[-1]).all() and len(corners) == 5
    (left, top), (right, bottom) = corners.min(axis=0), corners.max(axis=0)
    assert 0 <= left < right <= header.Columns and 0 <= top < bottom <= header.Rows
    assert group.tracking_uid
    observers = [
        item
        for item in report.ContentSequence
        if item.ConceptNameCodeSequence[0].CodeMeaning == "Device Observer Name"
    ]
    assert [item.TextValue for item in observers] == ["cxr_pneumonia"]


def test_explanation_is_the_grad_cam_map_on_the_image_grid_in_bands(classified):
    _, result, header, explanation, _ = classified
    assert explanation.SegmentationType == "BINARY"  # OHIF 3.13 shows no FRACTIONAL SEG
    assert (explanation.Rows, explanation.Columns) == (header.Rows, header.Columns)
    reference = explanation.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0]
    assert reference.ReferencedSOPInstanceUID == header.SOPInstanceUID
    # OHIF reads Pixel Measures; this CR has none of its own (its Pixel Spacing is zero).
    measures = explanation.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert [float(v) for v in measures.PixelSpacing] == [1.0, 1.0]
    # ... and a plane orientation, the one it lays an image without orientation in.
    orientation = explanation.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0]
    assert [float(v) for v in orientation.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    expected = np.clip(
        np.asarray(Resize((header.Rows, header.Columns), mode="bilinear")(result.heatmap[None]))[0],
        0,
        1,
    )
    seg = hd.seg.Segmentation.from_dataset(explanation)
    bands = seg.get_pixels_by_source_instance([header.SOPInstanceUID])[0]
    assert [s.SegmentLabel for s in explanation.SegmentSequence] == [
        f"pneumonia evidence >= {low:.0%} (Grad-CAM)" for low, _ in EXPLANATION_BANDS
    ]
    bounds = [low for low, _ in EXPLANATION_BANDS] + [np.inf]
    for band, (low, high) in enumerate(zip(bounds, bounds[1:], strict=False)):
        assert np.array_equal(bands[..., band], (expected >= low) & (expected < high))
    assert bands.sum(axis=-1).max() == 1, "the bands do not overlap: one layer in a viewer"


def test_result_uids_are_derived_from_their_source():
    uid = derived_uid("1.2.3", "ct_tissue", "1.0.0", "segmentation")
    assert uid == derived_uid("1.2.3", "ct_tissue", "1.0.0", "segmentation")
    assert uid != derived_uid("1.2.3", "ct_tissue", "1.0.1", "segmentation")
    assert uid.startswith("2.25.") and len(uid) <= 64
    assert pydicom.uid.UID(uid).is_valid


def test_reports_validate_in_pixelmed(measurements, classified):
    """IOD, TID 1500 structure and context groups (the procedure reported in CID 100)."""
    reports = [Path(measurements[1].filename), Path(classified[-1].filename)]
    assert pixelmed_sr_errors(reports) == {path.name: [] for path in reports}


def test_reports_say_whole_that_they_are_not_for_primary_diagnosis(measurements, classified):
    for report in (measurements[1], classified[-1]):
        assert report.SeriesDescription.endswith(f": {NOT_FOR_DIAGNOSIS}")
        (evaluations,) = [
            item
            for item in report.ContentSequence
            if item.ConceptNameCodeSequence[0].CodeMeaning == "Qualitative Evaluations"
        ]
        (comment,) = evaluations.ContentSequence
        assert comment.ConceptNameCodeSequence[0].CodeValue == "121106"  # Comment
        assert comment.TextValue == NOT_FOR_DIAGNOSIS


@pytest.mark.parametrize("name", ["ct_tissue", "cxr_pneumonia", "breast_us"])
def test_each_bundles_procedure_is_in_cid_100(name):
    from dicom_node.config import BUILTIN_BUNDLES
    from inference.bundle import find_bundles
    from inference.result_codes import metadata_code

    procedure = metadata_code(find_bundles([BUILTIN_BUNDLES])[name], "procedure_code")
    assert procedure in codes.cid100.concepts.values()
