"""The kinds of destination the outbox delivers to, one module each, and the registry that
picks a destination's kind from the configuration: a DICOM peer (C-STORE), a DICOMweb server
(STOW-RS) and the FHIR server (DiagnosticReport transactions). A new kind is one module with a
class that has `deliver` and `close`, and one line in `KINDS`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from fhir_bridge.client import FhirClient

from ...config import FHIR_DESTINATION, NodeConfig
from ..queue import Outbox, OutboxRow
from .dicom_peer import DicomPeer
from .fhir_server import FhirServer
from .stow_rs import StowRsPeer


class Destination(Protocol):
    def deliver(self, outbox: Outbox, rows: list[OutboxRow], now: float) -> int:
        """Try to deliver ``rows`` (all due, all for this destination), record each outcome in
        ``outbox``; returns how many were delivered."""
        ...

    def close(self) -> None:
        """Release what the destination keeps open between rounds; it is not used after."""
        ...


#: kind -> how to open a destination of that kind from the configuration and its name
KINDS: dict[str, Callable[[NodeConfig, str], Destination]] = {
    "dicom": DicomPeer,
    "dicomweb": StowRsPeer,
}


def kind_of(config: NodeConfig, name: str) -> str:
    """``fhir`` for the FHIR server, ``dicomweb`` for a peer with a DICOMweb URL, else
    ``dicom`` (also for a name no longer configured: the DICOM sender says so and waits)."""
    if name == FHIR_DESTINATION:
        return "fhir"
    peer = config.peers.get(name)
    return "dicomweb" if peer is not None and peer.dicomweb_url is not None else "dicom"


def open_destination(config: NodeConfig, name: str, fhir: FhirClient | None) -> Destination:
    """The destination called ``name``; the FHIR server's client is opened once, at start."""
    if kind_of(config, name) == "fhir":
        return FhirServer(config, fhir)
    return KINDS[kind_of(config, name)](config, name)
