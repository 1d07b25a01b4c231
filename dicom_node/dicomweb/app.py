"""The DICOMweb service mounted under `/dicomweb` of the node's HTTP server."""

from __future__ import annotations

from fastapi import APIRouter, Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from . import pixels as frames_and_bulkdata
from . import qido, rendered, stow, wado
from .auth import Unauthorized, answer_unauthorized, authorizer
from .context import ROOT, DicomwebContext


def mount_dicomweb(app: FastAPI, context: DicomwebContext) -> None:
    """Add the QIDO-RS, WADO-RS and STOW-RS routes, their access check, and CORS."""
    service = APIRouter(prefix=ROOT, dependencies=[Depends(authorizer(context.settings.auth))])
    for module in (qido, wado, frames_and_bulkdata, rendered, stow):
        service.include_router(module.router(context))
    app.include_router(service)
    app.add_exception_handler(Unauthorized, answer_unauthorized)
    app.state.dicomweb_settings = context.settings
    if context.settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=context.settings.cors_origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Accept", "Content-Type"],
            expose_headers=["Warning", "Content-Location"],
            allow_credentials="*" not in context.settings.cors_origins,
        )
