"""C-MOVE and C-GET handlers: sending stored instances back, as stored when the peer accepts it.

Each instance is offered in its stored transfer syntax first, with an uncompressed fallback
(see `outbound_syntax`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    # pynetdicom makes them at import time (into globals()): mypy cannot see them
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
)
from sqlalchemy import Engine

from .. import metrics
from ..audit import messages, record
from ..config import NodeConfig
from ..index.query import QueryError, build_query, matching_instances, studies_of
from ..statuses import PENDING, UNABLE_TO_PROCESS
from ..store.storage import StorageArea
from . import tuning
from .auditing import destination as peer_destination
from .auditing import requestor
from .find import QueryFailure, _identifier_values, parse_level
from .outbound_syntax import MAX_CONTEXTS, accepted_syntaxes, as_accepted, proposed_contexts
from .tls import client_args

log = logging.getLogger(__name__)

_PATIENT_ROOT = {
    PatientRootQueryRetrieveInformationModelMove,
    PatientRootQueryRetrieveInformationModelGet,
}


def _matches(engine: Engine, event: Event) -> list[dict]:
    identifier = event.identifier
    level = parse_level(identifier, event.request.AffectedSOPClassUID in _PATIENT_ROOT)
    try:
        query = build_query(level, _identifier_values(identifier))
    except QueryError as error:
        raise QueryFailure(UNABLE_TO_PROCESS, str(error), "unsupported_key") from None
    if not query.conditions and not query.modalities:
        raise QueryFailure(
            UNABLE_TO_PROCESS, "a retrieve needs at least one unique key", "no_unique_key"
        )
    return matching_instances(engine, query)


def storage_contexts(rows: list[dict]) -> list[PresentationContext]:
    """Presentation contexts to propose for `rows`: each SOP class with its stored syntaxes."""
    pairs = ((row["sop_class_uid"], row["transfer_syntax_uid"]) for row in rows)
    return proposed_contexts(pairs)[:MAX_CONTEXTS]


class StoredFile(Dataset):
    """A stored instance handed to pynetdicom's C-MOVE or C-GET service, which takes Datasets
    only, to be sent as its file (`send_stored_files`): neither decoded nor encoded again, read
    in fragments as it goes out. It holds the instance's UID, which pynetdicom names in its
    answer when the sub-operation fails."""

    def __init__(self, path: Path, sop_instance_uid: str) -> None:
        super().__init__()
        self.SOPInstanceUID = sop_instance_uid
        self.stored_path = path


def send_stored_files(association: Association) -> None:
    """Let the association's `send_c_store` take a StoredFile: its file goes as stored."""
    send_c_store = association.send_c_store
    if getattr(send_c_store, "sends_stored_files", False):
        return

    def send(dataset, *args, **kwargs):
        if isinstance(dataset, StoredFile):
            dataset = dataset.stored_path
        return send_c_store(dataset, *args, **kwargs)

    send.sends_stored_files = True  # type: ignore[attr-defined]
    association.send_c_store = send  # type: ignore[method-assign]  # this association's


class _Sender:
    """Loads stored instances for sub-operations: the file itself where the peer takes its
    transfer syntax, else decoded (decompressed only when the peer needs it)."""

    def __init__(self, storage: StorageArea) -> None:
        self._storage = storage

    def load(self, row: dict, accepted: set[str]) -> Dataset:
        path = self._storage.path(row["path"])
        if row["transfer_syntax_uid"] in accepted:
            path.stat()  # a file gone is this sub-operation's failure, logged below
            return StoredFile(path, row["sop_instance_uid"])
        dataset = dcmread(path)
        return as_accepted(dataset, row["transfer_syntax_uid"], accepted)

    def sub_operations(
        self, rows: list[dict], accepted_for: Callable[[str], set[str]]
    ) -> Iterator[tuple[int, Dataset | str]]:
        for row in rows:
            try:
                dataset = self.load(row, accepted_for(row["sop_class_uid"]))
            except Exception as error:
                log.error("cannot read stored instance %s: %s", row["path"], error)
                metrics.FAILURES.labels(reason="retrieve_read").inc()
                # pynetdicom counts a pending answer that is not a Dataset as a failed sub-operation
                yield PENDING, row["sop_instance_uid"]
                continue
            yield PENDING, dataset


class MoveHandler:
    """Bound to EVT_C_MOVE: the destination must be a configured peer."""

    def __init__(self, engine: Engine, storage: StorageArea, config: NodeConfig) -> None:
        self._engine = engine
        self._sender = _Sender(storage)
        #: the peers C-MOVE may send to; replaced by a reload of the configuration
        self.config = config

    @staticmethod
    def _store_association(event: Event, destination: str) -> Association | None:
        """The association pynetdicom opened to `destination` for this C-MOVE, tuned (it is
        established and nothing has been sent on it). pynetdicom does not hand it over: it is
        the one this thread (the one serving the C-MOVE, see `NodeAE.associate`) requested to
        that AE title and has not released (the earlier C-MOVEs' are released; this thread
        serves one C-MOVE at a time)."""
        this_thread = threading.get_ident()
        found = [
            association
            for association in event.assoc.ae.active_associations
            if association.is_requestor
            and association.is_established
            and getattr(association, "requested_by", None) == this_thread
            and association.acceptor.ae_title.strip() == destination
        ]
        if not found:
            return None
        tuning.install_requestor(found[-1])
        send_stored_files(found[-1])
        return found[-1]

    def __call__(self, event: Event) -> Iterator:
        destination = event.move_destination
        # pynetdicom passes on only valid requests: a C-MOVE's Move Destination is present
        assert destination is not None
        if isinstance(destination, bytes):
            destination = destination.decode("ascii", "replace")
        destination = destination.strip()
        peer = self.config.peer_by_ae_title(destination)
        if peer is None:
            metrics.FAILURES.labels(reason="move_unknown_destination").inc()
            log.warning("C-MOVE to unknown destination AE %r refused (0xA801)", destination)
            yield None, None
            return
        try:
            rows = _matches(self._engine, event)
        except QueryFailure as failure:
            metrics.FAILURES.labels(reason=f"move_{failure.reason}").inc()
            log.warning("C-MOVE refused (0x%04X): %s", failure.status, failure.comment)
            yield peer.host, peer.port
            yield failure.status, failure.response()
            return
        log.info("C-MOVE of %d instance(s) to %s", len(rows), destination)
        assert peer.address is not None  # peer_by_ae_title finds DICOM peers only
        record(
            messages.instances_sent(
                peer_destination(peer.address), studies_of(rows), requestor(event.assoc)
            )
        )
        yield (
            peer.host,
            peer.port,
            {
                "contexts": storage_contexts(rows) or None,
                "tls_args": client_args(self.config, peer),
            },
        )
        yield len(rows)
        store_assoc = None

        def accepted_for(sop_class: str) -> set[str]:
            nonlocal store_assoc
            if store_assoc is None:
                store_assoc = self._store_association(event, destination)
            if store_assoc is None:
                return set()
            return accepted_syntaxes(store_assoc.accepted_contexts, sop_class)

        for status, dataset in self._sender.sub_operations(rows, accepted_for):
            if event.is_cancelled:
                yield 0xFE00, None
                return
            yield status, dataset


class GetHandler:
    """Bound to EVT_C_GET: instances go back over the requestor's own association."""

    def __init__(self, engine: Engine, storage: StorageArea) -> None:
        self._engine = engine
        self._sender = _Sender(storage)

    def __call__(self, event: Event) -> Iterator:
        try:
            rows = _matches(self._engine, event)
        except QueryFailure as failure:
            metrics.FAILURES.labels(reason=f"get_{failure.reason}").inc()
            log.warning("C-GET refused (0x%04X): %s", failure.status, failure.comment)
            yield 0
            yield failure.status, failure.response()
            return
        log.info("C-GET of %d instance(s)", len(rows))
        record(
            messages.instances_sent(requestor(event.assoc, messages.DESTINATION), studies_of(rows))
        )
        yield len(rows)
        send_stored_files(event.assoc)
        for status, dataset in self._sender.sub_operations(
            rows, lambda sop_class: accepted_syntaxes(event.assoc.accepted_contexts, sop_class)
        ):
            if event.is_cancelled:
                yield 0xFE00, None
                return
            yield status, dataset
