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
IN_PLANE = [1, 1, 0]


def _fill_holes_per_slice(mask: np.ndarray) -> np.ndarray:
    """Axial 2D hole filling: the lungs are holes of the body in every slice, even where the airway
    reaches the edge of the volume (a 3D fill would leave them open)."""
    filled = np.empty_like(mask)
    for z in range(mask.shape[0]):
        filled[z] = sitk.GetArrayViewFromImage(
            sitk.BinaryFillhole(sitk.GetImageFromArray(mask[z]), fullyConnected=False)
        )
    return filled


def _components(mask: np.ndarray) -> tuple[np.ndarray, sitk.LabelShapeStatisticsImageFilter]:
    """Connected components numbered by decreasing size, with their shape statistics."""
    labels = sitk.RelabelComponent(
        sitk.ConnectedComponent(sitk.GetImageFromArray(mask)), sortByObjectSize=True
    )
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(labels)
    return sitk.GetArrayFromImage(labels), stats


def _morphology(mask: np.ndarray, operation: str, radius: list[int] = IN_PLANE) -> np.ndarray:
    """Binary erosion/dilation/opening with a cross of the given (x, y, z) radius; in-plane by
    default."""
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    filters = {
        "erode": sitk.BinaryErode,
        "dilate": sitk.BinaryDilate,
        "open": sitk.BinaryMorphologicalOpening,
    }
    return sitk.GetArrayFromImage(filters[operation](image, radius, sitk.sitkCross)).astype(bool)


class Grid:
    """A coarse in-plane grid (about 128 columns) where the shape work runs, 10-20 times cheaper
    than on a 512 x 512 matrix; masks come back to the full grid with their boundary redrawn."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape
        self.factor = max(1, shape[2] // LOW_RES_COLUMNS)

    def mean(self, hu: np.ndarray) -> np.ndarray:
        f = self.factor
        slices, rows, columns = hu.shape
        padded = np.pad(hu, ((0, 0), (0, -rows % f), (0, -columns % f)), constant_values=-1024)
        return padded.reshape(slices, padded.shape[1] // f, f, padded.shape[2] // f, f).mean(
            axis=(2, 4)
        )

    def full(self, coarse: np.ndarray) -> np.ndarray:
        f = self.factor
        return coarse.repeat(f, axis=1).repeat(f, axis=2)[:, : self.shape[1], : self.shape[2]]

    def refine(self, coarse: np.ndarray, fine: np.ndarray) -> np.ndarray:
        """Full-grid mask: the coarse mask's interior, plus ``fine`` voxels within a pixel of its
        edge."""
        return self.full(_morphology(coarse, "erode")) | (
            self.full(_morphology(coarse, "dilate")) & fine
        )


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
        candidates, stats = _components(
            _morphology(coarse > self.body_min_hu, "open").astype(np.uint8)
        )
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
        cores = _morphology((hu < self.lung_core_max_hu) & body, "erode", [1, 1, 1])
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
        lungs = (
            _morphology(np.isin(regions, keep), "dilate", [1, 1, 1])
            & (hu < self.lung_max_hu)
            & body
        )
        return _fill_holes_per_slice(lungs.astype(np.uint8)).astype(bool)

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        """(batch, 1, slices, rows, columns) HU -> labels of the same shape."""
        out = [
            torch.from_numpy(self.segment(item[0].cpu().numpy().astype(np.float32)))
            for item in volume
        ]
        return torch.stack(out)[:, None]
