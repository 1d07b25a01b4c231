"""A DICOM peer (a PACS, a research archive): the due objects go in one association per round,
each in its own transfer syntax or one the peer accepts."""

from __future__ import annotations

import logging

from ...config import ConfigError, NodeConfig
from ...dimse.scu import LOCAL_ERROR, NO_ANSWER, PeerUnavailable, send
from ..queue import Outbox, OutboxRow
from .audited import header, record_sent

log = logging.getLogger(__name__)


class DicomPeer:
    """C-STORE to the peer ``name`` of ``peers``."""

    def __init__(self, config: NodeConfig, name: str) -> None:
        self._config = config
        self.name = name

    def close(self) -> None:
        """Nothing to release: each round's association is released as the round ends."""

    def deliver(self, outbox: Outbox, rows: list[OutboxRow], now: float) -> int:
        paths = {str(outbox.area.path(row.path)): row for row in rows}
        try:
            report = send(self._config, self.name, [outbox.area.path(r.path) for r in rows])
        except (PeerUnavailable, ConfigError) as error:  # down, or no longer configured
            log.warning("outbox: %d object(s) wait for %s: %s", len(rows), self.name, error)
            for row in rows:
                outbox.not_delivered(row, str(error), now, refused=False)
            return 0
        # The node wrote every queued file as DICOM: one that is not is refused like a bad one.
        failed = dict(report.failed) | {path: "not a DICOM file" for path in report.skipped}
        stored = set(report.stored)
        sent = [row for path, row in paths.items() if path in stored]
        # Audited before the rows count as sent (as FHIR reports are): a delivery seen in the
        # outbox has its audit message on disk, and a crash between the two sends it again.
        record_sent(self._config, self.name, [header(outbox.area.path(row.path)) for row in sent])
        for row in sent:
            outbox.delivered(row)
        for path, row in paths.items():
            if path in stored:
                continue
            # The association broke off, or this node could not read or send the object: that
            # is not the peer's verdict on it, and it is tried again. Only an acknowledgement
            # counts as delivered.
            why = failed.get(path, f"{LOCAL_ERROR}: the file was not sent")
            refused = not why.startswith((NO_ANSWER, LOCAL_ERROR))
            outbox.not_delivered(row, why, now, refused=refused)
        log.info(
            "outbox: %d object(s) delivered to %s, %d not",
            len(stored),
            self.name,
            len(paths) - len(stored),
        )
        return len(stored)
