"""WADO-RS (PS3.18 10.4): instances as stored files, and their metadata as DICOM JSON.

Instances are streamed from disk as multipart/related application/dicom. Transfer syntax:
`transfer-syntax=*` or none asked returns each instance as stored (byte-identical dataset);
Explicit VR Little Endian (1.2.840.10008.1.2.1) is produced by decompressing (or byte-swapping
big endian) when asked; any other syntax is served only where it is the stored one, else 406.
Transcoding is done before the answer starts (`transcode`): an instance that cannot be converted
makes the whole answer 406 naming it and the syntax it is available in, rather than a 200 whose
body is cut short or silently lacks it (PS3.18 8.7.3.5: the origin server answers 406 when it
cannot provide an acceptable transfer syntax).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from tempfile import SpooledTemporaryFile
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from pydicom.uid import ExplicitVRLittleEndian

from ..audit import messages, record, record_soon
from ..audit.messages import Outcome
from ..index.query import studies_of
from ..multipart import multipart_content_type, multipart_segments, new_boundary
from .body import Body, Spooled, StoredFile, pieces
from .context import DicomwebContext, http_user, service_url
from .errors import DicomwebError, not_acceptable
from .instances import stored_instances, undecodable
from .json_model import DICOM_JSON
from .media import accepted
from .metadata import instance_metadata_json
from .transcode import TranscodeError, explicit_little_endian

log = logging.getLogger(__name__)

DICOM = "application/dicom"
_DEFAULT_ACCEPT = f'multipart/related; type="{DICOM}"'
ANY_SYNTAX = "*"


def requested_syntaxes(header: str | None) -> set[str]:
    """The transfer syntaxes the client takes application/dicom parts in ({"*"}: any)."""
    syntaxes: set[str] = set()
    for item in accepted(header, _DEFAULT_ACCEPT):
        if item.media_type in ("*/*", "multipart/*"):
            return {ANY_SYNTAX}
        if item.media_type != "multipart/related" or item.part_type not in (DICOM, "", "*/*"):
            continue
        syntaxes.add(item.transfer_syntax or ANY_SYNTAX)
    return syntaxes


def _plan(rows: list[dict], syntaxes: set[str]) -> list[tuple[dict, bool]]:
    """Each instance and whether it must be transcoded to Explicit VR Little Endian."""
    plan = []
    for row in rows:
        stored = row["transfer_syntax_uid"]
        if ANY_SYNTAX in syntaxes or stored in syntaxes:
            plan.append((row, False))
        elif ExplicitVRLittleEndian in syntaxes:
            plan.append((row, True))
        else:
            raise not_acceptable(
                f"{stored} (as stored) or {ExplicitVRLittleEndian}; asked: "
                + ", ".join(sorted(syntaxes))
            )
    return plan


def _transcoded(
    context: DicomwebContext, plan: list[tuple[dict, bool]]
) -> list[SpooledTemporaryFile | None]:
    """Each planned instance that needs it, transcoded now (None for the others); 406 naming
    the first that cannot be."""
    done: list[SpooledTemporaryFile | None] = []
    for row, transcode in plan:
        if not transcode:
            done.append(None)
            continue
        try:
            done.append(explicit_little_endian(context.storage.path(row["path"])))
        except TranscodeError as error:
            for spool in done:
                if spool is not None:
                    spool.close()
            raise undecodable(row, ExplicitVRLittleEndian.name, error) from None
    return done


def _part(
    context: DicomwebContext, row: dict, transcoded: SpooledTemporaryFile | None
) -> tuple[str, StoredFile | Spooled]:
    """The instance's part: its content type and its content, whose size is known (a stored
    file is not opened until the part is sent)."""
    if transcoded is not None:
        size = transcoded.seek(0, os.SEEK_END)
        transcoded.seek(0)
        return f"{DICOM}; transfer-syntax={ExplicitVRLittleEndian}", Spooled(transcoded, size)
    path = context.storage.path(row["path"])
    try:
        size = os.stat(path).st_size
    except OSError as error:
        log.error("stored instance %s unreadable: %s", row["path"], error.strerror)
        raise DicomwebError(500, "a stored instance could not be read") from None
    return f"{DICOM}; transfer-syntax={row['transfer_syntax_uid']}", StoredFile(str(path), size)


def _audit_read(request: Request, rows: list[dict]) -> Callable[[], None]:
    """The instances (or their metadata) a WADO-RS request reads: sent to its user. Returns
    the wait for that line to be on disk, which the answer calls before its last bytes. Called
    once the answer is certain, so that a refused request is never audited as a read."""
    user = http_user(request, messages.DESTINATION)
    return record_soon(messages.instances_sent(user, studies_of(rows)))


@contextmanager
def _refusal_audited(request: Request, rows: list[dict]) -> Iterator[None]:
    """A request answered with an error (406: no acceptable form; 500: a file unreadable) is
    audited as a transfer that failed, with the answer, and nothing counted as sent."""
    try:
        yield
    except DicomwebError as refused:
        server_side = refused.status_code >= 500
        record(
            messages.instances_sent(
                http_user(request, messages.DESTINATION),
                studies_of(rows),
                outcome=Outcome.SERIOUS_FAILURE if server_side else Outcome.MINOR_FAILURE,
                description=f"not sent: answered {refused.status_code}: {refused.detail}",
            )
        )
        raise


def retrieve(context: DicomwebContext, request: Request, rows: list[dict]) -> Response:
    with _refusal_audited(request, rows):
        plan = _plan(rows, requested_syntaxes(request.headers.get("accept")))
        transcoded = _transcoded(context, plan)
        try:
            parts = [
                _part(context, row, spool) for (row, _), spool in zip(plan, transcoded, strict=True)
            ]
        except DicomwebError:
            for spool in transcoded:
                if spool is not None:
                    spool.close()
            raise
    audited = _audit_read(request, rows)
    boundary = new_boundary()
    body = Body(multipart_segments(parts, boundary))
    return StreamingResponse(
        pieces(body, audited),
        media_type=multipart_content_type(DICOM, boundary),
        headers={"Content-Length": str(body.length)},
    )


def metadata(context: DicomwebContext, request: Request, study: str, rows: list[dict]) -> Response:
    base = service_url(request)
    with _refusal_audited(request, rows):
        for item in accepted(request.headers.get("accept"), DICOM_JSON):
            if item.media_type in (DICOM_JSON, "application/json", "*/*", "application/*"):
                break
        else:
            raise not_acceptable(DICOM_JSON)
        answers = [_metadata_of(context, row, f"{base}/studies/{study}") for row in rows]
    _audit_read(request, rows)()  # on disk before the answer
    return Response(b"[" + b",".join(answers) + b"]", media_type=DICOM_JSON)


def _metadata_of(context: DicomwebContext, row: dict, study_url: str) -> bytes:
    """One instance's metadata as DICOM JSON; 500 if its file cannot be read, 406 if pydicom
    cannot decode it."""
    url = f"{study_url}/series/{row['series_instance_uid']}/instances/{row['sop_instance_uid']}"
    try:
        return instance_metadata_json(context.storage, row, url)
    except OSError as error:
        log.error("stored instance %s unreadable: %s", row["path"], error.strerror)
        raise DicomwebError(500, "a stored instance could not be read") from None
    except Exception as error:  # pydicom raises many types (and RecursionError)
        raise undecodable(row, "DICOM JSON metadata", error) from None


def router(context: DicomwebContext) -> APIRouter:
    routes = APIRouter(tags=["WADO-RS"])
    dicom: dict[int | str, dict[str, Any]] = {
        200: {"content": {"multipart/related": {}}, "description": "the instances"}
    }

    @routes.get("/studies/{study}", responses=dicom, response_class=Response)
    def retrieve_study(study: str, request: Request) -> Response:
        """Every instance of the study."""
        return retrieve(context, request, stored_instances(context, study))

    @routes.get("/studies/{study}/series/{series}", responses=dicom, response_class=Response)
    def retrieve_series(study: str, series: str, request: Request) -> Response:
        """Every instance of the series."""
        return retrieve(context, request, stored_instances(context, study, series))

    @routes.get(
        "/studies/{study}/series/{series}/instances/{instance}",
        responses=dicom,
        response_class=Response,
    )
    def retrieve_instance(study: str, series: str, instance: str, request: Request) -> Response:
        """One instance."""
        return retrieve(context, request, stored_instances(context, study, series, instance))

    json_answer: dict[int | str, dict[str, Any]] = {
        200: {"content": {"application/dicom+json": {}}, "description": "metadata"}
    }

    @routes.get("/studies/{study}/metadata", responses=json_answer, response_class=Response)
    def study_metadata(study: str, request: Request) -> Response:
        """The metadata of every instance of the study."""
        return metadata(context, request, study, stored_instances(context, study))

    @routes.get(
        "/studies/{study}/series/{series}/metadata",
        responses=json_answer,
        response_class=Response,
    )
    def series_metadata(study: str, series: str, request: Request) -> Response:
        """The metadata of every instance of the series."""
        return metadata(context, request, study, stored_instances(context, study, series))

    @routes.get(
        "/studies/{study}/series/{series}/instances/{instance}/metadata",
        responses=json_answer,
        response_class=Response,
    )
    def metadata_of_instance(study: str, series: str, instance: str, request: Request) -> Response:
        """The metadata of one instance."""
        rows = stored_instances(context, study, series, instance)
        return metadata(context, request, study, rows)

    return routes
