"""The index's part of the health check: a real write, committed."""

from __future__ import annotations

import socket
import time

from sqlalchemy import Engine

from .database import dialect_insert
from .schema import heartbeat


def check_writable(engine: Engine) -> None:
    """Rewrite this host's heartbeat row and commit; the database's error when the index does
    not take a write (disk full, read-only, locked out)."""
    insert = dialect_insert(engine)(heartbeat).values(host=socket.gethostname(), at=time.time())
    with engine.begin() as connection:
        connection.execute(
            insert.on_conflict_do_update(index_elements=["host"], set_={"at": insert.excluded.at})
        )
