"""CT tissue segmentation by Hounsfield-unit ranges and shape, with SimpleITK filters.

Packaged as a MONAI bundle "network" (a module whose forward takes the HU volume) so the same runner
serves it and the learned models. Labels: 1 lung, 2 fat, 3 soft tissue, 4 bone, 5 other body (gas
outside the lungs, partial-volume voxels); the body is every labelled voxel.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import torch

LUNG, FAT, SOFT_TISSUE, BONE, OTHER_BODY = 1, 2, 3, 4, 5


LOW_RES_COLUMNS = 128
IN_PLANE = (1, 2)  # the row and column axes of a (slices, rows, columns) volume
ALL_AXES = (0, 1, 2)


def _fill_holes_per_slice(mask: np.ndarray) -> np.ndarray:
    """Axial 2D hole filling: the lungs are holes of the body in every slice, even where the airway
    reaches the edge of the volume (a 3D fill would leave them open).

    The slices are laid out side by side in one 2D mosaic, one background pixel apart, and filled
    in a single call: a hole cannot cross the background seams, and one call on the mosaic is ~50
    times faster than one call per slice.
    """
    slices, rows, columns = mask.shape
    per_row = int(np.ceil(np.sqrt(slices)))
    tiles = np.zeros((per_row * per_row, rows + 1, columns + 1), np.uint8)
    tiles[:slices, :rows, :columns] = mask
    mosaic = tiles.reshape(per_row, per_row, rows + 1, columns + 1).swapaxes(1, 2)
    mosaic = mosaic.reshape(per_row * (rows + 1), per_row * (columns + 1))
    filled = sitk.GetArrayFromImage(
        sitk.BinaryFillhole(
            sitk.GetImageFromArray(np.ascontiguousarray(mosaic)), fullyConnected=False
        )
    )
    tiles = filled.reshape(per_row, rows + 1, per_row, columns + 1).swapaxes(1, 2)
    return tiles.reshape(per_row * per_row, rows + 1, columns + 1)[:slices, :rows, :columns].astype(
        mask.dtype
    )


def _neighbours(mask: np.ndarray, axes: tuple[int, ...]):
    """The mask shifted by one voxel each way along each axis (False beyond the border)."""
    for axis in axes:
        for step in (1, -1):
            shifted = np.zeros_like(mask)
            source = [slice(None)] * mask.ndim
            target = [slice(None)] * mask.ndim
            source[axis], target[axis] = (slice(1, None), slice(None, -1))[::step]
            shifted[tuple(target)] = mask[tuple(source)]
            yield shifted


def _erode(mask: np.ndarray, axes: tuple[int, ...] = IN_PLANE) -> np.ndarray:
    """Binary erosion by a one-voxel cross (numpy shifts: far cheaper than a general kernel)."""
    result = mask.copy()
    for shifted in _neighbours(mask, axes):
        result &= shifted
    return result


def _dilate(mask: np.ndarray, axes: tuple[int, ...] = IN_PLANE) -> np.ndarray:
    result = mask.copy()
    for shifted in _neighbours(mask, axes):
        result |= shifted
    return result


def _components(mask: np.ndarray) -> tuple[np.ndarray, sitk.LabelShapeStatisticsImageFilter]:
    """Connected components numbered by decreasing size, with their shape statistics."""
    labels = sitk.RelabelComponent(
        sitk.ConnectedComponent(sitk.GetImageFromArray(mask)), sortByObjectSize=True
    )
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(labels)
    return sitk.GetArrayFromImage(labels), stats


class Grid:
    """A coarse in-plane grid (about 128 columns) where the shape work runs, 10-20 times cheaper
    than on a 512 x 512 matrix; masks come back to the full grid with their boundary redrawn."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape
        self.factor = max(1, shape[2] // LOW_RES_COLUMNS)

    def mean(self, hu: np.ndarray) -> np.ndarray:
        f = self.factor
        slices, rows, columns = hu.shape
        if rows % f or columns % f:  # padding copies the whole volume: only where needed
            hu = np.pad(hu, ((0, 0), (0, -rows % f), (0, -columns % f)), constant_values=-1024)
        return hu.reshape(slices, hu.shape[1] // f, f, hu.shape[2] // f, f).mean(axis=(2, 4))

    def full(self, coarse: np.ndarray) -> np.ndarray:
        f = self.factor
        return coarse.repeat(f, axis=1).repeat(f, axis=2)[:, : self.shape[1], : self.shape[2]]

    def refine(self, coarse: np.ndarray, fine: np.ndarray) -> np.ndarray:
        """Full-grid mask: the coarse mask's interior, plus ``fine`` voxels within a pixel of its
        edge."""
        return self.full(_erode(coarse)) | (self.full(_dilate(coarse)) & fine)


class HounsfieldTissueSegmenter(torch.nn.Module):
    """Body, lungs, fat, soft tissue and bone from a HU volume (slices, rows, columns).

    - body: the largest connected region above ``body_min_hu`` (drops the table, cables, outside
    air),
      with the holes of each axial slice filled, so lungs and airways belong to it;
    - lungs: air below ``lung_max_hu`` inside the body, kept as the largest air component and those
    at
      least ``min_lung_fraction`` of its size whose centre is near its own (this drops stomach and
      bowel gas), vessels included by filling each slice's holes;
    - fat ``fat_hu`` (PS: -190 to -30 HU), bone from ``bone_min_hu``, soft tissue in between.
    """

    def __init__(
        self,
        body_min_hu: float = -500.0,
        lung_max_hu: float = -400.0,
        lung_core_max_hu: float = -600.0,
        fat_hu: tuple[float, float] = (-190.0, -30.0),
        bone_min_hu: float = 200.0,
        min_lung_fraction: float = 0.2,
    ) -> None:
        super().__init__()
        self.body_min_hu = body_min_hu
        self.lung_max_hu = lung_max_hu
        self.lung_core_max_hu = lung_core_max_hu
        self.fat_hu = fat_hu
        self.bone_min_hu = bone_min_hu
        self.min_lung_fraction = min_lung_fraction

    def segment(self, hu: np.ndarray) -> np.ndarray:
        """Label volume (uint8, same shape as ``hu``)."""
        grid = Grid(hu.shape)
        coarse = grid.mean(hu)
        candidates, stats = _components(_dilate(_erode(coarse > self.body_min_hu)).astype(np.uint8))
        if stats.GetNumberOfLabels() == 0:
            return np.zeros(hu.shape, np.uint8)
        coarse_body = _fill_holes_per_slice((candidates == 1).astype(np.uint8)).astype(bool)
        body = grid.refine(coarse_body, hu > self.body_min_hu)
        lungs = grid.refine(self._lungs(coarse, coarse_body), hu < self.lung_max_hu) & body
        labels = np.full(hu.shape, OTHER_BODY, np.uint8)
        labels[(hu >= self.fat_hu[0]) & (hu <= self.fat_hu[1])] = FAT
        labels[(hu > self.fat_hu[1]) & (hu < self.bone_min_hu)] = SOFT_TISSUE
        labels[hu >= self.bone_min_hu] = BONE
        labels[lungs] = LUNG
        labels[~body] = 0
        return labels

    def _lungs(self, hu: np.ndarray, body: np.ndarray) -> np.ndarray:
        """Coarse lung mask: the largest region of clear air inside the body and those like it (the
        other lung when the airways do not join them), not gas far below or above it; vessels filled
        in.

        Regions are told apart on clear air (below ``lung_core_max_hu``, eroded by a voxel) because
        at
        the diaphragm's dome partial volume joins lung and stomach gas below ``lung_max_hu``.
        """
        cores = _erode((hu < self.lung_core_max_hu) & body, ALL_AXES)
        regions, stats = _components(cores.astype(np.uint8))
        if stats.GetNumberOfLabels() == 0:
            return np.zeros(hu.shape, bool)
        largest = stats.GetNumberOfPixels(1)
        # SimpleITK reports (x, y, z); z is the slice axis.
        extent = stats.GetBoundingBox(1)[5]
        centre = stats.GetCentroid(1)[2]
        keep = [
            label
            for label in stats.GetLabels()
            if stats.GetNumberOfPixels(label) >= self.min_lung_fraction * largest
            and abs(stats.GetCentroid(label)[2] - centre) <= 0.25 * extent
        ]
        lungs = _dilate(np.isin(regions, keep), ALL_AXES) & (hu < self.lung_max_hu) & body
        return _fill_holes_per_slice(lungs.astype(np.uint8)).astype(bool)

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        """(batch, 1, slices, rows, columns) HU -> labels of the same shape."""
        out = [
            torch.from_numpy(self.segment(np.asarray(item[0].cpu().numpy(), np.float32)))
            for item in volume
        ]
        return torch.stack(out)[:, None]
