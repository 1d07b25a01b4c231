"""A DICOM peer (a PACS, a research archive): the due objects go in one association per round,
each in its own transfer syntax or one the peer accepts."""

from __future__ import annotations

import logging

from ...config import ConfigError, NodeConfig
from ...dimse.scu import NO_ANSWER, PeerUnavailable, send
from ..queue import Outbox, OutboxRow

log = logging.getLogger(__name__)


class DicomPeer:
    """C-STORE to the peer ``name`` of ``peers``."""

    def __init__(self, config: NodeConfig, name: str) -> None:
        self._config = config
        self.name = name

    def deliver(self, outbox: Outbox, rows: list[OutboxRow], now: float) -> int:
        paths = {str(outbox.area.path(row.path)): row for row in rows}
        try:
            report = send(self._config, self.name, [outbox.area.path(r.path) for r in rows])
        except (PeerUnavailable, ConfigError) as error:  # down, or no longer configured
            log.warning("outbox: %d object(s) wait for %s: %s", len(rows), self.name, error)
            for row in rows:
                outbox.not_delivered(row, str(error), now, refused=False)
            return 0
        failed = dict(report.failed)
        for path, row in paths.items():
            if path in failed:
                # The association broke off: that is not the peer's verdict on the object.
                refused = not failed[path].startswith(NO_ANSWER)
                outbox.not_delivered(row, failed[path], now, refused=refused)
            else:
                outbox.delivered(row)
        sent = len(paths) - len(failed)
        log.info("outbox: %d object(s) delivered to %s, %d not", sent, self.name, len(failed))
        return sent
