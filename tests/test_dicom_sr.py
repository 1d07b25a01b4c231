"""Results as TID 1500 reports and the classifier's explanation as a fractional SEG: valid, read
back by highdicom, and saying what the model computed."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from monai.transforms import Resize
from pydicom.sr.codedict import codes

from inference.dicom_seg import NOT_FOR_DIAGNOSIS, derived_uid

from .conftest import pixelmed_sr_errors


def test_measurement_report_is_tid_1500_with_one_group_per_segment(measurements, ct_slab):
    seg, report = measurements
    assert report.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    assert report.ConceptNameCodeSequence[0].CodeValue == "126000"  # Imaging Measurement Report
    groups = hd.sr.srread(report.filename).content.get_volumetric_roi_measurement_groups()
    assert len(groups) == len(seg.SegmentSequence)
    for group, segment in zip(groups, seg.SegmentSequence, strict=True):
        # OHIF needs the Tracking UID; it is the SEG segment's own.
        assert group.tracking_uid == segment.TrackingUID
        referenced = group.referenced_segment
        assert referenced.referenced_sop_instance_uid == seg.SOPInstanceUID
        assert referenced.referenced_segment_numbers == [segment.SegmentNumber]
        measured = ct_slab.result.segments[segment.TrackingID]
        (volume,) = group.get_measurements(name=codes.SCT.Volume)
        assert volume.value == pytest.approx(measured.volume_ml, rel=1e-6)
        assert volume.unit.value == "ml"
        mean, std = group.get_measurements(name=codes.DCM.AttenuationCoefficient)
        assert mean.value == pytest.approx(measured.mean_hu, rel=1e-6)
        assert std.value == pytest.approx(measured.std_hu, rel=1e-6)
        assert mean.unit.value == "[hnsf'U]"
    evidence = {
        item.ReferencedSOPInstanceUID
        for study in report.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for item in series.ReferencedSOPSequence
    }
    assert seg.SOPInstanceUID in evidence
    assert {str(d.SOPInstanceUID) for d in ct_slab.volume.datasets} <= evidence


def test_finding_report_names_the_model_and_the_image(classified):
    bundle, result, header, _, report = classified
    assert report.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    content = hd.sr.srread(report.filename).content
    (group,) = content.get_image_measurement_groups()
    assert group.finding_type.value == "233604007"  # SNOMED CT pneumonia
    (probability,) = group.get_measurements(name=codes.DCM.Probability)
    assert probability.value == pytest.approx(result.probabilities["pneumonia"], abs=1e-4)
    (presence,) = group.get_qualitative_evaluations(name=codes.DCM.PresenceOfProperty)
    present = result.probabilities["pneumonia"] >= bundle.threshold
    assert presence.value == (codes.SCT.Present if present else codes.SCT.Absent)
    (source,) = group.source_images
    assert source.referenced_sop_instance_uid == header.SOPInstanceUID
    assert group.tracking_uid
    observers = [
        item
        for item in report.ContentSequence
        if item.ConceptNameCodeSequence[0].CodeMeaning == "Device Observer Name"
    ]
    assert [item.TextValue for item in observers] == ["cxr_pneumonia"]


def test_explanation_is_the_grad_cam_map_on_the_image_grid(classified):
    _, result, header, explanation, _ = classified
    assert explanation.SegmentationType == "FRACTIONAL"
    assert explanation.SegmentationFractionalType == "PROBABILITY"
    assert (explanation.Rows, explanation.Columns) == (header.Rows, header.Columns)
    reference = explanation.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0]
    assert reference.ReferencedSOPInstanceUID == header.SOPInstanceUID
    expected = np.asarray(
        Resize((header.Rows, header.Columns), mode="bilinear")(result.heatmap[None])
    )[0]
    stored = explanation.pixel_array.astype(np.float32) / explanation.MaximumFractionalValue
    assert np.abs(stored - np.clip(expected, 0, 1)).max() <= 1 / 255 + 1e-6
    assert stored.max() > 0.5  # a map, not an empty frame


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
    from inference.dicom_seg import metadata_code

    procedure = metadata_code(find_bundles([BUILTIN_BUNDLES])[name], "procedure_code")
    assert procedure in codes.cid100.concepts.values()
