"""The console mounted under `/ui/`: the page shell and its static assets, and the JSON API under
`/ui/api` that the pages call, each behind the DICOMweb access check (reading needs the read
right, changing the write right) and the cross-site guard."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from ..dicomweb.auth import authorizer
from ..dicomweb.context import user_name
from . import configuration, predict, studies, views, work
from .context import ConsoleContext
from .guard import same_origin_only

#: where the console lives under the node's HTTP root (DESIGN.md)
ROOT = "/ui"
STATIC = Path(__file__).parent / "static"


def mount_console(app: FastAPI, context: ConsoleContext) -> None:
    """Add the shell, its assets and the API; every route asks for credentials when DICOMweb
    does, so the browser prompts once and reuses them for the API calls."""
    access = Depends(authorizer(context.config.http.dicomweb.auth))
    pages = APIRouter(prefix=ROOT, dependencies=[access])

    @pages.get("/", include_in_schema=False)
    def shell() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    api = APIRouter(prefix=f"{ROOT}/api", dependencies=[access, Depends(same_origin_only)])

    @api.get("/session")
    def session(request: Request) -> dict[str, object]:
        """Who the console talks to and whether they may change things (the pages hide the
        buttons of a read-only user; the API refuses them anyway)."""
        return {
            "user": user_name(request),
            "can_write": getattr(request.state, "can_write", True),
            "ae_title": context.config.ae_title,
        }

    for page_api in (studies, work, predict, views, configuration):
        api.include_router(page_api.router(context))
    app.include_router(pages)
    app.include_router(api)

    @app.get(ROOT, include_in_schema=False)
    def without_slash() -> RedirectResponse:
        # relative, so it holds behind a proxy that serves the node under a prefix
        return RedirectResponse("ui/")

    app.mount(f"{ROOT}/static", StaticFiles(directory=STATIC), name="console-static")
