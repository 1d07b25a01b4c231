"""2D grey images (radiographs, ultrasound frames) as classifiers see them.

Training reads JPEG files, the node reads DICOM; both end in :func:`image_transforms`, so the
network meets the same intensities whatever the source: one channel in display space, 0 = black,
1 = white. DICOM pixels go through the Modality LUT (rescale), the stored VOI LUT or window (as a
viewer would show them) and MONOCHROME1 inversion first.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from monai.transforms import Compose, Resize, ScaleIntensityRangePercentiles
from PIL import Image
from pydicom.pixels import apply_modality_lut, apply_voi_lut

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


class NotAnImage2D(ValueError):
    """The input cannot be shown as one 2D grey image (multi-frame, volume, no pixels...)."""


def image_transforms(size: int) -> Compose:
    """The deterministic part: robust contrast stretch to [0, 1], resize to ``size`` x ``size``.

    The training images were stretched to a square without keeping the aspect ratio, so inference
    stretches the same way instead of padding.
    """
    return Compose(
        [
            ScaleIntensityRangePercentiles(lower=0.5, upper=99.5, b_min=0.0, b_max=1.0, clip=True),
            Resize((size, size), mode="area"),
        ]
    )


def display_pixels(ds: pydicom.Dataset) -> np.ndarray:
    """The image a viewer would display, as float32 (1, H, W), brighter = more attenuating."""
    if "PixelData" not in ds:
        raise NotAnImage2D("the dataset holds no pixel data")
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        raise NotAnImage2D("multi-frame images are not single 2D images")
    pixels = ds.pixel_array
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
