"""A PNG or JPEG picture uploaded in the console, wrapped as a DICOM Secondary Capture Image
(PS3.3 A.8.1, made by highdicom) with the patient and study details the person entered, and
marked as such: conversion type WSD (workstation), derived/secondary image type, and a series
description and image comment that say it was an uploaded picture.

The bytes are hostile until decoded: only PNG and JPEG are taken, a picture of more pixels than
Pillow's decompression-bomb limit is refused before its pixels are decoded, and one Pillow cannot
decode is refused with Pillow's reason."""

from __future__ import annotations

import io
import re
import warnings
from datetime import datetime

import highdicom as hd
import numpy as np
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydicom import Dataset
from pydicom.uid import generate_uid

#: the image formats taken, as Pillow names them
FORMATS = ("PNG", "JPEG")
SERIES_DESCRIPTION = "Uploaded picture (secondary capture)"
#: the series number of uploaded pictures, after a modality's usual numbers
SERIES_NUMBER = 1
MANUFACTURER = "DICOM AI node web console"
#: what a DICOM short text (LO) may not hold: control characters and the value separator
_NOT_LO = re.compile(r"[\x00-\x1f\x7f\\]")


class PictureRefused(Exception):
    """The upload is not a picture the node takes: the HTTP status and the reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class PictureDetails(BaseModel):
    """What the person enters about the picture: the DICOM attributes the study is filed by."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    patient_name: str = Field(default="", max_length=64)
    patient_id: str = Field(default="", max_length=64)
    #: YYYYMMDD or empty
    patient_birth_date: str = Field(default="", pattern=r"^(\d{8})?$")
    patient_sex: str = Field(default="", pattern=r"^(M|F|O)?$")
    accession_number: str = Field(default="", max_length=16)
    study_description: str = Field(default="", max_length=64)

    @field_validator("patient_name", "patient_id", "accession_number", "study_description")
    @classmethod
    def _plain_text(cls, value: str) -> str:
        if _NOT_LO.search(value):
            raise ValueError("control characters and backslashes are not allowed")
        return value


def _decoded(data: bytes) -> tuple[np.ndarray, str, str]:
    """The picture's pixels (grey or RGB, 8 or 16 bit), its photometric interpretation and its
    format; PictureRefused for anything else."""
    try:
        with warnings.catch_warnings():
            # Pillow warns of a picture past MAX_IMAGE_PIXELS and refuses one twice as large: a
            # small file can decode into gigabytes, so both are refused here.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.format not in FORMATS:
                raise PictureRefused(
                    415, f"a {image.format} picture: the console takes {' or '.join(FORMATS)}"
                )
            image.load()
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        limit = Image.MAX_IMAGE_PIXELS
        raise PictureRefused(
            413, f"the picture has more than {limit} pixels (Pillow's decompression-bomb limit)"
        ) from None
    except UnidentifiedImageError:
        raise PictureRefused(415, "the file is neither a PNG nor a JPEG picture") from None
    except (OSError, ValueError, SyntaxError) as error:  # truncated or corrupt data
        raise PictureRefused(400, f"the picture cannot be decoded: {error}") from None
    if image.mode in ("I;16", "I;16B", "I;16L"):
        return np.asarray(image, dtype=np.uint16), "MONOCHROME2", image.format
    if image.mode in ("L", "1") or (image.mode == "P" and _grey_palette(image)):
        return np.asarray(image.convert("L")), "MONOCHROME2", image.format
    rgb = np.asarray(image.convert("RGB"))
    if (rgb == rgb[..., :1]).all():  # a grey picture saved in colour (as JPEGs often are)
        return np.ascontiguousarray(rgb[..., 0]), "MONOCHROME2", image.format
    return rgb, "RGB", image.format


def _grey_palette(image: Image.Image) -> bool:
    palette = np.asarray(image.getpalette() or [], dtype=np.uint8).reshape(-1, 3)
    return bool(len(palette)) and bool((palette == palette[:, :1]).all())


def picture_to_dicom(data: bytes, details: PictureDetails, uploaded_by: str) -> Dataset:
    """``data`` (a PNG or JPEG file) as a Secondary Capture Image of a new study."""
    pixels, photometric, kind = _decoded(data)
    now = datetime.now()
    image = hd.sc.SCImage(
        pixel_array=pixels,
        photometric_interpretation=photometric,
        bits_allocated=16 if pixels.dtype == np.uint16 else 8,
        coordinate_system="PATIENT",
        study_instance_uid=generate_uid(),
        series_instance_uid=generate_uid(),
        series_number=SERIES_NUMBER,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        patient_id=details.patient_id or None,
        patient_name=details.patient_name or None,
        patient_birth_date=details.patient_birth_date or None,
        patient_sex=details.patient_sex or None,
        accession_number=details.accession_number or None,
        study_date=now.date(),
        study_time=now.time(),
        series_description=SERIES_DESCRIPTION,
        patient_orientation=("L", "F"),  # required by highdicom; emptied below
    )
    # Type 2 (2C): empty where unknown, as for any uploaded picture (never guessed)
    image.PatientOrientation = []
    image.Laterality = ""
    image.ConversionType = "WSD"  # made at a workstation, not by a modality's interface
    if details.study_description:
        image.StudyDescription = details.study_description
    image.ImageComments = (
        f"A {kind} picture uploaded in the node's web console by {uploaded_by[:40]} and wrapped "
        "as a secondary capture; patient and study details as the uploader entered them"
    )
    return image
