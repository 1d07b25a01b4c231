"""The console's running-work page: the index's summary of the work in progress (the one
`/status` shows too)."""

from __future__ import annotations

from fastapi import APIRouter

from ..index.work import work_summary
from .context import ConsoleContext


def router(context: ConsoleContext) -> APIRouter:
    routes = APIRouter()

    @routes.get("/work")
    def work() -> dict[str, object]:
        return work_summary(context.engine)

    return routes
