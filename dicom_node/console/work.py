"""The work in progress: jobs running with their step and percentage, deliveries by
destination and state, and those tried and not through with the peer's last answer. The
console's running-work page and the node's `/status` show the same summary."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter
from sqlalchemy import Engine

from ..index.progress import running
from ..outbox.queue import Outbox
from .context import ConsoleContext

#: the most deliveries not through that the summary lists
NOT_DELIVERED_SHOWN = 100


def work_summary(engine: Engine, box: Outbox) -> dict[str, object]:
    """The summary as JSON: the console's `/ui/api/work` and, beside the job counts, `/status`."""
    return {
        "running": [asdict(job) for job in running(engine)],
        "deliveries": box.counts(),
        "not_delivered": [
            {
                "id": row.id,
                "destination": row.destination,
                "sop_instance_uid": row.sop_instance_uid,
                "state": row.state,
                "attempts": row.attempts,
                "next_attempt_at": row.next_attempt_at,
                "last_error": row.last_error,
            }
            for row in box.waiting(limit=NOT_DELIVERED_SHOWN)
        ],
    }


def router(context: ConsoleContext) -> APIRouter:
    routes = APIRouter()

    @routes.get("/work")
    def work() -> dict[str, object]:
        return work_summary(context.engine, context.box)

    return routes
