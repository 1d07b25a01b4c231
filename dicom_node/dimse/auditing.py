"""The participants of DIMSE audit events, as the association and the configuration name them."""

from __future__ import annotations

from pynetdicom.association import Association
from pynetdicom.events import Event

from ..audit import messages, record
from ..config import DicomAddress


def requestor(association: Association, role: messages.Code | None = None) -> messages.Participant:
    """The peer that asked for the association: its AE title and address."""
    peer = association.requestor
    return messages.Participant(peer.ae_title.strip(), True, role, peer.address)


def destination(address: DicomAddress) -> messages.Participant:
    """A configured peer the node sends to."""
    return messages.Participant(address.ae_title, False, messages.DESTINATION, address.host)


def record_query(event: Event) -> None:
    """A C-FIND: its SOP class and its identifier as received."""
    record(
        messages.query(
            requestor(event.assoc, messages.SOURCE),
            str(event.request.AffectedSOPClassUID),
            messages.SOP_CLASS_UID,
            event.request.Identifier.getvalue(),
            str(event.context.transfer_syntax),
        )
    )
