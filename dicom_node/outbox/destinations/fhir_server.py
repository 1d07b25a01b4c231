"""The FHIR server (destination ``fhir``): each queued report is one transaction Bundle, posted
with `fhir_bridge`'s client. A 4xx is final at once (the same Bundle would be refused again);
once the server is found unavailable, the round's other reports wait untried, so a server that
is down does not hold up the DICOM deliveries behind them."""

from __future__ import annotations

import logging

from fhir_bridge.client import FhirClient, Verdict

from ...config import ConfigError, NodeConfig
from ..queue import Outbox, OutboxRow
from .audited import record_report_posted

log = logging.getLogger(__name__)


def open_fhir_client(config: NodeConfig) -> FhirClient | None:
    """The client for ``fhir.base_url`` (None when FHIR is off); a key file that cannot be read
    is a configuration error, reported at start."""
    if not config.fhir.enabled:
        return None
    try:
        return FhirClient(config.fhir)
    except OSError as error:
        raise ConfigError(
            f"fhir.auth.private_key_file: cannot read {error.filename}: {error.strerror}"
        ) from None


class FhirServer:
    """Posts reports with ``client`` (None: FHIR is off, and reports wait for it)."""

    def __init__(self, config: NodeConfig, client: FhirClient | None) -> None:
        self._config = config
        self._client = client

    def close(self) -> None:
        """Nothing to release: the client is the sender's, opened once at start, kept."""

    def deliver(self, outbox: Outbox, rows: list[OutboxRow], now: float) -> int:
        if self._client is None:
            for row in rows:
                outbox.not_delivered(row, "fhir.base_url is not set", now, refused=False)
            return 0
        delivered = 0
        unavailable: str | None = None
        for row in rows:
            if unavailable is not None:
                outbox.not_delivered(row, unavailable, now, refused=False)
                continue
            bundle = outbox.read(row)
            outcome = self._client.post_transaction(bundle)
            if outcome.verdict == Verdict.DELIVERED:
                record_report_posted(self._config, bundle)
                outbox.delivered(row)
                delivered += 1
                continue
            refused = outcome.verdict == Verdict.REFUSED
            # The log gets the brief answer: a refusal may quote the patient's data, which stays
            # in the row (``dicom-node outbox list``) and at DEBUG.
            if refused:
                log.error("outbox: the FHIR server refused report %d: %s", row.id, outcome.brief)
            else:
                log.warning("outbox: reports wait for the FHIR server: %s", outcome.brief)
                unavailable = outcome.message
            log.debug("outbox: report %d: %s", row.id, outcome.message)
            outbox.not_delivered(row, outcome.message, now, refused=refused, final=refused)
        if delivered:
            log.info("outbox: %d report(s) delivered to the FHIR server", delivered)
        return delivered
