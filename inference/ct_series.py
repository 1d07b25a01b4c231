"""A CT series as one volume in Hounsfield units, ordered by patient geometry.

Slices are sorted by their position along the slice normal (Image Position/Orientation Patient),
never
by file name or Instance Number, which scanners and PACS exports do not keep reliably. Volumes this
code cannot measure correctly (gantry tilt, uneven or duplicate slice positions, mixed orientation
or
size) are refused with a message that says what is wrong.
"""

from __future__ import annotations

import mmap
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.pixels import apply_modality_lut

from .errors import UnsuitableInput

SPACING_TOLERANCE_MM = 0.01
ORIENTATION_TOLERANCE = 1e-3


class UnsupportedSeries(UnsuitableInput):
    """The series cannot be assembled into a regular volume; the message says why."""


@dataclass
class CTVolume:
    """HU voxels (slices, rows, columns) and the geometry to measure and reference them."""

    hu: np.ndarray
    spacing: tuple[float, float, float]  # mm between slices, rows, columns
    datasets: list[pydicom.Dataset]  # headers in volume order (pixel data released)

    @property
    def voxel_ml(self) -> float:
        return float(np.prod(self.spacing)) / 1000.0


def read_headers(paths: list[Path]) -> list[pydicom.Dataset]:
    """Headers only, for sorting and routing, without decoding pixels."""
    return [pydicom.dcmread(path, stop_before_pixels=True) for path in paths]


def sort_by_geometry(datasets: list[pydicom.Dataset]) -> tuple[list[int], float]:
    """Order of the slices along the normal and the (uniform) distance between them.

    Raises :class:`UnsupportedSeries` for anything but a regular stack of parallel, equally spaced,
    untilted slices of one size.
    """
    if len(datasets) < 2:
        raise UnsupportedSeries(f"a volume needs at least 2 slices, the series has {len(datasets)}")
    for ds in datasets:
        for keyword in (
            "ImagePositionPatient",
            "ImageOrientationPatient",
            "PixelSpacing",
            "Rows",
            "Columns",
        ):
            if keyword not in ds:
                raise UnsupportedSeries(f"slice {ds.get('InstanceNumber', '?')} has no {keyword}")
    orientation = np.array(datasets[0].ImageOrientationPatient, dtype=float)
    shape = (datasets[0].Rows, datasets[0].Columns)
    for ds in datasets[1:]:
        if (
            np.abs(np.array(ds.ImageOrientationPatient, dtype=float) - orientation).max()
            > ORIENTATION_TOLERANCE
        ):
            raise UnsupportedSeries(
                "the slices do not share one orientation (several stacks in one series?)"
            )
        if (ds.Rows, ds.Columns) != shape:
            raise UnsupportedSeries("the slices do not share one size")
    normal = np.cross(orientation[:3], orientation[3:])
    positions = np.array([ds.ImagePositionPatient for ds in datasets], dtype=float)
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    steps = np.diff(positions[order], axis=0)
    gaps = np.diff(along[order])
    if gaps.min() <= SPACING_TOLERANCE_MM:
        raise UnsupportedSeries(
            "two slices share one position (repeated or overlapping acquisitions in one series)"
        )
    sideways = np.linalg.norm(steps - np.outer(gaps, normal), axis=1)
    tilt = float(np.degrees(np.arctan2(sideways.max(), gaps[np.argmax(sideways)])))
    if tilt > 0.1:
        raise UnsupportedSeries(
            f"gantry tilt or sheared stack ({tilt:.1f} degrees from the slice normal) "
            "is not supported"
        )
    if gaps.max() - gaps.min() > max(SPACING_TOLERANCE_MM, 0.01 * gaps.mean()):
        raise UnsupportedSeries(
            f"uneven slice spacing ({gaps.min():.2f} to {gaps.max():.2f} mm: missing slices?) "
            "is not supported"
        )
    return [int(i) for i in order], float(gaps.mean())


#: the volume a decoding process writes its slices into (shared with the process that reads it)
_shared_volume: np.ndarray | None = None


def _hu_slice(path: Path) -> np.ndarray:
    ds = pydicom.dcmread(path)
    return np.asarray(apply_modality_lut(ds.pixel_array, ds), dtype=np.float32)


def _share_volume(buffer: mmap.mmap, shape: tuple[int, int, int]) -> None:
    global _shared_volume
    _shared_volume = np.frombuffer(buffer, np.float32).reshape(shape)


def _decode_into_shared_volume(task: tuple[int, Path]) -> None:
    index, path = task
    assert _shared_volume is not None, "a decoding process starts with _share_volume"
    _shared_volume[index] = _hu_slice(path)


def load_ct_series(paths: list[Path], headers: list[pydicom.Dataset] | None = None) -> CTVolume:
    """Decode a series (any order of files) into a HU volume, slices decoded by one process per core
    (the JPEG/JPEG 2000 decoders hold the GIL, so threads would run them one at a time).
    ``headers``, when the caller has read them already, are those of ``paths`` in the same order.

    The decoding processes write into the volume itself, a shared anonymous mapping they
    inherit when forked: sending each slice back through a pipe cost as much as decoding it."""
    datasets = headers if headers is not None else read_headers(paths)
    modalities = {ds.get("Modality") for ds in datasets}
    if modalities != {"CT"}:
        raise UnsupportedSeries(
            f"expected a CT series, got Modality {sorted(map(str, modalities))}"
        )
    order, gap = sort_by_geometry(datasets)
    ordered = [paths[i] for i in order]
    shape = (len(ordered), int(datasets[0].Rows), int(datasets[0].Columns))
    buffer = mmap.mmap(-1, int(np.prod(shape)) * np.dtype(np.float32).itemsize)
    hu = np.frombuffer(buffer, np.float32).reshape(shape)
    workers = min(os.cpu_count() or 1, max(1, len(ordered) // 16))
    if workers == 1:
        for index, path in enumerate(ordered):
            hu[index] = _hu_slice(path)
    else:
        with ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("fork"),
            initializer=_share_volume,
            initargs=(buffer, shape),
        ) as pool:
            list(pool.map(_decode_into_shared_volume, enumerate(ordered), chunksize=8))
    row_mm, column_mm = (float(v) for v in datasets[order[0]].PixelSpacing)
    return CTVolume(hu, (gap, row_mm, column_mm), [datasets[i] for i in order])


def series_files(path: Path) -> list[Path]:
    """The files of a series folder (every regular file, DICOM or not, is tried by the caller)."""
    return sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
