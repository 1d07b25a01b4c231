"""The sender: a thread that takes the due outbox rows each round, groups them by destination
and hands each group to its destination kind (`destinations`). Celery workers (celery engine)
use it one destination at a time, on rows they took."""

from __future__ import annotations

from fhir_bridge.client import FhirClient

from ..config import NodeConfig
from ..periodic import PeriodicThread
from .destinations import Destination, open_destination
from .queue import Outbox, OutboxRow


class OutboxSender(PeriodicThread):
    """Sends due outbox rows, one group per destination per round."""

    def __init__(
        self,
        config: NodeConfig,
        box: Outbox,
        fhir: FhirClient | None = None,
        interval: float = 1.0,
    ) -> None:
        super().__init__("outbox", interval)
        self._config = config
        self._outbox = box
        self._fhir = fhir
        self._destinations: dict[str, Destination] = {}
        #: the configuration the open destinations were opened for
        self._opened_for = config

    def reconfigure(self, config: NodeConfig) -> None:
        """Send to the peers of a reloaded configuration from the next round on (a peer's new
        address, a new destination). Called from another thread: the destinations of the old
        one are closed by the sending thread as the next round starts, never under a delivery."""
        self._config = config

    def _start_round(self) -> None:
        """Take a reloaded configuration over: the destinations opened for the one before are
        closed (a STOW-RS peer's HTTP connections), and opened again as they are needed."""
        config = self._config
        if config is not self._opened_for:
            for destination in self._destinations.values():
                destination.close()
            self._destinations = {}
            self._opened_for = config

    def _destination(self, name: str) -> Destination:
        if name not in self._destinations:
            self._destinations[name] = open_destination(self._opened_for, name, self._fhir)
        return self._destinations[name]

    def run_once(self, now: float) -> int:
        """Send what is due at ``now``; returns how many objects were delivered."""
        self._start_round()
        by_destination: dict[str, list[OutboxRow]] = {}
        for row in self._outbox.due(now):
            by_destination.setdefault(row.destination, []).append(row)
        return sum(
            self._destination(name).deliver(self._outbox, rows, now)
            for name, rows in by_destination.items()
        )

    def send_destination(self, name: str, now: float) -> int:
        """Take the due rows of one destination and send them (a Celery worker; the rows are
        this sender's alone); returns how many were delivered."""
        self._start_round()
        rows = self._outbox.take_due(now, name)
        return self._destination(name).deliver(self._outbox, rows, now) if rows else 0
