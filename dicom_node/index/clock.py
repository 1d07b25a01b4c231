"""The database's clock, read cheaply: the hosts of a cluster stamp received instances and decide
that a study is quiet by one clock, the index's, so that a receiver whose clock runs behind or
ahead never makes another's study look complete too early (or late).

The offset between this host's clock and the database's is measured with one query, half the
round trip taken as the database's moment, and measured again every minute; reading the clock
is then free."""

from __future__ import annotations

import time

from sqlalchemy import Connection, Engine, func, select

#: how often the offset is measured again (clocks drift, NTP steps them)
MEASURE_EVERY_SECONDS = 60.0


def database_time(connection: Connection) -> float:
    """Now, by the database's clock (seconds since the epoch)."""
    moment = select(func.extract("epoch", func.clock_timestamp()))
    return float(connection.execute(moment).scalar_one())


class DatabaseClock:
    """``now()``: seconds since the epoch by the database's clock."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._offset = 0.0
        self._measured_at = float("-inf")

    def _measure(self) -> None:
        before = time.time()
        with self._engine.connect() as connection:
            database = database_time(connection)
        after = time.time()
        self._offset = database - (before + after) / 2
        self._measured_at = after

    def now(self) -> float:
        local = time.time()
        if local - self._measured_at >= MEASURE_EVERY_SECONDS:
            try:
                self._measure()
            except Exception:  # an index outage: the last offset stays (it was measured)
                self._measured_at = local
            local = time.time()
        return local + self._offset

    __call__ = now
