"""The work in progress, read from the index alone: jobs running with their step and percentage,
deliveries by destination and state, and those tried and not through with the peer's last answer.
Here, below every stage that shows it, so that `/status` (a monitoring system's view, served
whether the console is mounted or not) and the console's running-work page show one summary."""

from __future__ import annotations

from dataclasses import asdict

from sqlalchemy import Engine

from .outbox import OutboxTable
from .progress import running

#: the most deliveries not through that the summary lists
NOT_DELIVERED_SHOWN = 100


def work_summary(engine: Engine) -> dict[str, object]:
    """The summary as JSON: the console's `/ui/api/work` and, beside the job counts, `/status`."""
    table = OutboxTable(engine)
    return {
        "running": [asdict(job) for job in running(engine)],
        "deliveries": table.counts(),
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
            for row in table.waiting(limit=NOT_DELIVERED_SHOWN)
        ],
    }
