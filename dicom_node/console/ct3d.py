"""A CT's segments in 3D for the console: a surface per segment of its SEG (marching cubes,
scikit-image) in patient millimetres, sent as one compact binary mesh that the page's WebGL view
(three.js) draws.

The volume is averaged into blocks of about ``TARGET_VOXEL_MM`` first and lightly smoothed: at the
CT's own resolution the thin, ragged tissues (fat, soft tissue) make tens of millions of
triangles; at 5 mm the whole chest is a few hundred thousand, a few MB, which a browser turns and
draws at once.

The mesh is little-endian: a uint32 length, that many bytes of UTF-8 JSON (each segment's name,
colour, vertex and triangle counts, in order), padding to a multiple of 4 bytes, then per segment
its vertices (float32 x, y, z) and triangles (uint32 vertex indices). Axes as a person faces the
patient: x to the patient's left, y to the head, z to the front; the centre of the volume at 0.
"""

from __future__ import annotations

import json
import struct
from functools import lru_cache
from pathlib import Path

import numpy as np
from pydicom import Dataset

from .overlay import read_segmentation, segment_colours

#: the edge of a block of the downsampled volume, in millimetres
TARGET_VOXEL_MM = 5.0
#: smoothing of each segment's occupancy (in blocks) before its surface is drawn
SMOOTHING_SIGMA = 0.7


def _blocks(spacing: tuple[float, float, float]) -> tuple[int, int, int]:
    return tuple(max(1, round(TARGET_VOXEL_MM / s)) for s in spacing)  # type: ignore[return-value]


def _surface(
    mask: np.ndarray, blocks: tuple[int, int, int]
) -> tuple[np.ndarray, np.ndarray] | None:
    """The surface of ``mask`` averaged into ``blocks`` and smoothed: its vertices (in voxel
    indices of ``mask``) and triangles; None where too little of it is left to draw."""
    # Imported here: SciPy and scikit-image cost `serve` half a second and tens of MB at start,
    # for a view few people open.
    from scipy.ndimage import gaussian_filter
    from skimage.measure import block_reduce, marching_cubes

    occupancy = block_reduce(mask, blocks, np.mean).astype(np.float32)
    occupancy = np.pad(gaussian_filter(occupancy, SMOOTHING_SIGMA), 1)
    if occupancy.max() < 0.5:
        return None
    vertices, triangles, _, _ = marching_cubes(occupancy, 0.5)
    # back to voxel indices: the block's centre, less the padding
    return (vertices - 1) * np.array(blocks) + (np.array(blocks) - 1) / 2, triangles


@lru_cache(maxsize=4)
def segment_meshes(path: Path) -> bytes:
    """The binary mesh of the SEG stored at ``path`` (computed once per SEG)."""
    seg = read_segmentation(path)
    volume = seg.get_volume(combine_segments=True)
    labels = volume.array
    blocks = _blocks(volume.spacing)
    names = {int(s.SegmentNumber): str(s.SegmentLabel) for s in seg.SegmentSequence}
    colours = segment_colours(seg)
    # voxel (slice, row, column) indices to patient LPS millimetres, then to the view's axes
    to_patient = volume.affine
    view = np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]], np.float64)  # L, S, A from L, P, S
    centre = to_patient[:3, :3] @ ((np.array(labels.shape) - 1) / 2) + to_patient[:3, 3]
    header: list[dict[str, object]] = []
    blobs: list[bytes] = []
    for number, name in names.items():
        surface = _surface(labels == number, blocks)
        if surface is None:
            continue
        voxels, triangles = surface
        patient = voxels @ to_patient[:3, :3].T + to_patient[:3, 3] - centre
        shown = (patient @ view.T).astype("<f4")
        header.append(
            {
                "name": name,
                "colour": list(colours[number]),
                "vertices": len(shown),
                "triangles": len(triangles),
            }
        )
        blobs += [shown.tobytes(), triangles.astype("<u4").tobytes()]
    text = json.dumps({"segments": header, "unit": "mm"}).encode()
    padding = b" " * (-(4 + len(text)) % 4)
    return b"".join([struct.pack("<I", len(text) + len(padding)), text, padding, *blobs])


def along_normal(headers: dict[str, Dataset]) -> list[str]:
    """The UIDs of these slices' headers from the feet to the head: by position along the
    normal of their plane, not by file name or instance number."""

    def height(header: Dataset) -> float:
        row, column = np.reshape([float(v) for v in header.ImageOrientationPatient], (2, 3))
        normal = np.cross(row, column)
        position = np.array([float(v) for v in header.ImagePositionPatient])
        return float(np.dot(normal, position))

    return sorted(headers, key=lambda uid: height(headers[uid]))
