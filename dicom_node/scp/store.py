"""The C-STORE handler: check, write durably, index, then answer.

The answer is sent only after the file is flushed to disk and its index row committed. The
stored file holds the dataset bytes exactly as received, behind a file meta group written here.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom.events import Event

from .. import metrics
from ..config import DuplicatePolicy
from ..file_meta import encode_file_meta
from ..index.writer import CommitResult, IndexWriter, NewInstance, Outcome
from ..received import (
    MalformedDataset,
    check_native_pixel_length,
    instance_attributes,
    parse_dataset,
)
from ..storage import StorageArea, StorageError

log = logging.getLogger(__name__)

# C-STORE statuses (PS3.4 B.2.3 and GG.4.2); the Cxxx codes are ours within "Cannot understand".
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
INDEX_UNAVAILABLE = 0xA701
DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
CANNOT_UNDERSTAND = 0xC000
UID_MISSING = 0xC001
UID_MISMATCH = 0xC002
DUPLICATE_REJECTED = 0xC003


@dataclass(frozen=True)
class StoreFailure(Exception):
    status: int
    reason: str
    comment: str

    def response(self) -> Dataset:
        answer = Dataset()
        answer.Status = self.status
        answer.ErrorComment = self.comment[:64]
        return answer


class StoreHandler:
    """Bound to EVT_C_STORE; one instance serves every association of a process."""

    def __init__(
        self,
        storage: StorageArea,
        writer: IndexWriter,
        duplicates: DuplicatePolicy,
    ) -> None:
        self._storage = storage
        self._writer = writer
        self._duplicates = duplicates

    def __call__(self, event: Event) -> int | Dataset:
        started = time.perf_counter()
        calling_ae = event.assoc.requestor.ae_title.strip()
        try:
            self._store(event, calling_ae)
        except StoreFailure as failure:
            metrics.FAILURES.labels(reason=failure.reason).inc()
            log.warning(
                "C-STORE from %s refused (0x%04X %s): %s",
                calling_ae,
                failure.status,
                failure.reason,
                failure.comment,
            )
            return failure.response()
        metrics.STORE_LATENCY.observe(time.perf_counter() - started)
        return SUCCESS

    def _store(self, event: Event, calling_ae: str) -> None:
        request = event.request
        transfer_syntax = UID(event.context.transfer_syntax)
        raw = request.DataSet.getvalue()
        sop_class = str(request.AffectedSOPClassUID or "")
        sop_instance = str(request.AffectedSOPInstanceUID or "")

        try:
            dataset = parse_dataset(raw, transfer_syntax)
            check_native_pixel_length(dataset, transfer_syntax)
        except MalformedDataset as error:
            raise StoreFailure(CANNOT_UNDERSTAND, "malformed_dataset", str(error)) from None
        attributes = instance_attributes(dataset)
        for keyword, value in (
            ("SOPInstanceUID", attributes.sop_instance_uid),
            ("StudyInstanceUID", attributes.study_instance_uid),
            ("SeriesInstanceUID", attributes.series_instance_uid),
        ):
            if not value:
                raise StoreFailure(UID_MISSING, "uid_missing", f"{keyword} missing or empty")
        if attributes.sop_instance_uid != sop_instance:
            raise StoreFailure(
                UID_MISMATCH,
                "uid_mismatch",
                "SOPInstanceUID differs from the request's AffectedSOPInstanceUID",
            )
        if attributes.sop_class_uid != sop_class:
            raise StoreFailure(
                DATASET_DOES_NOT_MATCH_SOP_CLASS,
                "sop_class_mismatch",
                "SOPClassUID differs from the request's AffectedSOPClassUID",
            )

        meta = encode_file_meta(sop_class, sop_instance, transfer_syntax, calling_ae)
        try:
            path = self._storage.write([meta, raw])
        except StorageError as error:
            raise StoreFailure(OUT_OF_RESOURCES, "storage_write", str(error)) from None
        size = len(meta) + len(raw)
        item = NewInstance(
            attributes=attributes,
            transfer_syntax_uid=str(transfer_syntax),
            path=path,
            size=size,
            calling_ae_title=calling_ae,
            received_at=time.time(),
        )
        result = self._write_durably(item)
        if result.outcome in (Outcome.DUPLICATE_KEPT, Outcome.DUPLICATE_REJECTED):
            # Duplicates are found by the index's unique key, which also settles two
            # associations storing the same instance at once.
            self._storage.remove(path)
            self._on_duplicate(sop_instance, calling_ae)
            return
        if result.outcome is Outcome.REPLACED and result.replaced_path:
            self._storage.remove(result.replaced_path)
            metrics.DUPLICATES.labels(policy=self._duplicates.value).inc()
            log.info("instance from %s replaced an earlier copy", calling_ae)
        metrics.INSTANCES_RECEIVED.inc()
        metrics.BYTES_RECEIVED.inc(size)

    def _write_durably(self, item: NewInstance) -> CommitResult:
        """Flush the file and commit its row; both are done when this returns.

        The flush runs while the index commits (they wait on different disk writes); a crash
        in between is settled by `recovery` at the next start. Under the `replace` policy the
        earlier copy's row is overwritten, so the new file must be durable first.
        """
        if self._duplicates is DuplicatePolicy.REPLACE:
            self._sync(item)
            return self._commit(self._writer.submit(item), item)
        pending = self._writer.submit(item)
        try:
            self._sync(item)
        except StoreFailure:
            if self._commit(pending, item).outcome is Outcome.STORED:
                self._writer.retract(item)
            raise
        return self._commit(pending, item)

    def _sync(self, item: NewInstance) -> None:
        try:
            self._storage.sync(item.path)
        except StorageError as error:
            self._storage.remove(item.path)
            raise StoreFailure(OUT_OF_RESOURCES, "storage_write", str(error)) from None

    def _commit(self, pending: Future[CommitResult], item: NewInstance) -> CommitResult:
        try:
            return pending.result()
        except Exception as error:
            self._storage.remove(item.path)
            raise StoreFailure(
                INDEX_UNAVAILABLE, "index_write", f"index unavailable: {type(error).__name__}"
            ) from None

    def _on_duplicate(self, sop_instance: str, calling_ae: str) -> None:
        metrics.DUPLICATES.labels(policy=self._duplicates.value).inc()
        if self._duplicates is DuplicatePolicy.REJECT:
            raise StoreFailure(
                DUPLICATE_REJECTED, "duplicate", "SOP Instance already stored (policy: reject)"
            )
        log.info(
            "duplicate instance %s from %s: first copy kept (policy keep_first)",
            sop_instance,
            calling_ae,
        )
