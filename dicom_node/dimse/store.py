"""The C-STORE handler: the shared ingest path, answered as a DIMSE status.

The answer is sent only after the file is flushed to disk and its index row committed.
"""

from __future__ import annotations

import logging
import time

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom.events import Event

from .. import metrics
from ..statuses import SUCCESS
from ..store.ingest import Ingest, StoreFailure

log = logging.getLogger(__name__)


class StoreHandler:
    """Bound to EVT_C_STORE; one instance serves every association of a process."""

    def __init__(self, ingest: Ingest) -> None:
        self._ingest = ingest

    def __call__(self, event: Event) -> int | Dataset:
        started = time.perf_counter()
        calling_ae = event.assoc.requestor.ae_title.strip()
        request = event.request
        try:
            self._ingest.store(
                request.DataSet.getvalue(),
                UID(event.context.transfer_syntax),
                str(request.AffectedSOPClassUID or ""),
                str(request.AffectedSOPInstanceUID or ""),
                calling_ae,
            )
        except StoreFailure as failure:
            metrics.FAILURES.labels(reason=failure.reason).inc()
            log.warning(
                "C-STORE from %s refused (0x%04X %s): %s",
                calling_ae,
                failure.status,
                failure.reason,
                failure.comment,
            )
            answer = Dataset()
            answer.Status = failure.status
            answer.ErrorComment = failure.comment[:64]
            return answer
        metrics.STORE_LATENCY.observe(time.perf_counter() - started)
        return SUCCESS
