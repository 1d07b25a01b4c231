"""A SEG's segments drawn on the image they came from, for the console: each segment in the
display colour its SEG recommends (CIELab, PS3.3 C.8.20.2.1), as a transparent PNG laid over the
image (the page sets its opacity) or blended into a CT slice."""

from __future__ import annotations

import io
from functools import lru_cache
from pathlib import Path

import highdicom as hd
import numpy as np
from PIL import Image

#: where a segment gives no colour
DEFAULT_COLOUR = (255, 64, 64)
#: how much of a CT slice's pixel a segment's colour covers in the slice view
SLICE_OVERLAY_OPACITY = 0.45


@lru_cache(maxsize=2)
def read_segmentation(path: Path) -> hd.seg.Segmentation:
    """A stored SEG, parsed once (a CT's SEG takes a second or two) for the requests that
    follow: the page asks for its slices one after another."""
    return hd.seg.segread(path)


def segment_colours(seg: hd.seg.Segmentation) -> dict[int, tuple[int, int, int]]:
    """Each segment number's display colour as RGB."""
    colours = {}
    for item in seg.SegmentSequence:
        value = item.get("RecommendedDisplayCIELabValue")
        colours[int(item.SegmentNumber)] = (
            hd.color.CIELabColor.from_dicom_value([int(v) for v in value]).to_rgb(clip=True)
            if value
            else DEFAULT_COLOUR
        )
    return colours


def coloured(labels: np.ndarray, colours: dict[int, tuple[int, int, int]]) -> np.ndarray:
    """A (rows, columns) map of segment numbers as RGBA: each segment opaque in its colour,
    the rest transparent."""
    table = np.zeros((max(colours, default=0) + 1, 4), np.uint8)
    for number, colour in colours.items():
        table[number] = (*colour, 255)
    return table[np.clip(labels, 0, len(table) - 1)]


def sources(seg: hd.seg.Segmentation) -> list[str]:
    """The SOP Instance UIDs of the images the SEG was made on."""
    return [
        str(item.ReferencedSOPInstanceUID)
        for series in seg.ReferencedSeriesSequence
        for item in series.ReferencedInstanceSequence
    ]


def labels_on(seg: hd.seg.Segmentation, source_uid: str) -> np.ndarray:
    """The map of segment numbers of ``seg`` on the source image ``source_uid`` (zeros where
    the SEG has no frame for it: it leaves empty frames out); ValueError for an image the SEG
    was not made on."""
    if source_uid not in sources(seg):
        raise ValueError(f"the segmentation was not made on image {source_uid}")
    return seg.get_pixels_by_source_instance(
        [source_uid], combine_segments=True, assert_missing_frames_are_empty=True
    )[0]


def segment_layer(seg: hd.seg.Segmentation, source_uid: str, size: tuple[int, int]) -> Image.Image:
    """The segments on ``source_uid`` as an RGBA image of ``size`` (width, height), scaled
    without blending so each pixel keeps its segment's colour."""
    rgba = coloured(labels_on(seg, source_uid), segment_colours(seg))
    return Image.fromarray(rgba, "RGBA").resize(size, Image.Resampling.NEAREST)


def overlay_png(seg: hd.seg.Segmentation, source_uid: str, size: tuple[int, int]) -> bytes:
    """The segments on ``source_uid`` as a transparent PNG of ``size``, the size the image
    itself was rendered at."""
    return png(segment_layer(seg, source_uid, size))


def blended(image: Image.Image, seg: hd.seg.Segmentation, source_uid: str) -> Image.Image:
    """``image`` (a rendered slice) with the segments on it blended in."""
    layer = segment_layer(seg, source_uid, image.size)
    alpha = np.asarray(layer)[..., 3:].astype(np.float32) / 255 * SLICE_OVERLAY_OPACITY
    base = np.asarray(image.convert("RGB"), np.float32)
    mixed = base * (1 - alpha) + np.asarray(layer)[..., :3].astype(np.float32) * alpha
    return Image.fromarray(np.round(mixed).astype(np.uint8), "RGB")


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()
