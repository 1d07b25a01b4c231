"""What the DICOMweb routes share: the index, the storage area, the ingest path, the settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import Request
from sqlalchemy import Engine

from ..audit import messages
from ..config.dicomweb import DicomwebSettings
from ..store.ingest import Ingest
from ..store.storage import StorageArea
from .pixel_audit import StudyReadsAudited

#: where DICOMweb lives under the node's HTTP root (DESIGN.md)
ROOT = "/dicomweb"


@dataclass(frozen=True)
class DicomwebContext:
    engine: Engine
    storage: StorageArea
    #: None where this process does not store (then STOW-RS answers 503)
    ingest: Ingest | None
    settings: DicomwebSettings
    #: reads of pixels and bulk data audited lately, so that a viewer's frames are audited once
    pixel_reads: StudyReadsAudited = field(default_factory=StudyReadsAudited)


def service_url(request: Request) -> str:
    """The DICOMweb root for RetrieveURL and BulkDataURI values: `public_url` when configured
    (behind a proxy), else as the client reached it. Some clients (dicomweb-client) send a Host
    header without the port; the port the request came in on is added back then."""
    settings: DicomwebSettings = request.app.state.dicomweb_settings
    if settings.public_url:
        return settings.public_url.rstrip("/")
    url = request.base_url
    server = request.scope.get("server")
    if url.port is None and server and server[1] not in (80, 443):
        url = url.replace(port=server[1])
    return str(url).rstrip("/") + ROOT


def user_name(request: Request) -> str:
    """The user the request's credentials named (set by the access check), or "anonymous" where
    DICOMweb asks for none."""
    return getattr(request.state, "user", None) or "anonymous"


def http_user(request: Request, role: messages.Code | None = None) -> messages.Participant:
    """Who made the request, for an audit message: its user and the client's address."""
    address = request.client.host if request.client else None
    return messages.Participant(user_name(request), True, role, address)


def audit_pixel_read(context: DicomwebContext, request: Request, row: dict, what: str) -> None:
    """Audit the request's read of pixels or bulk data of the instance in `row` (once per user,
    client and study in a window: :mod:`.pixel_audit`); called once the answer is certain."""
    context.pixel_reads.read(http_user(request, messages.DESTINATION), row, what)
