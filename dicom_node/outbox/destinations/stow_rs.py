"""A DICOMweb server (`peers.NAME.dicomweb_url`): the due objects are stored with STOW-RS
(PS3.18 10.5), as queued, in one multipart/related request of a bounded size, authenticated like
the FHIR client (`fhir_bridge.auth`).

The answer decides each object's fate: stored (200, or listed in ReferencedSOPSequence) is
delivered; listed in FailedSOPSequence is a refusal of that object, counted towards
`outbox.max_refusals`; no connection, a timeout, 5xx, 429, 401 or 403 is the server's (or its
credentials') trouble, not the object's: everything waits and is tried again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import requests
from pydicom import Dataset

from fhir_bridge.auth import AuthError, make_auth

from ...config import ConfigError, NodeConfig
from ...multipart import Part, multipart_body, multipart_content_type, new_boundary
from ..queue import Outbox, OutboxRow
from .audited import header, record_sent

log = logging.getLogger(__name__)

#: most objects and bytes in one request (the rest of a round goes in the next requests)
MAX_PARTS = 50
MAX_BYTES = 128 * 1024 * 1024
_WAIT_STATUSES = {401, 403, 408, 429}
DICOM = "application/dicom"
_FAILED_SOPS = "00081198"
_REFERENCED_SOPS = "00081199"
_REFERENCED_SOP_INSTANCE = "00081155"
_FAILURE_REASON = "00081197"


def _batches(outbox: Outbox, rows: list[OutboxRow]) -> Iterator[list[tuple[OutboxRow, bytes]]]:
    batch: list[tuple[OutboxRow, bytes]] = []
    size = 0
    for row in rows:
        data = outbox.read(row)
        if batch and (len(batch) >= MAX_PARTS or size + len(data) > MAX_BYTES):
            yield batch
            batch, size = [], 0
        batch.append((row, data))
        size += len(data)
    if batch:
        yield batch


def _answered_uids(answer: requests.Response) -> tuple[set[str], dict[str, str]]:
    """(stored UIDs, failed UID -> reason) from the server's Store Instances Response."""
    try:
        response = Dataset.from_json(answer.json())
    except ValueError:
        return set(), {}
    stored = {
        str(item.get(_REFERENCED_SOP_INSTANCE).value)
        for item in response.get(_REFERENCED_SOPS, [])
        if item.get(_REFERENCED_SOP_INSTANCE) is not None
    }
    failed = {}
    for item in response.get(_FAILED_SOPS, []):
        if item.get(_REFERENCED_SOP_INSTANCE) is not None:
            reason = item.get(_FAILURE_REASON)
            code = f"0x{int(reason.value):04X}" if reason is not None else "no reason given"
            failed[str(item.get(_REFERENCED_SOP_INSTANCE).value)] = code
    return stored, failed


class StowRsPeer:
    """Stores objects on the DICOMweb server of peer ``name``."""

    def __init__(self, config: NodeConfig, name: str) -> None:
        peer = config.peer(name)
        if peer.dicomweb_url is None:
            raise ConfigError(f"peer {name!r} has no dicomweb_url")
        self._config = config
        self.name = name
        self.url = str(peer.dicomweb_url).rstrip("/") + "/studies"
        self.timeout = peer.timeout_seconds
        self.session = requests.Session()
        self.session.auth = make_auth(peer.auth, peer.timeout_seconds)

    def deliver(self, outbox: Outbox, rows: list[OutboxRow], now: float) -> int:
        delivered = 0
        tried: set[int] = set()
        for batch in _batches(outbox, rows):
            answer = self._post([data for _, data in batch])
            wait = _wait_reason(answer)
            if wait is not None:
                untried = [row for row in rows if row.id not in tried]
                log.warning("outbox: %d object(s) wait for %s: %s", len(untried), self.name, wait)
                for row in untried:
                    outbox.not_delivered(row, wait, now, refused=False)
                break
            assert isinstance(answer, requests.Response)
            delivered += self._record(outbox, batch, answer, now)
            tried.update(row.id for row, _ in batch)
        if delivered:
            log.info("outbox: %d object(s) stored on %s with STOW-RS", delivered, self.name)
        return delivered

    def close(self) -> None:
        """The session's kept-alive connections to the server closed."""
        self.session.close()

    def _post(self, parts: list[bytes]) -> requests.Response | str:
        boundary = new_boundary()
        body = b"".join(multipart_body([Part(DICOM, [part]) for part in parts], boundary))
        headers = {
            "Content-Type": multipart_content_type(DICOM, boundary),
            "Accept": "application/dicom+json",
        }
        try:
            return self.session.post(self.url, data=body, headers=headers, timeout=self.timeout)
        except (requests.RequestException, AuthError) as error:
            return f"DICOMweb server unreachable: {error}"

    def _record(
        self,
        outbox: Outbox,
        batch: list[tuple[OutboxRow, bytes]],
        answer: requests.Response,
        now: float,
    ) -> int:
        stored, failed = _answered_uids(answer)
        sent = []
        for row, data in batch:
            uid = row.sop_instance_uid
            if uid in failed:
                error = f"{self.name} refused the object (failure reason {failed[uid]})"
            elif answer.status_code == 200 or uid in stored:
                sent.append((row, data))
                continue
            else:
                error = f"{self.name} answered {answer.status_code} {answer.reason}"
            log.error("outbox: %s", error)
            outbox.not_delivered(row, error, now, refused=True)
        # Audited before the rows count as sent, as a DICOM peer's deliveries are.
        record_sent(self._config, self.name, [header(data) for _, data in sent])
        for row, _ in sent:
            outbox.delivered(row)
        return len(sent)


def _wait_reason(answer: requests.Response | str) -> str | None:
    """Why nothing of the request can be judged (the server's trouble), or None."""
    if isinstance(answer, str):
        return answer
    if answer.status_code in _WAIT_STATUSES or answer.status_code >= 500:
        return f"DICOMweb server answered {answer.status_code} {answer.reason}"
    return None
