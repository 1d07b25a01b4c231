"""The C-STORE handler: check, write durably, index, then answer.

The answer is sent only after the file is fsynced and its index row committed. The stored file
holds the dataset bytes exactly as received, behind a file meta group written here.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from io import BytesIO

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID
from pynetdicom.events import Event
from sqlalchemy import Engine

from .. import metrics
from ..config import DuplicatePolicy
from ..index.writer import IndexWriter, NewInstance, Outcome, instance_exists
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

_PREAMBLE = b"\x00" * 128 + b"DICM"
IMPLEMENTATION_VERSION = "DICOM_AI_NODE_01"


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


def _file_meta(sop_class: str, sop_instance: str, transfer_syntax: str, source_ae: str) -> bytes:
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = transfer_syntax
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    if source_ae:
        meta.SourceApplicationEntityTitle = source_ae
    buffer = BytesIO()
    write_file_meta_info(buffer, meta, enforce_standard=True)
    return buffer.getvalue()


class StoreHandler:
    """Bound to EVT_C_STORE; one instance serves every association of a process."""

    def __init__(
        self,
        storage: StorageArea,
        engine: Engine,
        writer: IndexWriter,
        duplicates: DuplicatePolicy,
    ) -> None:
        self._storage = storage
        self._engine = engine
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

        if self._duplicates is not DuplicatePolicy.REPLACE and self._is_duplicate(sop_instance):
            self._on_duplicate(sop_instance, calling_ae)
            return

        meta = _file_meta(sop_class, sop_instance, transfer_syntax, calling_ae)
        try:
            path = self._storage.write([_PREAMBLE, meta, raw])
        except StorageError as error:
            raise StoreFailure(OUT_OF_RESOURCES, "storage_write", str(error)) from None
        size = len(_PREAMBLE) + len(meta) + len(raw)
        item = NewInstance(
            attributes=attributes,
            transfer_syntax_uid=str(transfer_syntax),
            path=path,
            size=size,
            calling_ae_title=calling_ae,
            received_at=time.time(),
        )
        try:
            result = self._writer.commit(item)
        except Exception as error:
            self._storage.remove(path)
            raise StoreFailure(
                INDEX_UNAVAILABLE, "index_write", f"index unavailable: {type(error).__name__}"
            ) from None

        if result.outcome in (Outcome.DUPLICATE_KEPT, Outcome.DUPLICATE_REJECTED):
            # Another association stored the same instance between our check and commit.
            self._storage.remove(path)
            self._on_duplicate(sop_instance, calling_ae)
            return
        if result.outcome is Outcome.REPLACED and result.replaced_path:
            self._storage.remove(result.replaced_path)
            metrics.DUPLICATES.labels(policy=self._duplicates.value).inc()
            log.info("instance from %s replaced an earlier copy", calling_ae)
        metrics.INSTANCES_RECEIVED.inc()
        metrics.BYTES_RECEIVED.inc(size)

    def _is_duplicate(self, sop_instance: str) -> bool:
        try:
            return instance_exists(self._engine, sop_instance)
        except Exception as error:
            raise StoreFailure(
                INDEX_UNAVAILABLE, "index_read", f"index unavailable: {type(error).__name__}"
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
