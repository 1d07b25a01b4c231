"""What the DICOMweb routes share: the index, the storage area, the ingest path, the settings."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request
from sqlalchemy import Engine

from ..audit import messages
from ..config.dicomweb import DicomwebSettings
from ..store.ingest import Ingest
from ..store.storage import StorageArea

#: where DICOMweb lives under the node's HTTP root (DESIGN.md)
ROOT = "/dicomweb"


@dataclass(frozen=True)
class DicomwebContext:
    engine: Engine
    storage: StorageArea
    #: None where this process does not store (then STOW-RS answers 503)
    ingest: Ingest | None
    settings: DicomwebSettings


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
