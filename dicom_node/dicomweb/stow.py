"""STOW-RS (PS3.18 10.5): instances posted as multipart/related application/dicom, stored on
the same durable path as C-STORE (same checks, index, study stability and jobs).

The body is parsed as it arrives; each part is stored as soon as it is complete. The answer
lists what was stored (ReferencedSOPSequence) and what was not, with the reason as a DICOM
status (FailedSOPSequence): 200 all stored, 202 some, 409 none. A body that is not
multipart/related application/dicom is refused whole (415, or 400 when it cannot be parsed).
A body that is malformed, cut short (no closing boundary: its last part may be incomplete) or
larger than the configured bounds (413) is answered with an error naming the fault and how
many parts before it were stored: never with a success that hides a part it did not store.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydicom.errors import InvalidDicomError
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, MultipartState
from starlette.concurrency import run_in_threadpool

from .. import metrics
from ..audit import messages, record
from ..statuses import CANNOT_UNDERSTAND
from ..store.file_meta import read_file_meta
from ..store.ingest import StoreFailure
from .context import DicomwebContext, http_user, service_url
from .errors import DicomwebError
from .json_model import DICOM_JSON, dump, element, tag_key
from .media import parse_media_range

if TYPE_CHECKING:  # python-multipart declares its callback types for type checkers only
    from python_multipart.multipart import MultipartCallbacks

log = logging.getLogger(__name__)

DICOM = "application/dicom"
#: the failure reason of a part that is not a DICOM file
_NOT_DICOM = CANNOT_UNDERSTAND


@dataclass
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    data: bytearray = field(default_factory=bytearray)


class _Refused(Exception):
    """The body cannot be taken any further (status, reason)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class _PartCollector:
    """Callbacks of python-multipart's streaming parser, collecting whole parts of at most
    `max_part` bytes."""

    def __init__(self, max_part: int) -> None:
        self.done: list[_Part] = []
        self._max_part = max_part
        self._part = _Part()
        self._field = b""
        self._value = b""

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self._begin,
            "on_part_data": self._data,
            "on_part_end": lambda: self.done.append(self._part),
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
        }

    def _begin(self) -> None:
        self._part = _Part()

    def _data(self, data: bytes, start: int, end: int) -> None:
        if len(self._part.data) + end - start > self._max_part:
            raise _Refused(
                413,
                f"a part is larger than http.dicomweb.max_stow_part_bytes ({self._max_part} bytes)",
            )
        self._part.data.extend(data[start:end])

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._part.headers[self._field.strip().lower()] = self._value.strip()
        self._field = self._value = b""


@dataclass
class _Outcome:
    stored: list[dict] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    #: the studies stored into, for the audit message of the request
    studies: dict[str, messages.StudyData] = field(default_factory=dict)

    def audit(self, request: Request) -> None:
        if self.studies:
            sender = http_user(request, messages.SOURCE)
            record(messages.instances_stored(sender, self.studies.values()))


def _boundary(request: Request) -> str:
    content_type = request.headers.get("content-type", "")
    media = parse_media_range(content_type) if content_type else None
    if media is None or media.media_type != "multipart/related":
        raise DicomwebError(
            415, f'STOW-RS takes multipart/related; type="{DICOM}", not {content_type!r}'
        )
    if media.part_type not in ("", DICOM):
        raise DicomwebError(415, f"STOW-RS takes parts of type {DICOM}, not {media.part_type!r}")
    boundary = media.params.get("boundary")
    if not boundary:
        raise DicomwebError(400, "the multipart/related Content-Type has no boundary")
    return boundary


def _store_part(
    context: DicomwebContext, part: _Part, study: str | None, outcome: _Outcome, base: str
) -> None:
    """Store one part and record its outcome."""
    part_type = part.headers.get(b"content-type", DICOM.encode()).decode("latin-1")
    sop_class = sop_instance = ""
    try:
        if parse_media_range(part_type).media_type != DICOM:
            raise StoreFailure(_NOT_DICOM, "stow_not_dicom", f"a part is {part_type}, not {DICOM}")
        try:
            meta, offset = read_file_meta(part.data)
            syntax = meta.TransferSyntaxUID
            sop_class = str(meta.MediaStorageSOPClassUID)
            sop_instance = str(meta.MediaStorageSOPInstanceUID)
        except (InvalidDicomError, AttributeError, ValueError, EOFError, OSError) as error:
            raise StoreFailure(
                _NOT_DICOM, "stow_not_dicom", f"a part is not a DICOM file: {error}"
            ) from None
        raw = bytes(part.data[offset:])
        assert context.ingest is not None  # store() answers 503 before reading any part
        attributes = context.ingest.store(raw, syntax, sop_class, sop_instance, "", study)
    except StoreFailure as failure:
        metrics.FAILURES.labels(reason=failure.reason).inc()
        log.warning(
            "STOW-RS part refused (0x%04X %s): %s", failure.status, failure.reason, failure.comment
        )
        outcome.failed.append(
            {
                tag_key("ReferencedSOPClassUID"): element("ReferencedSOPClassUID", sop_class),
                tag_key("ReferencedSOPInstanceUID"): element(
                    "ReferencedSOPInstanceUID", sop_instance
                ),
                tag_key("FailureReason"): element("FailureReason", failure.status),
            }
        )
        outcome.reasons.append(failure.comment)
        return
    uid = attributes.study_instance_uid
    if uid not in outcome.studies:
        outcome.studies[uid] = messages.StudyData(
            uid, attributes.patient_id, attributes.patient_name
        )
    outcome.studies[uid].add(sop_class)
    url = f"{base}/studies/{uid}/series/"
    url += f"{attributes.series_instance_uid}/instances/{sop_instance}"
    outcome.stored.append(
        {
            tag_key("ReferencedSOPClassUID"): element("ReferencedSOPClassUID", sop_class),
            tag_key("ReferencedSOPInstanceUID"): element("ReferencedSOPInstanceUID", sop_instance),
            tag_key("RetrieveURL"): element("RetrieveURL", url),
        }
    )


def _body_too_large(limit: int) -> _Refused:
    return _Refused(413, f"the body is larger than http.dicomweb.max_stow_bytes ({limit} bytes)")


async def store(context: DicomwebContext, request: Request, study: str | None) -> Response:
    if context.ingest is None:
        raise DicomwebError(503, "this process does not store instances")
    limit = context.settings.max_stow_bytes
    collector = _PartCollector(context.settings.max_stow_part_bytes)
    parser = MultipartParser(_boundary(request), collector.callbacks())
    outcome = _Outcome()
    base = service_url(request)
    received = 0
    try:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise _body_too_large(limit)
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise _body_too_large(limit)
            parser.write(chunk)
            while collector.done:
                part = collector.done.pop(0)
                await run_in_threadpool(_store_part, context, part, study, outcome, base)
        if parser.state is not MultipartState.END:
            raise _Refused(
                400,
                "the multipart body ends before its closing boundary: its last part may be "
                "incomplete and was not stored",
            )
    except MultipartParseError as error:
        raise _refusal(400, f"the multipart body is malformed ({error})", outcome) from None
    except _Refused as refused:
        raise _refusal(refused.status, refused.reason, outcome) from None
    finally:
        outcome.audit(request)
    if not outcome.stored and not outcome.failed:
        raise DicomwebError(400, "the multipart body holds no part")
    answer: dict[str, dict] = {}
    if study is not None:
        answer[tag_key("RetrieveURL")] = element("RetrieveURL", f"{base}/studies/{study}")
    if outcome.stored:
        answer[tag_key("ReferencedSOPSequence")] = {"vr": "SQ", "Value": outcome.stored}
    if outcome.failed:
        answer[tag_key("FailedSOPSequence")] = {"vr": "SQ", "Value": outcome.failed}
    status = 200 if not outcome.failed else 202 if outcome.stored else 409
    log.info("STOW-RS: %d stored, %d refused", len(outcome.stored), len(outcome.failed))
    headers = None
    if outcome.reasons:
        unique = list(dict.fromkeys(reason.replace('"', "'") for reason in outcome.reasons))
        headers = {"Warning": ", ".join(f'299 dicom-node: "{text}"' for text in unique[:10])}
    return Response(dump(answer), status_code=status, media_type=DICOM_JSON, headers=headers)


def _refusal(status: int, reason: str, outcome: _Outcome) -> DicomwebError:
    """The error for a body refused part-way, saying what was stored before the fault."""
    stored = ", ".join(
        item[tag_key("ReferencedSOPInstanceUID")]["Value"][0] for item in outcome.stored
    )
    log.warning("STOW-RS body refused after %d stored part(s): %s", len(outcome.stored), reason)
    return DicomwebError(
        status,
        f"{reason}; {len(outcome.stored)} instance(s) before the fault were stored"
        + (f" ({stored})" if stored else ""),
    )


def router(context: DicomwebContext) -> APIRouter:
    routes = APIRouter(tags=["STOW-RS"])
    answers: dict[int | str, dict[str, Any]] = {
        code: {"content": {DICOM_JSON: {}}, "description": text}
        for code, text in ((200, "all stored"), (202, "some stored"), (409, "none stored"))
    }

    @routes.post("/studies", responses=answers, response_class=Response, status_code=200)
    async def store_instances(request: Request) -> Response:
        """Store the posted instances."""
        return await store(context, request, None)

    @routes.post("/studies/{study}", responses=answers, response_class=Response, status_code=200)
    async def store_study_instances(study: str, request: Request) -> Response:
        """Store the posted instances, which must belong to `study`."""
        return await store(context, request, study)

    return routes
