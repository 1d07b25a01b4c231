"""2D grey images (radiographs, ultrasound frames) as classifiers see them.

Training reads JPEG files, the node reads DICOM; both end in :func:`image_transforms`, so the
network meets the same intensities whatever the source: one channel in display space, 0 = black,
1 = white. DICOM pixels go through the Modality LUT (rescale), the stored VOI LUT or window (as a
viewer would show them) and MONOCHROME1 inversion first; colour (RGB, YBR, a palette's colours)
becomes its luma. Large radiographs are first shrunk by
averaging blocks of pixels (a 3000 x 2500 DX holds 30 times more pixels than any classifier here
looks at), which makes the look-up tables and the contrast stretch that much cheaper. A JPEG 2000
radiograph is not even decoded in full: its codestream holds the image at 1/2, 1/4, ... of its
size (the wavelet's low-pass bands), and decoding only those levels is several times faster
(the 1955 x 1841 WG04 CR: 230 ms in full, 75 ms at 1/2, 25 ms at 1/4).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import openjpeg
import pydicom
import torch
from monai.transforms import Compose, Resize, Transform
from PIL import Image, ImageFile
from pydicom.encaps import generate_frames
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut
from pydicom.uid import JPEG2000, JPEG2000Lossless

from .errors import UnsuitableInput

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
#: Shortest side kept when shrinking: twice the largest classifier input (224), ample for the
#: explanation map laid over the image too (a Grad-CAM map has 7 x 7 cells).
DISPLAY_MIN_SIDE = 448
#: Transfer syntaxes whose codestream Pillow (OpenJPEG) decodes at a reduced resolution.
JPEG2000_SYNTAXES = {JPEG2000, JPEG2000Lossless}


class NotAnImage2D(UnsuitableInput):
    """The input cannot be shown as one 2D grey image (multi-frame, volume, no pixels...)."""


def image_transforms(size: int) -> Compose:
    """The deterministic part: resize to ``size`` x ``size``, robust contrast stretch to [0, 1].

    The training images were stretched to a square without keeping the aspect ratio, so inference
    stretches the same way instead of padding. They were shrunk before the stretch saw them (the
    data set ships them at 224 px), so a large radiograph is shrunk first too: the stretch's
    percentiles are then those of the pixels the network sees, and it reads 20 times fewer.
    """
    return Compose([Resize((size, size), mode="area"), PercentileStretch(0.5, 99.5)])


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
    least :data:`DISPLAY_MIN_SIDE` pixels on its shortest side, shrunk by an integer factor (a
    JPEG 2000 image by a power of two at decoding first)."""
    if "PixelData" not in ds:
        raise NotAnImage2D("the dataset holds no pixel data")
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        raise NotAnImage2D("multi-frame images are not single 2D images")
    # Averaging commutes with a rescale and (but for clipping at its edges) a window; a lookup
    # table (a palette's too) needs the stored integers, so such images keep their size.
    shrinkable = (
        "ModalityLUTSequence" not in ds and "VOILUTSequence" not in ds and not _is_palette(ds)
    )
    pixels = reduced_jpeg2000(ds) if shrinkable else None
    if pixels is None:
        try:
            pixels = ds.pixel_array
        except (ValueError, NotImplementedError, RuntimeError) as error:
            raise NotAnImage2D(f"the pixel data cannot be decoded: {error}") from None
    if shrinkable:
        pixels = shrink(pixels, min(pixels.shape[:2]) // DISPLAY_MIN_SIDE)
    return to_display(pixels, ds)


def to_display(pixels: np.ndarray, ds: pydicom.Dataset) -> np.ndarray:
    """Stored ``pixels`` of ``ds`` (any size) in display space, float32 (1, H, W)."""
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if _is_palette(ds):
        # the stored values are indices into the palette, not intensities
        pixels = apply_color_lut(pixels, ds)
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


def _is_palette(ds: pydicom.Dataset) -> bool:
    return str(ds.get("PhotometricInterpretation", "")).upper() == "PALETTE COLOR"


def jpeg2000_reduction(rows: int, columns: int) -> int:
    """How many resolution levels of a JPEG 2000 image to leave undecoded, keeping its shortest
    side (rounded up, as OpenJPEG does) at least :data:`DISPLAY_MIN_SIDE`."""
    level = 0
    while -(-min(rows, columns) // 2 ** (level + 1)) >= DISPLAY_MIN_SIDE:
        level += 1
    return level


def load_reduced(image: ImageFile.ImageFile, level: int) -> None:
    """Decode a Pillow JPEG 2000 image ``level`` resolution levels down. Pillow's own
    ``image.reduce`` rounds a reduced side to the nearest pixel where OpenJPEG rounds it up, and
    then refuses the decoded tile as broken (1841 / 4: 460 against 461), so the image's size and
    its tile are set to OpenJPEG's here (Pillow is pinned; a mismatch still fails as an OSError)."""
    power = 2**level
    width, height = image.size
    image._size = (-(-width // power), -(-height // power))
    codec, _, offset, arguments = image.tile[0]
    if not isinstance(arguments, tuple):
        raise OSError("unexpected JPEG 2000 tile from Pillow")
    reduced = (arguments[0], level, image.layers, *arguments[3:])
    image.tile = [ImageFile._Tile(codec, (0, 0, *image.size), offset, reduced)]
    ImageFile.ImageFile.load(image)


def reduced_jpeg2000(ds: pydicom.Dataset) -> np.ndarray | None:
    """The stored values of a grey, unsigned JPEG 2000 image decoded at the smallest resolution
    level that keeps :data:`DISPLAY_MIN_SIDE`; None when the image is not one, is too small to
    gain anything, or its codestream cannot be reduced that far: it is then decoded in full."""
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if (
        syntax not in JPEG2000_SYNTAXES
        or int(ds.get("SamplesPerPixel", 1)) != 1
        or int(ds.get("PixelRepresentation", 0)) != 0
    ):
        return None
    level = jpeg2000_reduction(int(ds.Rows), int(ds.Columns))
    if level == 0:
        return None
    try:
        codestream = next(generate_frames(ds.PixelData, number_of_frames=1))
        parameters = openjpeg.get_parameters(codestream)
        if parameters["is_signed"] or int(parameters["precision"]) > 16:
            return None
        with Image.open(io.BytesIO(codestream)) as image:
            load_reduced(image, level)
            # Pillow scales samples up to its mode's 8 or 16 bits; back to the stored values.
            bits = 8 if image.mode == "L" else 16
            return np.asarray(image) >> (bits - int(parameters["precision"]))
    except (OSError, RuntimeError, ValueError, StopIteration):
        # fewer levels in the codestream than asked for, or a damaged one: the full decode
        # then says what is wrong
        return None


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
