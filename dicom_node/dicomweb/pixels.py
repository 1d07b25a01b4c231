"""WADO-RS frames and bulk data (PS3.18 10.4.1.1.4-5).

Frames go out as stored (the compressed bitstream with its image media type) or uncompressed
(application/octet-stream, Explicit VR Little Endian byte order), whichever the Accept header
asks first; uncompressed frames of native pixel data are cut from the stored bytes, others are
decoded with pydicom's pixel handlers.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from pydicom.dataset import Dataset
from pydicom.encaps import get_frame
from pydicom.pixels import pixel_array
from pydicom.uid import ExplicitVRLittleEndian

from ..multipart import Part, multipart_body, multipart_content_type, new_boundary
from ..store.metadata import is_native
from . import params
from .context import DicomwebContext, audit_pixel_read
from .errors import DicomwebError, not_acceptable, not_found
from .instances import read_stored, stored_instances
from .media import FRAME_MEDIA_TYPES, accepted

log = logging.getLogger(__name__)

OCTET_STREAM = "application/octet-stream"
_DEFAULT_ACCEPT = f'multipart/related; type="{OCTET_STREAM}"'


def frames_as_stored(header: str | None, stored_syntax: str) -> bool:
    """Whether the client takes frames as stored (True) or wants them uncompressed (False)."""
    native = is_native(stored_syntax)
    stored_type = FRAME_MEDIA_TYPES.get(stored_syntax, OCTET_STREAM)
    for item in accepted(header, _DEFAULT_ACCEPT):
        if item.media_type in ("*/*", "multipart/*"):
            return True
        if item.media_type != "multipart/related":
            continue
        part, syntax = item.part_type, item.transfer_syntax
        if part in ("*/*", "") or syntax == "*":
            return True
        if part == OCTET_STREAM and syntax in (None, ExplicitVRLittleEndian):
            return False
        if not native and part in (stored_type, "image/*") and syntax in (None, stored_syntax):
            return True
    if native:
        raise not_acceptable(f"{OCTET_STREAM} (uncompressed)")
    raise not_acceptable(f"{stored_type} (as stored) or {OCTET_STREAM} (uncompressed)")


def frame_numbers(text: str, count: int, most: int) -> list[int]:
    """The 1-based frame numbers of a URL (at most `most` of them); 404 beyond `count`."""
    items = text.split(",")
    if len(items) > most:
        raise DicomwebError(
            400, f"{len(items)} frames asked: http.dicomweb.max_frames allows {most} per request"
        )
    numbers = [params.integer(item, "frame numbers", low=1) for item in items]
    for number in numbers:
        if number > count:
            raise not_found(f"frame {number} (the instance has {count})")
    return numbers


def uncompressed_frame(dataset: Dataset, index: int) -> bytes:
    """Frame `index` (0-based) in native little-endian layout."""
    syntax = dataset.file_meta.TransferSyntaxUID
    bits = dataset.get("BitsAllocated", 8)
    if is_native(syntax) and syntax.is_little_endian and bits % 8 == 0:
        size = dataset.Rows * dataset.Columns * dataset.get("SamplesPerPixel", 1) * bits // 8
        return bytes(dataset.PixelData[index * size : (index + 1) * size])
    frame = pixel_array(dataset, index=index, raw=True)
    return frame.astype(frame.dtype.newbyteorder("<"), copy=False).tobytes()


def retrieve_frames(context: DicomwebContext, request: Request, row: dict, text: str) -> Response:
    if row.get("rows") is None:
        raise DicomwebError(400, "this instance has no pixel data, so no frames")
    stored_syntax = row["transfer_syntax_uid"]
    as_stored = frames_as_stored(request.headers.get("accept"), stored_syntax)
    count = row.get("number_of_frames") or 1
    numbers = frame_numbers(text, count, context.settings.max_frames)
    dataset = read_stored(context, row, "frames")
    if as_stored and not is_native(stored_syntax):
        content_type = f"{FRAME_MEDIA_TYPES.get(stored_syntax, OCTET_STREAM)}; "
        content_type += f"transfer-syntax={stored_syntax}"
        frames = [get_frame(dataset.PixelData, n - 1, number_of_frames=count) for n in numbers]
    else:
        content_type = f"{OCTET_STREAM}; transfer-syntax={ExplicitVRLittleEndian}"
        try:
            frames = [uncompressed_frame(dataset, n - 1) for n in numbers]
        except Exception as error:
            log.error("cannot decode frames of %s: %s", row["path"], error)
            raise not_acceptable(f"{FRAME_MEDIA_TYPES.get(stored_syntax)} (as stored)") from None
    audit_pixel_read(context, request, row, f"frames {text}")
    boundary = new_boundary()
    parts = [Part(content_type, [frame]) for frame in frames]
    part_type = content_type.split(";")[0]
    return StreamingResponse(
        multipart_body(parts, boundary), media_type=multipart_content_type(part_type, boundary)
    )


def _element_at(dataset: Dataset, path: str):
    """The element a bulkdata path names (`tag` or `tag/item/tag...`), or 404."""
    segments = path.strip("/").split("/")
    current = dataset
    try:
        for position in range(0, len(segments) - 1, 2):
            current = current[int(segments[position], 16)].value[int(segments[position + 1])]
        return current[int(segments[-1], 16)]
    except (KeyError, IndexError, ValueError, TypeError):
        raise not_found(f"bulk data {path!r}") from None


def retrieve_bulkdata(context: DicomwebContext, request: Request, row: dict, path: str):
    wanted = accepted(request.headers.get("accept"), _DEFAULT_ACCEPT)
    single = all(item.media_type == OCTET_STREAM for item in wanted)
    if not single and not any(
        item.media_type in ("*/*", "multipart/*")
        or (item.media_type == "multipart/related" and item.part_type in (OCTET_STREAM, "", "*/*"))
        for item in wanted
    ):
        raise not_acceptable(OCTET_STREAM)
    data_element = _element_at(read_stored(context, row, "bulk data"), path)
    value = data_element.value
    if not isinstance(value, bytes):
        raise not_found(f"bulk data {path!r} (not a binary value)")
    audit_pixel_read(context, request, row, f"bulk data {path}")
    if single:
        return Response(value, media_type=OCTET_STREAM)
    boundary = new_boundary()
    return StreamingResponse(
        multipart_body([Part(OCTET_STREAM, [value])], boundary),
        media_type=multipart_content_type(OCTET_STREAM, boundary),
    )


def router(context: DicomwebContext) -> APIRouter:
    routes = APIRouter(tags=["WADO-RS"])
    base = "/studies/{study}/series/{series}/instances/{instance}"
    parts: dict[int | str, dict[str, Any]] = {
        200: {"content": {"multipart/related": {}}, "description": "the parts asked"}
    }

    @routes.get(base + "/frames/{frames}", responses=parts, response_class=Response)
    def frames(study: str, series: str, instance: str, frames: str, request: Request):
        """Frames (1-based, comma-separated) of one instance."""
        (row,) = stored_instances(context, study, series, instance)
        return retrieve_frames(context, request, row, frames)

    @routes.get(base + "/bulkdata/{path:path}", responses=parts, response_class=Response)
    def bulkdata(study: str, series: str, instance: str, path: str, request: Request):
        """A binary value named in the instance's metadata by a BulkDataURI."""
        (row,) = stored_instances(context, study, series, instance)
        return retrieve_bulkdata(context, request, row, path)

    return routes
