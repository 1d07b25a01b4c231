"""The one durable path by which received instances enter the node, over DIMSE or STOW-RS.

A dataset is checked (complete, UIDs present and consistent), written behind a file meta group
written here, flushed, and its index row committed; the caller answers success only after
`Ingest.store` returns. Pixel data is never decoded: the stored bytes are the received ones.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

from pydicom.uid import UID

from .. import metrics
from ..config import DuplicatePolicy
from ..index.writer import CommitResult, IndexWriter, NewInstance, Outcome
from ..statuses import (
    CANNOT_UNDERSTAND,
    DATASET_DOES_NOT_MATCH_SOP_CLASS,
    DUPLICATE_REJECTED,
    INDEX_UNAVAILABLE,
    INVALID_UID,
    OUT_OF_RESOURCES,
    STUDY_MISMATCH,
    UID_MISMATCH,
    UID_MISSING,
)
from .file_meta import encode_file_meta
from .metadata import IdleDocumentWriter
from .received import (
    DatasetTooLarge,
    InstanceAttributes,
    MalformedDataset,
    check_native_pixel_length,
    instance_attributes,
    is_uid,
    parse_dataset,
)
from .storage import StorageArea, StorageError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoreFailure(Exception):
    """Why an instance was not stored: the status to answer, a metric label, a comment."""

    status: int
    reason: str
    comment: str


class Ingest:
    """Stores received datasets; one instance serves every association or request of a process."""

    def __init__(
        self,
        storage: StorageArea,
        writer: IndexWriter,
        duplicates: DuplicatePolicy,
        max_inflated_bytes: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        #: the time stamped on received instances (a cluster's: the database's clock)
        self._clock = clock
        self._storage = storage
        self._writer = writer
        self._duplicates = duplicates
        #: a deflated dataset inflating past this is refused (a compression bomb)
        self._max_inflated_bytes = max_inflated_bytes
        self._documents = IdleDocumentWriter(storage)

    def store(
        self,
        raw: bytes,
        transfer_syntax: UID,
        sop_class: str,
        sop_instance: str,
        source: str,
        study: str | None = None,
    ) -> InstanceAttributes:
        """Store `raw` (a dataset without file meta, encoded in `transfer_syntax`) that the
        sender announced as `sop_class`/`sop_instance`; durable when this returns.

        `source` is the calling AE title (empty for DICOMweb); `study`, when given, the study
        the instance must belong to. Raises StoreFailure.
        """
        _check_uids(("announced SOP Instance UID", sop_instance))
        try:
            dataset = parse_dataset(raw, transfer_syntax, self._max_inflated_bytes)
            check_native_pixel_length(dataset, transfer_syntax)
        except MalformedDataset as error:
            raise StoreFailure(CANNOT_UNDERSTAND, "malformed_dataset", str(error)) from None
        except DatasetTooLarge as error:
            raise StoreFailure(OUT_OF_RESOURCES, "dataset_too_large", str(error)) from None
        attributes = instance_attributes(dataset)
        _check_uids(
            ("SOPInstanceUID", attributes.sop_instance_uid),
            ("StudyInstanceUID", attributes.study_instance_uid),
            ("SeriesInstanceUID", attributes.series_instance_uid),
        )
        if attributes.sop_instance_uid != sop_instance:
            raise StoreFailure(
                UID_MISMATCH,
                "uid_mismatch",
                "SOPInstanceUID differs from the announced SOP Instance UID",
            )
        if study is not None and attributes.study_instance_uid != study:
            raise StoreFailure(
                STUDY_MISMATCH, "study_mismatch", "the instance belongs to another study"
            )
        if attributes.sop_class_uid != sop_class:
            raise StoreFailure(
                DATASET_DOES_NOT_MATCH_SOP_CLASS,
                "sop_class_mismatch",
                "SOPClassUID differs from the announced SOP Class UID",
            )

        meta = encode_file_meta(sop_class, sop_instance, transfer_syntax, source)
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
            calling_ae_title=source,
            received_at=self._clock(),
        )
        result = self._write_durably(item)
        if result.outcome in (Outcome.DUPLICATE_KEPT, Outcome.DUPLICATE_REJECTED):
            # Duplicates are found by the index's unique key, which also settles two
            # senders storing the same instance at once.
            self._storage.remove(path)
            self._on_duplicate(sop_instance, source)
            return attributes
        if result.outcome is Outcome.REPLACED and result.replaced_path:
            self._storage.remove(result.replaced_path)
            metrics.DUPLICATES.labels(policy=self._duplicates.value).inc()
            log.info("instance from %s replaced an earlier copy", source or "DICOMweb")
        metrics.INSTANCES_RECEIVED.inc()
        metrics.BYTES_RECEIVED.inc(size)
        self._documents.add(path, str(transfer_syntax), attributes)
        return attributes

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

    def _on_duplicate(self, sop_instance: str, source: str) -> None:
        metrics.DUPLICATES.labels(policy=self._duplicates.value).inc()
        if self._duplicates is DuplicatePolicy.REJECT:
            raise StoreFailure(
                DUPLICATE_REJECTED, "duplicate", "SOP Instance already stored (policy: reject)"
            )
        log.info(
            "duplicate instance %s from %s: first copy kept (policy keep_first)",
            sop_instance,
            source or "DICOMweb",
        )


def _check_uids(*named: tuple[str, str]) -> None:
    """Refuse missing UIDs and ones that break the UID rules; the value is not echoed, as it
    may hold anything (a path, a new line) that must not reach logs or files."""
    for name, value in named:
        if not value:
            raise StoreFailure(UID_MISSING, "uid_missing", f"{name} missing or empty")
        if not is_uid(value):
            raise StoreFailure(INVALID_UID, "invalid_uid", f"{name} is not a valid UID")
