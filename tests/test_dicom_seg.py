"""The CT tissue result as a DICOM SEG: valid, coded, compact, and where the tissue is."""

from __future__ import annotations

import itertools
import json
import math
import shutil
from types import SimpleNamespace

import highdicom as hd
import numpy as np
import pydicom
import pytest

from inference.dicom_seg import NOT_FOR_DIAGNOSIS, series_description

from .conftest import dciodvfy_errors


@pytest.fixture(scope="module")
def encoded(ct_slab):
    return ct_slab.volume, ct_slab.result, pydicom.dcmread(ct_slab.seg_path), ct_slab.seg_path


def test_the_seg_validates(encoded):
    *_, path = encoded
    assert dciodvfy_errors(path) == set()


def test_segments_are_coded_and_reference_the_source_series(encoded):
    volume, result, seg, _ = encoded
    labels = [s.SegmentLabel for s in seg.SegmentSequence]
    # The tissues only: the composite body would overlap them all (a second layer in OHIF).
    assert labels == [n.replace("_", " ") for n in result.segments if n != "body"]
    by_label = {s.SegmentLabel: s for s in seg.SegmentSequence}
    assert by_label["lung"].SegmentedPropertyTypeCodeSequence[0].CodeValue == "39607008"
    algorithm = by_label["bone"].SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName == "ct_tissue" and algorithm.AlgorithmVersion == "1.0.0"
    assert seg.SegmentationType == "BINARY" and seg.BitsAllocated == 1
    assert seg.SeriesDescription == f"ct_tissue segmentation: {NOT_FOR_DIAGNOSIS}"
    (series,) = seg.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == volume.datasets[0].SeriesInstanceUID
    assert seg.FrameOfReferenceUID == volume.datasets[0].FrameOfReferenceUID
    assert seg.StudyInstanceUID == volume.datasets[0].StudyInstanceUID


def test_each_frame_lies_on_its_source_slice_and_holds_its_mask(encoded):
    """Frame positions checked against the source geometry (SEGs shifted or flipped in viewers
    are the known failure, MONAI Deploy app-sdk#397)."""
    volume, result, seg, _ = encoded
    index = {ds.SOPInstanceUID: i for i, ds in enumerate(volume.datasets)}
    names = {s.SegmentNumber: s.SegmentLabel.replace(" ", "_") for s in seg.SegmentSequence}
    label_of = {name: label for label, name in result.names.items()}
    frames = seg.pixel_array.reshape(-1, seg.Rows, seg.Columns)
    assert 0 < len(frames) <= len(volume.datasets) * len(names)
    for frame, groups in zip(frames, seg.PerFrameFunctionalGroupsSequence, strict=True):
        source = groups.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        slice_index = index[source]
        position = [float(v) for v in groups.PlanePositionSequence[0].ImagePositionPatient]
        expected = [float(v) for v in volume.datasets[slice_index].ImagePositionPatient]
        assert np.allclose(position, expected)
        name = names[groups.SegmentIdentificationSequence[0].ReferencedSegmentNumber]
        labels = result.labels[slice_index]
        mask = labels == label_of[name]
        assert np.array_equal(frame.astype(bool), mask)
        assert mask.any(), "frames only where a segment is present"


def test_each_tissue_has_a_readable_name_and_its_own_stable_colour(encoded, ct_slab):
    """Viewers colour a segment by its Recommended Display CIELab Value: the bundle's colour for
    the tissue, whichever segments a study has, and far enough from the others to tell apart."""
    *_, seg, _ = encoded
    labels = [s.SegmentLabel for s in seg.SegmentSequence]
    assert labels == ["lung", "fat", "soft tissue", "bone", "other body"]
    codes = ct_slab.bundle.metadata["segment_codes"]
    colours = {}
    for segment in seg.SegmentSequence:
        stored = hd.color.CIELabColor.from_dicom_value(segment.RecommendedDisplayCIELabValue)
        expected = codes[segment.TrackingID]["color"]
        assert stored.value == hd.color.CIELabColor.from_string(expected).value
        colours[segment.SegmentLabel] = (stored.l_star, stored.a_star, stored.b_star)
    for (a, lab_a), (b, lab_b) in itertools.combinations(colours.items(), 2):
        assert math.dist(lab_a, lab_b) > 30, f"{a} and {b} look alike"


@pytest.mark.parametrize("name", ["ct_tissue", "a_model_with_a_name_far_longer_than_a_series_list"])
@pytest.mark.parametrize("kind", ["segmentation", "explanation", "report"])
def test_series_description_keeps_the_disclaimer_whole(name, kind):
    description = series_description(SimpleNamespace(name=name), kind)
    assert len(description) <= 64
    assert description.endswith(f" {kind}: {NOT_FOR_DIAGNOSIS}")
    assert description.startswith(name[:10])


def test_a_bundle_colour_that_is_no_colour_is_refused_when_configured(tmp_path):
    from dicom_node.config import BUILTIN_BUNDLES
    from inference.bundle import Bundle, BundleError
    from inference.result_codes import check_result_codes

    bundle = tmp_path / "ct_local"
    shutil.copytree(BUILTIN_BUNDLES / "ct_tissue", bundle)
    metadata = json.loads((bundle / "configs" / "metadata.json").read_text())
    metadata["segment_codes"]["lung"]["color"] = "lung pink"
    (bundle / "configs" / "metadata.json").write_text(json.dumps(metadata))
    with pytest.raises(BundleError, match="segment_codes.lung.color is not a colour"):
        check_result_codes(Bundle.load(bundle))
