"""At start, after a crash: drop index rows whose file never became durable, and unindexed files.

A C-STORE is answered only once its file is flushed to disk and its row committed, but the
flush and the commit run side by side. A crash between the two can leave a committed row whose
file is short or missing (power cut), or a file that has no row (process killed); neither was
acknowledged, so the sender still has it. Both can only be among the last instances received,
so only that window is checked, which keeps the start fast on a large store.
"""

from __future__ import annotations

import logging
import os

from sqlalchemy import Engine, func, select

from ..index.removal import remove_instance
from ..index.schema import instances
from .storage import StorageArea

log = logging.getLogger(__name__)

#: How far back from the newest instance rows and files are checked.
WINDOW_SECONDS = 300.0
#: Rows further back still count as the owners of files in the window: a row's time is taken
#: after its file is written, but a wall clock stepped back must not make a file look orphaned.
_OWNER_MARGIN_SECONDS = 3600.0


def reconcile(engine: Engine, storage: StorageArea, window: float = WINDOW_SECONDS) -> None:
    """Make the index and the files agree for the instances received last."""
    with engine.connect() as connection:
        latest = connection.execute(select(func.max(instances.c.received_at))).scalar()
    if latest is None:
        return
    since = latest - window
    columns = (instances.c.sop_instance_uid, instances.c.path, instances.c.size)
    with engine.begin() as connection:
        recent = connection.execute(select(*columns).where(instances.c.received_at >= since)).all()
        incomplete = [row for row in recent if _size(storage.path(row.path)) != row.size]
        for row in incomplete:
            remove_instance(connection, row.sop_instance_uid, row.path)
        owned = set(
            connection.execute(
                select(instances.c.path).where(
                    instances.c.received_at >= since - _OWNER_MARGIN_SECONDS
                )
            ).scalars()
        )
    for row in incomplete:
        storage.remove(row.path)
    if incomplete:
        log.warning(
            "removed %d index row(s) whose file was not complete after a crash "
            "(never acknowledged: the senders still hold them)",
            len(incomplete),
        )
    orphans = [path for path in storage.files_changed_since(since) if path not in owned]
    for path in orphans:
        storage.remove(path)
    if orphans:
        log.warning("removed %d stored file(s) without an index row after a crash", len(orphans))


def _size(path: os.PathLike) -> int | None:
    try:
        return os.stat(path).st_size
    except OSError:
        return None
