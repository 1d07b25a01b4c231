"""WADO-RS rendered and thumbnail resources (PS3.18 10.4.1.1.3): a frame as a JPEG or PNG a
browser can show, through the modality LUT and a window (the requested one, else the stored
one, else the frame's range), MONOCHROME1 inverted so that air is black."""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import Response
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut, pixel_array

from . import params
from .context import DicomwebContext, audit_pixel_read
from .errors import DicomwebError, not_acceptable
from .instances import read_stored, stored_instances, undecodable
from .media import accepted
from .pixels import frame_numbers

_FORMATS = {"image/jpeg": "JPEG", "image/png": "PNG"}
THUMBNAIL_SIZE = 128


def _media_type(header: str | None) -> str:
    for item in accepted(header, "image/jpeg"):
        if item.media_type in _FORMATS:
            return item.media_type
        if item.media_type in ("*/*", "image/*"):
            return "image/jpeg"
    raise not_acceptable(", ".join(_FORMATS))


def _first(value) -> float | None:
    """The first value of a stored window attribute (CT often holds several windows, as a
    MultiValue), or None when it is empty or not a finite number."""
    if isinstance(value, MultiValue):
        value = value[0] if value else None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _window(request: Request, dataset: Dataset, values: np.ndarray) -> tuple[float, float, str]:
    """Center, width and function: the request's `window`, the stored one, or the range."""
    center: float | None  # the stored ones may be absent
    width: float | None
    text = request.query_params.get("window")
    if text:
        parts = text.split(",")
        center, width = params.decimals(",".join(parts[:2]), "window", 2)
        function = parts[2].strip().upper() if len(parts) > 2 else "LINEAR"
        if function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
            raise DicomwebError(
                400, f"window function {function!r} is not LINEAR, LINEAR_EXACT or SIGMOID"
            )
        if width <= 0:
            raise DicomwebError(400, "window width must be positive")
        return center, width, function
    center, width = _first(dataset.get("WindowCenter")), _first(dataset.get("WindowWidth"))
    if center is not None and width is not None and width > 0:
        function = str(dataset.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
        return center, width, function
    low, high = float(values.min()), float(values.max())
    return (low + high) / 2, max(high - low, 1.0), "LINEAR_EXACT"


def _grey(values: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """PS3.3 C.11.2.1.2-3: values to 0..1 through the window."""
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    if function == "LINEAR_EXACT":
        return np.clip((values - (center - width / 2)) / width, 0.0, 1.0)
    return np.clip((values - (center - 0.5)) / max(width - 1, 1) + 0.5, 0.0, 1.0)


def _viewport(request: Request, most: int) -> tuple[int, int] | None:
    """The requested viewport (width, height), each from 1 to `most`; None when not asked."""
    text = request.query_params.get("viewport")
    if not text:
        return None
    width, height = params.decimals(text, "viewport", 2)
    if not (1 <= width <= most and 1 <= height <= most):
        raise DicomwebError(
            400, f"viewport sizes must be from 1 to {most} (http.dicomweb.max_viewport)"
        )
    return int(width), int(height)


def render(
    dataset: Dataset, index: int, request: Request, box: tuple[int, int] | None
) -> Image.Image:
    """Frame `index` (0-based) of `dataset` as an 8-bit image."""
    frame = pixel_array(dataset, index=index)
    if dataset.get("SamplesPerPixel", 1) == 1:
        values = apply_modality_lut(frame, dataset).astype(np.float64)
        grey = _grey(values, *_window(request, dataset, values))
        if dataset.get("PhotometricInterpretation") == "MONOCHROME1":
            grey = 1.0 - grey
        image = Image.fromarray(np.round(grey * 255).astype(np.uint8), mode="L")
    else:
        if frame.dtype != np.uint8:
            frame = (frame / max(float(frame.max()), 1.0) * 255).astype(np.uint8)
        image = Image.fromarray(frame, mode="RGB")
    if box is not None:
        image.thumbnail(box)
    return image


def _answer(
    context: DicomwebContext, request: Request, row: dict, frame: int, size: int | None
) -> Response:
    media_type = _media_type(request.headers.get("accept"))
    if row.get("rows") is None:
        raise not_acceptable("nothing: this instance has no pixel data to render")
    quality = params.integer(request.query_params.get("quality", "90"), "quality", 1, 100)
    box = _viewport(request, context.settings.max_viewport)
    if box is None and size:
        box = (size, size)
    dataset = read_stored(context, row, "a rendered image")
    try:
        image = render(dataset, frame, request, box)
    except DicomwebError:
        raise
    except Exception as error:  # pixel decoders raise many types
        raise undecodable(row, "a rendered image", error) from None
    audit_pixel_read(context, request, row, "a thumbnail" if size else "a rendered image")
    buffer = io.BytesIO()
    if _FORMATS[media_type] == "JPEG":
        image.save(buffer, "JPEG", quality=quality)
    else:
        image.save(buffer, "PNG")
    return Response(buffer.getvalue(), media_type=media_type)


def _middle(rows: list[dict]) -> dict:
    """The instance a series or study thumbnail shows: the middle one of the first series."""
    first = [row for row in rows if row["series_instance_uid"] == rows[0]["series_instance_uid"]]
    images = [row for row in first if row.get("rows") is not None] or first
    return images[len(images) // 2]


def router(context: DicomwebContext) -> APIRouter:
    routes = APIRouter(tags=["WADO-RS rendered"])
    image: dict[int | str, dict[str, Any]] = {
        200: {"content": {"image/jpeg": {}, "image/png": {}}, "description": "image"}
    }
    instance_path = "/studies/{study}/series/{series}/instances/{instance}"

    @routes.get(instance_path + "/rendered", responses=image, response_class=Response)
    def rendered_instance(study: str, series: str, instance: str, request: Request):
        """The instance (its first frame) rendered."""
        (row,) = stored_instances(context, study, series, instance)
        return _answer(context, request, row, 0, None)

    @routes.get(
        instance_path + "/frames/{frame}/rendered", responses=image, response_class=Response
    )
    def rendered_frame(study: str, series: str, instance: str, frame: str, request: Request):
        """One frame (1-based) rendered."""
        (row,) = stored_instances(context, study, series, instance)
        count = row.get("number_of_frames") or 1
        number = frame_numbers(frame, count, context.settings.max_frames)[0]
        return _answer(context, request, row, number - 1, None)

    @routes.get(instance_path + "/thumbnail", responses=image, response_class=Response)
    def instance_thumbnail(study: str, series: str, instance: str, request: Request):
        """A small rendering of the instance."""
        (row,) = stored_instances(context, study, series, instance)
        return _answer(context, request, row, 0, THUMBNAIL_SIZE)

    @routes.get(
        "/studies/{study}/series/{series}/thumbnail", responses=image, response_class=Response
    )
    def series_thumbnail(study: str, series: str, request: Request):
        """A small rendering of the series' middle image."""
        row = _middle(stored_instances(context, study, series))
        return _answer(context, request, row, 0, THUMBNAIL_SIZE)

    @routes.get("/studies/{study}/thumbnail", responses=image, response_class=Response)
    def study_thumbnail(study: str, request: Request):
        """A small rendering of the middle image of the study's first series."""
        row = _middle(stored_instances(context, study))
        return _answer(context, request, row, 0, THUMBNAIL_SIZE)

    return routes
