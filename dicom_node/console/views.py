"""The pictures of a result, drawn by the node from the stored objects for the console under
`/ui/api/predict/studies/{study}`: the classified image and its explanation SEG as a transparent
layer of the same size (the page lays one over the other with an opacity slider), a CT's SEG as
a 3D mesh, and its slices with the segments blended in. The images are rendered by WADO-RS's
rendered-resource code (modality LUT, window, MONOCHROME1 inverted), so the console shows what a
DICOMweb viewer asking for a rendered image gets. Each picture is a read of the patient's images
and is audited as WADO-RS's rendered images are (once per user, client and study in a window)."""

from __future__ import annotations

import logging
from functools import lru_cache

import highdicom as hd
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response
from PIL import Image
from pydicom import Dataset

from ..dicomweb.context import DicomwebContext, audit_pixel_read
from ..dicomweb.instances import read_stored, stored_instances, undecodable
from ..dicomweb.rendered import render
from .context import ConsoleContext
from .ct3d import along_normal, segment_meshes
from .overlay import blended, overlay_png, png, read_segmentation, sources

log = logging.getLogger(__name__)

#: the longest side of an image drawn for the page, in pixels
DISPLAY_SIDE = 768
PNG = "image/png"
_CACHED = {"Cache-Control": "private, max-age=3600"}


def display_size(columns: int, rows: int) -> tuple[int, int]:
    """The (width, height) an image and its overlay are drawn at: the image's own aspect,
    at most ``DISPLAY_SIDE`` on its longest side."""
    scale = min(1.0, DISPLAY_SIDE / max(columns, rows))
    return max(1, round(columns * scale)), max(1, round(rows * scale))


def _unusable(what: str, error: Exception) -> HTTPException:
    log.warning("console: %s: %s: %s", what, type(error).__name__, error)
    return HTTPException(422, what)


def router(context: ConsoleContext) -> APIRouter:
    routes = APIRouter(prefix="/predict/studies/{study}", tags=["console: result pictures"])
    dicomweb = DicomwebContext(
        context.engine, context.storage, context.ingest, context.config.http.dicomweb
    )

    def instance(study: str, uid: str) -> dict:
        (row,) = stored_instances(dicomweb, study, None, uid)
        return row

    def rendered(row: dict, request: Request) -> Image.Image:
        dataset: Dataset = read_stored(dicomweb, row, "a rendered image")
        try:
            image = render(dataset, 0, request, None)
        except HTTPException:
            raise
        except Exception as error:  # pixel decoders raise many types
            raise undecodable(row, "a rendered image", error) from None
        return image.resize(display_size(image.width, image.height), Image.Resampling.LANCZOS)

    def segmentation(study: str, uid: str) -> hd.seg.Segmentation:
        path = context.storage.path(instance(study, uid)["path"])
        try:
            return read_segmentation(path)
        except Exception as error:  # not a SEG, or one highdicom cannot read
            raise _unusable(
                f"instance {uid} is not a segmentation the console can draw", error
            ) from None

    @routes.get("/images/{image}", response_class=Response)
    def image(study: str, image: str, request: Request) -> Response:
        """The classified image as a PNG (`window=center,width` as for WADO-RS rendered)."""
        row = instance(study, image)
        picture = rendered(row, request)
        audit_pixel_read(dicomweb, request, row, "a console picture of the image")
        return Response(png(picture), media_type=PNG, headers=_CACHED)

    @routes.get("/explanations/{seg}/{image}", response_class=Response)
    def explanation(study: str, seg: str, image: str, request: Request) -> Response:
        """The segments of the explanation SEG on the image, as a transparent PNG of the size
        `images/{image}` is drawn at."""
        row = instance(study, image)
        size = display_size(row["columns"] or 1, row["rows"] or 1)
        found = segmentation(study, seg)
        try:
            drawn = overlay_png(found, image, size)
        except (ValueError, KeyError, RuntimeError) as error:
            raise _unusable(f"the segmentation {seg} cannot be drawn on {image}", error) from None
        audit_pixel_read(dicomweb, request, row, "a console picture of an explanation")
        return Response(drawn, media_type=PNG)

    @routes.get("/ct/{seg}/mesh", response_class=Response)
    def mesh(study: str, seg: str, request: Request) -> Response:
        """The SEG's segments as surfaces (the binary mesh `ct3d` describes)."""
        segmentation(study, seg)  # a SEG highdicom reads, else 422
        row = instance(study, seg)
        path = context.storage.path(row["path"])
        try:
            mesh = segment_meshes(path)
        except (ValueError, KeyError, RuntimeError) as error:  # not a volume
            raise _unusable(f"the segmentation {seg} is not a volume", error) from None
        audit_pixel_read(dicomweb, request, row, "a console 3D view of a segmentation")
        return Response(mesh, media_type="application/octet-stream", headers=_CACHED)

    @lru_cache(maxsize=8)
    def ordered(study: str, seg: str) -> list[str]:
        """The CT SEG's source slices, feet to head (read once per SEG)."""
        headers = {
            uid: read_stored(dicomweb, instance(study, uid), "slice order", stop_before_pixels=True)
            for uid in sources(segmentation(study, seg))
        }
        return along_normal(headers)

    @routes.get("/ct/{seg}/slices")
    def slice_count(study: str, seg: str) -> dict[str, int]:
        """How many slices the SEG was made on."""
        return {"slices": len(ordered(study, seg))}

    @routes.get("/ct/{seg}/slices/{number}", response_class=Response)
    def slice_view(study: str, seg: str, number: int, request: Request) -> Response:
        """Slice ``number`` (0 = the lowest) with the segments blended in."""
        slices = ordered(study, seg)
        if not 0 <= number < len(slices):
            raise HTTPException(404, f"slice {number}: the SEG lies on {len(slices)} slices")
        row = instance(study, slices[number])
        picture = rendered(row, request)
        drawn = blended(picture, segmentation(study, seg), slices[number])
        audit_pixel_read(dicomweb, request, row, "a console picture of a slice")
        return Response(png(drawn), media_type=PNG, headers=_CACHED)

    return routes
