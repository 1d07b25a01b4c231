"""The planner's statistics of the index, kept current as it grows.

Without them PostgreSQL plans a query over fifty thousand studies as it would over none (a
sequential scan of every instance for each count), and autovacuum, which would gather them, may
be off or lag behind a bulk load. PostgreSQL counts the rows changed since a table's last
ANALYZE: a table changed by a tenth of its size is analysed again. SQLite plans these queries
from the indexes alone.
"""

from __future__ import annotations

import logging

from sqlalchemy import Engine, text

from ..periodic import PeriodicThread
from .schema import instances, series, studies

log = logging.getLogger(__name__)

_TABLES = (studies.name, series.name, instances.name)
#: A table is analysed again once this share of its rows (and at least _MIN_CHANGES) changed.
_CHANGED_SHARE = 0.1
_MIN_CHANGES = 500


def refresh_statistics(engine: Engine) -> list[str]:
    """Analyse the query tables whose statistics are stale; returns their names (PostgreSQL)."""
    if engine.dialect.name != "postgresql":
        return []
    with engine.connect() as connection:
        stale = list(
            connection.execute(
                text(
                    "SELECT relname FROM pg_stat_user_tables WHERE relname = ANY(:tables)"
                    " AND (last_analyze IS NULL AND last_autoanalyze IS NULL"
                    " OR n_mod_since_analyze > GREATEST(:minimum, :share * n_live_tup))"
                ),
                {"tables": list(_TABLES), "minimum": _MIN_CHANGES, "share": _CHANGED_SHARE},
            ).scalars()
        )
    if stale:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            for table in stale:
                connection.exec_driver_sql(f"ANALYZE {table}")
        log.info("index statistics refreshed: %s", ", ".join(stale))
    return stale


class StatisticsRefresher(PeriodicThread):
    """Refreshes the planner's statistics of a growing index."""

    def __init__(self, engine: Engine, interval: float = 30.0) -> None:
        super().__init__("index statistics refresh", interval)
        self._engine = engine

    def run_once(self, now: float) -> list[str]:
        return refresh_statistics(self._engine)
