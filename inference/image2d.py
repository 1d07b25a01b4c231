"""2D grey images (radiographs, ultrasound frames) as classifiers see them.

Training reads JPEG files, the node reads DICOM; both end in :func:`image_transforms`, so the
network meets the same intensities whatever the source: one channel in display space, 0 = black,
1 = white. DICOM pixels go through the Modality LUT (rescale), the stored VOI LUT or window (as a
viewer would show them) and MONOCHROME1 inversion first. Large radiographs are first shrunk by
averaging blocks of pixels (a 3000 x 2500 DX holds 30 times more pixels than any classifier here
looks at), which makes the look-up tables and the contrast stretch that much cheaper.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import torch
from monai.transforms import Compose, Resize, Transform
from PIL import Image
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from .errors import UnsuitableInput

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
#: Shortest side kept when shrinking: ample for classifier inputs and their explanation maps.
DISPLAY_MIN_SIDE = 512


class NotAnImage2D(UnsuitableInput):
    """The input cannot be shown as one 2D grey image (multi-frame, volume, no pixels...)."""


def image_transforms(size: int) -> Compose:
    """The deterministic part: robust contrast stretch to [0, 1], resize to ``size`` x ``size``.

    The training images were stretched to a square without keeping the aspect ratio, so inference
    stretches the same way instead of padding.
    """
    return Compose([PercentileStretch(0.5, 99.5), Resize((size, size), mode="area")])


class PercentileStretch(Transform):
    """Linear stretch of the ``lower``..``upper`` percentiles to 0..1, clipped: the same numbers as
    MONAI's ``ScaleIntensityRangePercentiles(lower, upper, 0, 1, clip=True)`` (both interpolate
    percentiles linearly), computed with numpy's partition instead of ``torch.quantile``'s full
    sort, which made it the slowest step of a radiograph's path to the classifier."""

    def __init__(self, lower: float, upper: float) -> None:
        self.lower, self.upper = lower, upper

    def __call__(self, image: np.ndarray) -> np.ndarray:
        values = np.asarray(image, dtype=np.float32)
        low, high = np.percentile(values, [self.lower, self.upper])
        if high <= low:
            return np.zeros_like(values)
        return np.clip((values - low) / (high - low), 0.0, 1.0)


def shrink(pixels: np.ndarray, factor: int) -> np.ndarray:
    """Mean of ``factor`` x ``factor`` blocks of rows and columns (colours kept), float32."""
    if factor < 2:
        return pixels
    planes = torch.from_numpy(pixels.astype(np.float32))
    planes = planes.permute(2, 0, 1) if planes.ndim == 3 else planes[None]
    shrunk = torch.nn.functional.avg_pool2d(planes, factor)
    return (shrunk.permute(1, 2, 0) if pixels.ndim == 3 else shrunk[0]).numpy()


def display_pixels(ds: pydicom.Dataset) -> np.ndarray:
    """The image a viewer would display, as float32 (1, H, W), brighter = more attenuating; at
    least :data:`DISPLAY_MIN_SIDE` pixels on its shortest side, shrunk by an integer factor."""
    if "PixelData" not in ds:
        raise NotAnImage2D("the dataset holds no pixel data")
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        raise NotAnImage2D("multi-frame images are not single 2D images")
    try:
        pixels = ds.pixel_array
    except (ValueError, NotImplementedError, RuntimeError) as error:
        raise NotAnImage2D(f"the pixel data cannot be decoded: {error}") from None
    # Averaging commutes with a rescale and (but for clipping at its edges) a window; a lookup
    # table needs the stored integers, so such images keep their size.
    if "ModalityLUTSequence" not in ds and "VOILUTSequence" not in ds:
        pixels = shrink(pixels, min(pixels.shape[:2]) // DISPLAY_MIN_SIDE)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if pixels.ndim == 3:
        # Colour (secondary captures of radiographs are often RGB with equal channels). pydicom
        # hands YBR data over already converted to RGB, so luma is computed from RGB in every case.
        luma = pixels[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        return luma[None]
    values = apply_modality_lut(pixels, ds)
    values = apply_voi_lut(values, ds, prefer_lut=True)
    values = np.asarray(values, dtype=np.float32)
    if photometric == "MONOCHROME1":
        values = values.max() + values.min() - values
    return values[None]


def image_file_pixels(path: Path) -> np.ndarray:
    """A PNG/JPEG image as float32 (1, H, W) in [0, 1]."""
    with Image.open(path) as image:
        grey = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    return grey[None]


def load_image2d(path: Path) -> np.ndarray:
    """Display-space pixels of a DICOM file or an image file, chosen by content, not by name."""
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return image_file_pixels(path)
    return display_pixels(pydicom.dcmread(path))
