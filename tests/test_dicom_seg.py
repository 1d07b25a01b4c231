"""The CT tissue result as a DICOM SEG: valid, coded, compact, and where the tissue is."""

from __future__ import annotations

import subprocess

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from dicom_node.config import BUILTIN_BUNDLES
from inference.bundle import find_bundles
from inference.ct_series import load_ct_series
from inference.dicom_seg import NOT_FOR_DIAGNOSIS, ResultIdentity, encode_segmentation
from inference.run import segment

from .conftest import CT_SERIES

SLICES = 40  # a slab of the shared chest CT keeps the test fast


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    paths = sorted(CT_SERIES.glob("*.dcm"))[100 : 100 + SLICES]
    volume = load_ct_series(paths)
    bundle = find_bundles([BUILTIN_BUNDLES])["ct_tissue"]
    result = segment(bundle, volume)
    identity = ResultIdentity(
        generate_uid(), generate_uid(), 901, "DICOM AI node", "0.1.0", "AI_NODE", generate_uid()
    )
    seg = encode_segmentation(bundle, result, volume.datasets, identity)
    path = tmp_path_factory.mktemp("seg") / "seg.dcm"
    seg.save_as(path)
    return volume, result, pydicom.dcmread(path), path


def test_the_seg_validates(encoded):
    *_, path = encoded
    report = subprocess.run(["/usr/bin/dciodvfy", str(path)], capture_output=True, text=True)
    errors = [line for line in (report.stdout + report.stderr).splitlines() if "Error" in line]
    assert errors == []


def test_segments_are_coded_and_reference_the_source_series(encoded):
    volume, result, seg, _ = encoded
    labels = [s.SegmentLabel for s in seg.SegmentSequence]
    assert labels == [*(n.replace("_", " ") for n in result.segments if n != "body"), "body"]
    by_label = {s.SegmentLabel: s for s in seg.SegmentSequence}
    assert by_label["lung"].SegmentedPropertyTypeCodeSequence[0].CodeValue == "39607008"
    assert by_label["body"].SegmentedPropertyTypeCodeSequence[0].CodeValue == "38266002"
    algorithm = by_label["bone"].SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName == "ct_tissue" and algorithm.AlgorithmVersion == "1.0.0"
    assert seg.SegmentationType == "BINARY" and seg.BitsAllocated == 1
    assert (
        seg.SeriesDescription.endswith(NOT_FOR_DIAGNOSIS)
        or NOT_FOR_DIAGNOSIS[:40] in seg.SeriesDescription
    )
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
    assert 0 < len(frames) <= SLICES * len(names)
    for frame, groups in zip(frames, seg.PerFrameFunctionalGroupsSequence, strict=True):
        source = groups.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        slice_index = index[source]
        position = [float(v) for v in groups.PlanePositionSequence[0].ImagePositionPatient]
        expected = [float(v) for v in volume.datasets[slice_index].ImagePositionPatient]
        assert np.allclose(position, expected)
        name = names[groups.SegmentIdentificationSequence[0].ReferencedSegmentNumber]
        labels = result.labels[slice_index]
        mask = labels > 0 if name == "body" else labels == label_of[name]
        assert np.array_equal(frame.astype(bool), mask)
        assert mask.any(), "frames only where a segment is present"
