"""The participants of DIMSE audit events, as the association and the configuration name them."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.events import Event

from ..audit import messages, record_soon
from ..config import DicomAddress


def requestor(association: Association, role: messages.Code | None = None) -> messages.Participant:
    """The peer that asked for the association: its AE title and address."""
    peer = association.requestor
    return messages.Participant(peer.ae_title.strip(), True, role, peer.address)


def destination(address: DicomAddress) -> messages.Participant:
    """A configured peer the node sends to."""
    return messages.Participant(address.ae_title, False, messages.DESTINATION, address.host)


def record_query(event: Event) -> Callable[[], None]:
    """A C-FIND: its SOP class and its identifier as received; the answer waits until the
    message is on disk (see `audit.trail.record_soon`)."""
    request = cast(C_FIND, event.request)  # EVT_C_FIND's request is a C-FIND
    identifier = request.Identifier
    return record_soon(
        messages.query(
            requestor(event.assoc, messages.SOURCE),
            str(request.AffectedSOPClassUID),
            messages.SOP_CLASS_UID,
            identifier.getvalue() if identifier is not None else b"",
            str(event.context.transfer_syntax),
        )
    )
