"""What the DICOMweb routes share: the index, the storage area, the ingest path, the settings."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request
from sqlalchemy import Engine

from ..ingest import Ingest
from ..storage import StorageArea
from .settings import DicomwebSettings

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
    """The DICOMweb root as the client reached it, for RetrieveURL and BulkDataURI values."""
    return str(request.base_url).rstrip("/") + ROOT
