"""CT tissue segmentation: a phantom of known geometry, geometry checks, the real series."""

from __future__ import annotations

import copy

import numpy as np
import pydicom
import pytest

from dicom_node.config import BUILTIN_BUNDLES
from inference.bundle import find_bundles
from inference.ct_series import (
    CTVolume,
    UnsupportedSeries,
    load_ct_series,
    read_headers,
    series_files,
    sort_by_geometry,
)
from inference.ct_tissue import BONE, FAT, LUNG, SOFT_TISSUE, HounsfieldTissueSegmenter
from inference.run import segment

from .conftest import CT_SERIES, SHARED_DATA

SMALL_CT = SHARED_DATA / "ct_totalsegmentator_example" / "dicom"


def _ellipse(
    shape: tuple[int, int], centre: tuple[float, float], radii: tuple[float, float]
) -> np.ndarray:
    y, x = np.ogrid[: shape[0], : shape[1]]
    return ((y - centre[0]) / radii[0]) ** 2 + ((x - centre[1]) / radii[1]) ** 2 <= 1


def phantom() -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """A torso: fat rim around soft tissue, two lungs with a vessel each, a spine, a table
    below, gas in the 'stomach' under the left lung, outside air; noise of 15 HU."""
    slices, rows, columns = 60, 128, 128
    hu = np.full((slices, rows, columns), -1000.0)
    truth = {label: np.zeros(hu.shape, bool) for label in (LUNG, FAT, SOFT_TISSUE, BONE)}
    outer = _ellipse((rows, columns), (60, 64), (40, 55))
    inner = _ellipse((rows, columns), (60, 64), (35, 50))
    spine = _ellipse((rows, columns), (85, 64), (6, 6))
    z, y, x = np.ogrid[:slices, :rows, :columns]
    lungs = np.zeros(hu.shape, bool)
    for cx in (40, 88):
        lungs |= ((z - 34) / 16) ** 2 + ((y - 55) / 20) ** 2 + ((x - cx) / 14) ** 2 <= 1
    vessels = np.zeros(hu.shape, bool)
    for cx in (40, 88):
        vessels |= (((y - 55) ** 2 + (x - cx) ** 2) <= 4) & (np.abs(z - 34) < 8)
    stomach = ((z - 10) / 5) ** 2 + ((y - 55) / 10) ** 2 + ((x - 88) / 10) ** 2 <= 1
    body = np.zeros(hu.shape, bool)
    body[5:55] = outer
    truth[FAT][5:55] = outer & ~inner
    truth[SOFT_TISSUE][5:55] = inner
    truth[BONE][5:55] = spine
    truth[LUNG] = lungs & body
    truth[SOFT_TISSUE] &= ~(lungs | spine | stomach)
    truth[SOFT_TISSUE] |= vessels & lungs
    hu[body] = 40
    hu[truth[FAT]] = -100
    hu[truth[BONE]] = 700
    hu[lungs & body] = -850
    hu[vessels & lungs] = 40
    hu[stomach & body] = -1000
    hu[:, 106:110, 20:108] = 300  # the table, separated from the body by air
    rng = np.random.default_rng(7)
    return hu + rng.normal(0, 15, hu.shape), truth | {0: body}


def test_phantom_volumes_and_dice():
    hu, truth = phantom()
    labels = HounsfieldTissueSegmenter().segment(hu.astype(np.float32))
    for label in (LUNG, FAT, SOFT_TISSUE, BONE):
        found, expected = labels == label, truth[label]
        if (
            label == LUNG
        ):  # vessels inside the lungs count as lung, as a radiologist would outline it
            expected = expected | (truth[SOFT_TISSUE] & (labels == LUNG))
        dice = 2 * (found & expected).sum() / (found.sum() + expected.sum())
        assert dice >= 0.98, (label, dice)
        assert abs(found.sum() - expected.sum()) <= 0.02 * expected.sum(), label
    assert abs((labels > 0).sum() - truth[0].sum()) <= 0.02 * truth[0].sum()
    assert not labels[:, 106:110].any(), "the table is not part of the body"
    # Body volume against the formula: elliptic cylinder, pi * a * b * height (voxels of 1 mm^3
    # here).
    assert abs((labels > 0).sum() - np.pi * 40 * 55 * 50) <= 0.02 * np.pi * 40 * 55 * 50
    # The stomach gas under the left lung is not lung.
    assert not (labels[5:16] == LUNG).any()


def test_measurements_of_the_bundle_match_the_label_counts():
    hu, _ = phantom()
    bundle = find_bundles([BUILTIN_BUNDLES])["ct_tissue"]
    ct = CTVolume(hu.astype(np.float32), (2.0, 0.8, 0.8), [])
    result = segment(bundle, ct)
    voxel_ml = 2.0 * 0.8 * 0.8 / 1000
    lungs = result.labels == LUNG
    assert result.segments["lung"].volume_ml == pytest.approx(lungs.sum() * voxel_ml)
    assert result.segments["lung"].mean_hu == pytest.approx(float(hu[lungs].mean()), abs=0.01)
    assert result.segments["lung"].std_hu == pytest.approx(float(hu[lungs].std()), abs=0.01)
    assert result.segments["body"].volume_ml == pytest.approx((result.labels > 0).sum() * voxel_ml)
    assert set(result.segments) >= {"lung", "fat", "soft_tissue", "bone", "body"}


def _headers() -> list[pydicom.Dataset]:
    return read_headers(series_files(SMALL_CT))


def test_slices_are_sorted_by_position_not_by_file_or_instance_number():
    headers = _headers()
    shuffled = headers[::-1]
    for number, ds in enumerate(shuffled):
        ds.InstanceNumber = number
    order, gap = sort_by_geometry(shuffled)
    z = [float(shuffled[i].ImagePositionPatient[2]) for i in order]
    assert z == sorted(z)
    assert gap == pytest.approx(2.0)


@pytest.mark.parametrize(
    "damage, message",
    [
        ("tilt", "gantry tilt"),
        ("gap", "uneven slice spacing"),
        ("duplicate", "share one position"),
        ("orientation", "one orientation"),
    ],
)
def test_irregular_series_are_refused_with_the_reason(damage, message):
    headers = [copy.deepcopy(ds) for ds in _headers()]
    if damage == "tilt":  # each slice shifted in y as z grows: a tilted gantry
        for ds in headers:
            x, y, z = (float(v) for v in ds.ImagePositionPatient)
            ds.ImagePositionPatient = [x, y + 0.3 * z, z]
    elif damage == "gap":
        del headers[7]
    elif damage == "duplicate":
        headers[3].ImagePositionPatient = headers[4].ImagePositionPatient
    else:
        headers[5].ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    with pytest.raises(UnsupportedSeries, match=message):
        sort_by_geometry(headers)


def test_real_chest_ct_lungs_and_stomach():
    """The shared 248-slice chest CT: plausible adult volumes, HU ranges, stomach gas left out."""
    volume = load_ct_series(sorted(CT_SERIES.glob("*.dcm")))
    assert volume.hu.shape == (248, 512, 512)
    result = segment(find_bundles([BUILTIN_BUNDLES])["ct_tissue"], volume)
    segments = result.segments
    assert 1500 < segments["lung"].volume_ml < 5000
    assert segments["lung"].mean_hu < -600
    assert -190 <= segments["fat"].mean_hu <= -30
    assert segments["bone"].mean_hu > 200
    assert 10_000 < segments["body"].volume_ml < 40_000
    lowest = result.labels[:15]  # upper abdomen: stomach gas, no lung
    assert not (lowest == LUNG).any()
