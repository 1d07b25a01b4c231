"""The node's Application Entity as an SCP: presentation contexts, access control, the listener.

Several receiving processes accept from one listening socket, which is how the node gets past
one interpreter's GIL. A process that holds more associations than a sibling lets the sibling
accept first, so parallel senders spread evenly (SO_REUSEPORT's hashing put three of four
senders on one process as often as not). The association limit stays global: each process
counts its open connections and associations in arrays shared by all (see `connections`).
"""

from __future__ import annotations

import copy
import logging
import socket
import threading
import time

from pynetdicom import AE, _config, evt
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    # pynetdicom makes them at import time (into globals()): mypy cannot see them
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)
from pynetdicom.transport import ThreadedAssociationServer

from .. import metrics
from ..audit import messages, record, record_unhurried
from ..config import NodeConfig
from . import tls, tuning
from .auditing import requestor as requesting_peer
from .connections import Connections, SharedCounts
from .store import answer_incomplete_stores

log = logging.getLogger(__name__)

# Every storage SOP class (also private and future ones) in every transfer syntax the peer
# proposes: the node stores bytes as received, so it needs no codec to accept them.
_config.UNRESTRICTED_STORAGE_SERVICE = True
# Identifiers hold patient names and IDs: keep them out of pynetdicom's INFO log lines.
_config.LOG_REQUEST_IDENTIFIERS = False
_config.LOG_RESPONSE_IDENTIFIERS = False

_QUERY_RETRIEVE = (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelMove,
    PatientRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelGet,
)

#: an A-ASSOCIATE-RJ's result, source and diagnostic
_Rejection = tuple[int | None, int | None, int | None]
_REJECT_REASONS: dict[_Rejection | None, str] = {
    (1, 1, 3): "calling AE title not recognised",
    (1, 1, 7): "called AE title not recognised",
    (2, 3, 2): "local limit of concurrent associations exceeded",
    (2, 2, 1): "user identity not accepted",
}


class NodeAE(AE):
    """An AE whose association limit is shared with the node's other receiving processes."""

    def __init__(
        self,
        ae_title: str,
        limit: int,
        connections: Connections,
        max_dataset_bytes: int,
    ) -> None:
        super().__init__(ae_title)
        self._limit = limit
        self.connections = connections
        self._max_dataset_bytes = max_dataset_bytes
        self._pinned = tls.PinnedPeers({})

    def apply_access_rules(self, config: NodeConfig) -> None:
        """Who may associate: the called AE title, the known callers, the peers pinned to a
        certificate. Set at start and again by a reload of the configuration; an association
        already accepted keeps going."""
        dicom = config.dicom
        self.require_called_aet = dicom.require_called_ae
        self.require_calling_aet = (
            [peer.address.ae_title for peer in config.peers.values() if peer.address is not None]
            if dicom.require_known_calling_ae
            else []
        )
        self._pinned = tls.PinnedPeers(config.peers)

    @property
    def maximum_associations(self) -> int:
        """What pynetdicom compares with its count of acceptor threads in this process.

        That count also holds threads of connections that have not asked for an association
        (and, until they end, of connections already closed), so the limit is applied to
        requested associations instead: node-wide ones, the new one included.
        """
        threads_here = sum(1 for assoc in self.active_associations if assoc.is_acceptor)
        return max(self._limit - self.connections.associations() + threads_here, 0)

    @maximum_associations.setter
    def maximum_associations(self, value: int) -> None:
        self._limit = value

    def associate(self, *args, **kwargs) -> Association:
        """pynetdicom's, the association marked with the thread that requested it: a C-MOVE's
        association to its destination is requested by the thread serving the C-MOVE, which
        is how its handler finds it (`retrieve.MoveHandler`) among the others open."""
        association = super().associate(*args, **kwargs)
        association.requested_by = threading.get_ident()  # type: ignore[attr-defined]
        return association

    def connection_opened(self, event: Event) -> None:
        # The ACSE timeout is always set on the node's AE (build_ae).
        tls.handshake_first(event.assoc, self.acse_timeout or 30.0)
        self.connections.opened(event.assoc)
        tuning.install(event.assoc, self._max_dataset_bytes)
        answer_incomplete_stores(event.assoc)

    def association_requested(self, event: Event) -> None:
        self.connections.requested(event.assoc)
        refusal = self._pinned.refusal(event.assoc)
        if refusal is not None:
            requestor = event.assoc.requestor
            metrics.FAILURES.labels(reason="association_rejected").inc()
            log.warning(
                "association rejected: calling AE %r from %s:%s: %s (A-ASSOCIATE-RJ 1/1/3)",
                requestor.primitive.calling_ae_title if requestor.primitive else "",
                requestor.address,
                requestor.port,
                refusal,
            )
            event.assoc.acse.send_reject(0x01, 0x01, 0x03)

    def connection_closed(self, event: Event) -> None:
        self.connections.closed(event.assoc)
        _stop_waiting_for_a_request(event.assoc)


def _stop_waiting_for_a_request(association: Association) -> None:
    """End at once the thread of a connection closed before its association request (in the
    DUL's state Sta2: a port probe, a scanner, a load balancer's health check, a connection the
    node evicted). pynetdicom's association thread waits for the request until the ACSE timeout
    even once the connection is gone: 3,000 connections opened and closed in 23 s left 3,000
    threads behind, and a sender's association was then refused. An empty item is what that
    wait returns when it times out: the thread ends as it does then."""
    dul = association.dul
    if dul.state_machine.current_state == "Sta2":  # an acceptor's state only
        dul.to_user_queue.put(None)


class ListenerContexts(list):
    """The listener's presentation contexts, which pynetdicom deep-copies into each new
    association: 0.38 ms of every association (seven contexts, each UID copied through the
    pickle protocol). Copied here as deepcopy would, with less work: each context anew, with its
    own list of transfer syntaxes; the UIDs, immutable strings, are shared."""

    def __deepcopy__(self, memo: dict) -> list[PresentationContext]:
        copies = []
        for context in self:
            copied = copy.copy(context)
            copied._transfer_syntax = list(context._transfer_syntax)
            copies.append(copied)
        return copies


#: How long a busier process waits before accepting, so that a less loaded sibling takes
#: the connection (the busier one then finds nothing left to accept).
_DEFER_SECONDS = 0.005


class SharedListener(ThreadedAssociationServer):
    """pynetdicom's listener, accepting from a listening socket opened once for all processes.

    With an ``ssl_context`` (the TLS port) an accepted socket is only wrapped: its handshake
    runs in the connection's own thread (see `tls.handshake_first`), never in this loop.
    """

    ae: NodeAE  # the one build_ae makes

    def __init__(self, *args, listening_socket: socket.socket, **kwargs) -> None:
        self._listening_socket = listening_socket
        super().__init__(*args, **kwargs)
        self.contexts = ListenerContexts(self.contexts)
        # AE.start_server() registers its servers so that shutdown() can unregister them;
        # make_server(), which is the only way to pass a server class, does not.
        self.ae._servers.append(self)

    def server_bind(self) -> None:
        assert self.socket is not None  # TCPServer.__init__ makes it just before binding
        self.socket.close()
        self.socket = self._listening_socket
        self.server_address = self.socket.getsockname()

    def server_activate(self) -> None:
        """Already listening: the node binds its ports when it starts."""

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        if self.ae.connections.busier_than_a_sibling():
            time.sleep(_DEFER_SECONDS)
        # Non-blocking: when a sibling took the connection, accept() raises BlockingIOError,
        # which socketserver treats as "no request this time".
        assert self.socket is not None  # the listening socket is given at construction
        client, address = self.socket.accept()
        if self.ssl_context is not None:
            client = self.ssl_context.wrap_socket(
                client, server_side=True, do_handshake_on_connect=False
            )
        self.ae.connections.accepted(client, address)
        return client, address

    def process_request(self, request, client_address) -> None:
        """Build the connection's association here, in the listener's thread: that only makes
        the association and starts its thread (a TLS handshake runs in that thread, see
        `tls.handshake_first`), so the thread socketserver would start for it first is spared,
        a millisecond or more of every association on a busy machine."""
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
            self.shutdown_request(request)

    def service_actions(self) -> None:
        """Nothing: pynetdicom's runs a full gc.collect() every 60 passes of the accept loop,
        which holds the GIL for tens of milliseconds in a process this size and stalls every
        association (a C-FIND answer among them); Python's own collector frees their threads."""

    def server_close(self) -> None:
        # Only close: shutdown() would stop the siblings listening on the same socket.
        assert self.socket is not None  # the listening socket, since server_bind
        self.socket.close()


def _log_rejection(event: Event) -> None:
    rejection = event.assoc.acceptor.primitive
    key = (rejection.result, rejection.result_source, rejection.diagnostic) if rejection else None
    reason = _REJECT_REASONS.get(key, f"result/source/reason {key}")
    requestor = event.assoc.requestor
    assert requestor.primitive is not None  # EVT_REJECTED answers a received A-ASSOCIATE-RQ
    metrics.FAILURES.labels(reason="association_rejected").inc()
    log.warning(
        "association rejected: calling AE %r from %s:%s, called AE %r: %s",
        requestor.ae_title,
        requestor.address,
        requestor.port,
        requestor.primitive.called_ae_title,
        reason,
    )
    record(messages.association(requesting_peer(event.assoc), accepted=False, reason=reason))


def _log_accepted(event: Event) -> None:
    requestor = event.assoc.requestor
    log.info(
        "association accepted: calling AE %r from %s:%s",
        requestor.ae_title,
        requestor.address,
        requestor.port,
    )
    # The A-ASSOCIATE-AC has left when pynetdicom reports it: the message is synced in the
    # background with the first request's (a C-FIND's query), not in its way.
    record_unhurried(messages.association(requesting_peer(event.assoc), accepted=True))


def build_ae(
    config: NodeConfig, loads: SharedCounts, associations: SharedCounts, slot: int
) -> NodeAE:
    """The SCP entity of receiving process `slot` (contexts, limits, AE title checks)."""
    dicom = config.dicom
    tuning.describe_messages(config.logging.level)
    # Waiting connections spread over the processes as evenly as all connections do.
    max_pending = -(-dicom.max_pending_connections // dicom.workers)
    connections = Connections(loads, associations, slot, max_pending)
    ae = NodeAE(
        config.ae_title,
        dicom.max_associations,
        connections,
        dicom.max_dataset_bytes,
    )
    ae.maximum_pdu_size = dicom.max_pdu_size
    ae.network_timeout = dicom.network_timeout
    ae.acse_timeout = dicom.acse_timeout
    ae.dimse_timeout = dicom.dimse_timeout
    ae.apply_access_rules(config)
    ae.add_supported_context(Verification)
    for sop_class in _QUERY_RETRIEVE:
        ae.add_supported_context(sop_class)
    return ae


def access_handlers(ae: NodeAE) -> list[tuple]:
    """Event bindings for logging and counting associations."""
    return [
        (evt.EVT_CONN_OPEN, ae.connection_opened),
        (evt.EVT_REQUESTED, ae.association_requested),
        (evt.EVT_CONN_CLOSE, ae.connection_closed),
        (evt.EVT_REJECTED, _log_rejection),
        (evt.EVT_ACCEPTED, _log_accepted),
    ]
