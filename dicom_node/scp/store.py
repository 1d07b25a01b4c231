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
from ..ingest import OUT_OF_RESOURCES, Ingest, StoreFailure
from .reading import BoundedDataset

log = logging.getLogger(__name__)

SUCCESS = 0x0000


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
                _received_bytes(request.DataSet),
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


def _received_bytes(dataset) -> bytes:
    """The request's dataset, unless it ran past `dicom.max_dataset_bytes` (then dropped)."""
    if isinstance(dataset, BoundedDataset) and dataset.too_large:
        raise StoreFailure(
            OUT_OF_RESOURCES,
            "dataset_too_large",
            f"dataset larger than {dataset.limit} bytes (dicom.max_dataset_bytes)",
        )
    return dataset.getvalue()
