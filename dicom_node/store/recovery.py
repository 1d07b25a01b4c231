"""At start, after a crash: drop index rows whose file never became durable, and unindexed files.

A C-STORE is answered only once its file is flushed to disk and its row committed, but the
flush and the commit run side by side. A crash between the two can leave a committed row whose
file is short or missing (power cut), or a file that has no row (process killed); neither was
acknowledged, so the sender still has it. Both can only be among the last instances received,
so only that window is checked, which keeps the start fast on a large store. The metadata
documents beside those files are not flushed, so theirs are dropped (requests convert those
files instead).

In a cluster, other receivers write files their rows do not name yet while one starts: there
`may_recover` limits the work to the files of receiving processes that are gone
(`index.receiver_leases`), named by the owner their names start with.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from sqlalchemy import Engine

from ..index.contents import (
    files_received_since,
    latest_received_at,
    paths_received_since,
    remove_instances,
)
from .storage import StorageArea, owner_of

log = logging.getLogger(__name__)

#: How far back from the newest instance rows and files are checked.
WINDOW_SECONDS = 300.0
#: Rows further back still count as the owners of files in the window: a row's time is taken
#: after its file is written, but a wall clock stepped back must not make a file look orphaned.
_OWNER_MARGIN_SECONDS = 3600.0


def reconcile(
    engine: Engine,
    storage: StorageArea,
    window: float = WINDOW_SECONDS,
    may_recover: Callable[[str | None], bool] | None = None,
) -> None:
    """Make the index and the files agree for the instances received last; with
    `may_recover`, only for the files whose owner (`owner_of`) it accepts."""
    latest = latest_received_at(engine)
    if latest is None:
        return
    since = latest - window
    mine = (lambda path: may_recover(owner_of(path))) if may_recover else (lambda _path: True)
    incomplete = [
        row
        for row in files_received_since(engine, since)
        if mine(row.path) and _size(storage.path(row.path)) != row.size
    ]
    remove_instances(engine, incomplete)
    owned = paths_received_since(engine, since - _OWNER_MARGIN_SECONDS)
    for row in incomplete:
        storage.remove(row.path)
    if incomplete:
        log.warning(
            "removed %d index row(s) whose file was not complete after a crash "
            "(never acknowledged: the senders still hold them)",
            len(incomplete),
        )
    recent = [path for path in storage.files_changed_since(since) if mine(path)]
    for path in recent:
        storage.drop_metadata(path)
    orphans = [path for path in recent if path not in owned]
    unused = [path for path in orphans if _size(storage.path(path)) == 0]
    for path in orphans:
        storage.remove(path)
    if len(orphans) > len(unused):
        log.warning(
            "removed %d stored file(s) without an index row after a crash",
            len(orphans) - len(unused),
        )
    if unused:
        log.info("removed %d empty file(s) created ahead and not used before a stop", len(unused))


def _size(path: os.PathLike) -> int | None:
    try:
        return os.stat(path).st_size
    except OSError:
        return None
