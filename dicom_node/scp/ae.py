"""The node's Application Entity as an SCP: presentation contexts, access control, the listener.

Several receiving processes can listen on the same port (SO_REUSEPORT: the kernel spreads
connections over them), which is how the node gets past one interpreter's GIL. The association
limit stays global: it counts the node's open connections in memory shared by the processes.
"""

from __future__ import annotations

import logging
import socket
from multiprocessing.sharedctypes import Synchronized

from pynetdicom import AE, _config, evt
from pynetdicom.events import Event
from pynetdicom.sop_class import (
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
from ..config import NodeConfig

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

_REJECT_REASONS = {
    (1, 1, 3): "calling AE title not recognised",
    (1, 1, 7): "called AE title not recognised",
    (2, 3, 2): "local limit of concurrent associations exceeded",
    (2, 2, 1): "user identity not accepted",
}


class NodeAE(AE):
    """An AE whose association limit is shared with the node's other receiving processes."""

    def __init__(self, ae_title: str, limit: int, open_total: Synchronized | None) -> None:
        super().__init__(ae_title)
        self._limit = limit
        self._open_total = open_total
        self._open_here = 0

    @property
    def maximum_associations(self) -> int:
        """What pynetdicom compares with its count of acceptor threads in this process.

        That count also holds threads of connections already closed (a port probe's thread
        lingers), so the limit is applied to open connections instead: node-wide ones, as
        counted on EVT_CONN_OPEN/CLOSE, the new one included.
        """
        open_now = self._open_total.value if self._open_total is not None else self._open_here
        threads_here = sum(1 for assoc in self.active_associations if assoc.is_acceptor)
        return max(self._limit - open_now + threads_here, 0)

    @maximum_associations.setter
    def maximum_associations(self, value: int) -> None:
        self._limit = value

    def connection_opened(self, _event: Event) -> None:
        self._open_here += 1
        if self._open_total is not None:
            with self._open_total.get_lock():
                self._open_total.value += 1
        metrics.OPEN_ASSOCIATIONS.inc()

    def connection_closed(self, _event: Event) -> None:
        self._open_here -= 1
        if self._open_total is not None:
            with self._open_total.get_lock():
                self._open_total.value -= 1
        metrics.OPEN_ASSOCIATIONS.dec()


class SharedPortServer(ThreadedAssociationServer):
    """The pynetdicom listener, with SO_REUSEPORT so sibling processes share the port."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # AE.start_server() registers its servers so that shutdown() can unregister them;
        # make_server(), which is the only way to pass a server class, does not.
        self.ae._servers.append(self)

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


def _log_rejection(event: Event) -> None:
    rejection = event.assoc.acceptor.primitive
    key = (rejection.result, rejection.result_source, rejection.diagnostic) if rejection else None
    reason = _REJECT_REASONS.get(key, f"result/source/reason {key}")
    requestor = event.assoc.requestor
    metrics.FAILURES.labels(reason="association_rejected").inc()
    log.warning(
        "association rejected: calling AE %r from %s:%s, called AE %r: %s",
        requestor.ae_title,
        requestor.address,
        requestor.port,
        requestor.primitive.called_ae_title,
        reason,
    )


def _log_accepted(event: Event) -> None:
    requestor = event.assoc.requestor
    log.info(
        "association accepted: calling AE %r from %s:%s",
        requestor.ae_title,
        requestor.address,
        requestor.port,
    )


def build_ae(config: NodeConfig, open_total: Synchronized | None = None) -> NodeAE:
    """The SCP entity described by `config` (contexts, limits, AE title checks)."""
    dicom = config.dicom
    ae = NodeAE(config.ae_title, dicom.max_associations, open_total)
    ae.maximum_pdu_size = dicom.max_pdu_size
    ae.network_timeout = dicom.network_timeout
    ae.acse_timeout = dicom.acse_timeout
    ae.dimse_timeout = dicom.dimse_timeout
    ae.require_called_aet = dicom.require_called_ae
    if dicom.require_known_calling_ae:
        ae.require_calling_aet = [peer.ae_title for peer in config.peers.values()]
    ae.add_supported_context(Verification)
    for sop_class in _QUERY_RETRIEVE:
        ae.add_supported_context(sop_class)
    return ae


def access_handlers(ae: NodeAE) -> list[tuple]:
    """Event bindings for logging and counting associations."""
    return [
        (evt.EVT_CONN_OPEN, ae.connection_opened),
        (evt.EVT_CONN_CLOSE, ae.connection_closed),
        (evt.EVT_REJECTED, _log_rejection),
        (evt.EVT_ACCEPTED, _log_accepted),
    ]
