"""The C-STORE handler: the shared ingest path, answered as a DIMSE status.

The answer is sent only after the file is flushed to disk and its index row committed. A
request that lacks a required parameter (an empty SOP Instance UID), which pynetdicom drops
unanswered, is answered with a failure too.
"""

from __future__ import annotations

import logging
import time
from typing import cast

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event

from .. import metrics
from ..audit import messages, record
from ..audit.messages import StudyData
from ..statuses import OUT_OF_RESOURCES, SUCCESS, UID_MISSING
from ..store.ingest import Ingest, StoreFailure
from .auditing import requestor
from .reading import BoundedDataset

log = logging.getLogger(__name__)


class StoreHandler:
    """Bound to EVT_C_STORE; one instance serves every association of a process. What an
    association stored is audited once it closes, one message for all its studies (not one
    per instance)."""

    def __init__(self, ingest: Ingest) -> None:
        self._ingest = ingest
        #: per open association, the studies it stored into
        self._stored: dict[Association, dict[str, StudyData]] = {}

    def __call__(self, event: Event) -> int | Dataset:
        started = time.perf_counter()
        calling_ae = event.assoc.requestor.ae_title.strip()
        request = cast(C_STORE, event.request)  # EVT_C_STORE's request is a C-STORE
        try:
            stored = self._ingest.store(
                _received_bytes(request.DataSet),
                UID(event.context.transfer_syntax),
                str(request.AffectedSOPClassUID or ""),
                str(request.AffectedSOPInstanceUID or ""),
                calling_ae,
            )
        except StoreFailure as failure:
            _log_refusal(calling_ae, failure)
            answer = Dataset()
            answer.Status = failure.status
            answer.ErrorComment = failure.comment[:64]
            return answer
        metrics.STORE_LATENCY.observe(time.perf_counter() - started)
        studies = self._stored.setdefault(event.assoc, {})
        uid = stored.study_instance_uid
        if uid not in studies:
            studies[uid] = StudyData(uid, stored.patient_id, stored.patient_name)
        studies[uid].add(stored.sop_class_uid)
        return SUCCESS

    def association_closed(self, event: Event) -> None:
        """Bound to EVT_CONN_CLOSE: audit what the association stored."""
        studies = self._stored.pop(event.assoc, None)
        if studies:
            record(
                messages.instances_stored(requestor(event.assoc, messages.SOURCE), studies.values())
            )


def answer_incomplete_stores(association: Association) -> None:
    """Answer a C-STORE request that lacks a required parameter, which pynetdicom ignores
    (the sender would wait for its answer until a timeout ends the association)."""
    serve_request = association._serve_request

    def serve(request, context_id: int) -> None:
        answerable = isinstance(request, C_STORE) and request.MessageID is not None
        if not answerable or request.is_valid_request:
            serve_request(request, context_id)
            return
        missing = [name for name in C_STORE.REQUEST_KEYWORDS if getattr(request, name) is None]
        failure = StoreFailure(UID_MISSING, "uid_missing", f"{', '.join(missing)} missing or empty")
        _log_refusal(association.requestor.ae_title.strip(), failure)
        answer = C_STORE()
        answer.MessageIDBeingRespondedTo = request.MessageID
        answer.AffectedSOPClassUID = request.AffectedSOPClassUID
        answer.AffectedSOPInstanceUID = request.AffectedSOPInstanceUID
        answer.Status = failure.status
        # pynetdicom declares ErrorComment by setting None (mypy infers None); it takes a str
        answer.ErrorComment = failure.comment[:64]  # type: ignore[assignment]
        association.dimse.send_msg(answer, context_id)

    # On purpose, for this association (mypy compares serve() with the unbound method).
    association._serve_request = serve  # type: ignore[method-assign, assignment]


def _log_refusal(calling_ae: str, failure: StoreFailure) -> None:
    metrics.FAILURES.labels(reason=failure.reason).inc()
    log.warning(
        "C-STORE from %r refused (0x%04X %s): %s",
        calling_ae,
        failure.status,
        failure.reason,
        failure.comment,
    )


def _received_bytes(dataset) -> bytes:
    """The request's dataset, unless it ran past `dicom.max_dataset_bytes` (then dropped)."""
    if isinstance(dataset, BoundedDataset) and dataset.too_large:
        raise StoreFailure(
            OUT_OF_RESOURCES,
            "dataset_too_large",
            f"dataset larger than {dataset.limit} bytes (dicom.max_dataset_bytes)",
        )
    return dataset.getvalue()
