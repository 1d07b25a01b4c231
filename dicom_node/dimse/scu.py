"""The node as a DICOM SCU: C-ECHO and C-STORE to configured peers, with actionable errors."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_file_meta_info
from pydicom.misc import is_dicom
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    # pynetdicom makes them at import time (into globals()): mypy cannot see them
    Verification,
)

from ..config import DicomAddress, NodeConfig
from ..statuses import STORED_WITH_WARNING, SUCCESS
from . import tuning
from .outbound_syntax import (
    MAX_CONTEXTS,
    accepted_syntaxes,
    as_accepted,
    needs_decompression,
    proposed_contexts,
)
from .tls import client_args

log = logging.getLogger(__name__)


class PeerUnavailable(Exception):
    """The peer did not accept an association (down, unreachable or rejecting us)."""


#: Starts the failure reason of an object the peer gave no verdict on (see `outbox`).
NO_ANSWER = "no answer (association aborted or timed out)"
#: Starts the failure reason of an object this node could not read or send (out of file
#: descriptors or memory, a file gone): not the peer's verdict either, so it is retried.
LOCAL_ERROR = "local error, not the peer's answer"


def _describe(peer_name: str, peer: DicomAddress) -> str:
    return f"peer {peer_name!r} ({peer.ae_title} at {peer.host}:{peer.port})"


def _associate(config: NodeConfig, peer_name: str, contexts: list) -> Association:
    peer = config.dicom_peer(peer_name)
    tls_args = client_args(config, config.peer(peer_name))
    tuning.describe_messages(config.logging.level)
    ae = AE(config.ae_title)
    ae.acse_timeout = config.dicom.acse_timeout
    ae.dimse_timeout = config.dicom.dimse_timeout
    ae.network_timeout = config.dicom.network_timeout
    ae.connection_timeout = 10
    ae.requested_contexts = contexts
    association = ae.associate(peer.host, peer.port, ae_title=peer.ae_title, tls_args=tls_args)
    if association.is_established:
        tuning.install_requestor(association)
        return association
    if association.is_rejected:
        raise PeerUnavailable(
            f"{_describe(peer_name, peer)} rejected the association "
            "(check that it knows our AE title and accepts these SOP classes)"
        )
    raise PeerUnavailable(
        f"cannot reach {_describe(peer_name, peer)}: connection refused, timed out or "
        "aborted (is it running and listening on that port?"
        + (" Does the TLS handshake succeed: its certificate, ca_file?)" if tls_args else ")")
    )


def echo(config: NodeConfig, peer_name: str) -> int:
    """C-ECHO the peer; return its status (0x0000 is success)."""
    association = _associate(config, peer_name, [build_context(Verification)])
    try:
        status = association.send_c_echo()
    finally:
        association.release()
    if not status or "Status" not in status:
        raise PeerUnavailable(f"peer {peer_name!r} did not answer the C-ECHO")
    return int(status.Status)


@dataclass
class SendReport:
    #: the files the peer acknowledged (success or a storage warning)
    stored: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    #: files that are not DICOM (no ``DICM`` prefix): a README or a DICOMDIR's neighbours in a
    #: folder, not a failure
    skipped: list[str] = field(default_factory=list)

    @property
    def sent(self) -> int:
        return len(self.stored)


def dicom_files(paths: Iterable[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file())
        else:
            yield path


def _file_key(path: Path) -> tuple[str, str]:
    """The file's SOP class and transfer syntax, from its file meta alone (group 2)."""
    meta = read_file_meta_info(path)
    return str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID)


def send(config: NodeConfig, peer_name: str, paths: Iterable[Path]) -> SendReport:
    """C-STORE every DICOM file under `paths` to the peer, each in its own transfer syntax."""
    report = SendReport()
    groups: dict[tuple[str, str], list[Path]] = {}
    for path in dicom_files(paths):
        try:
            if not is_dicom(path):
                report.skipped.append(str(path))
                continue
            groups.setdefault(_file_key(path), []).append(path)
        except (InvalidDicomError, AttributeError) as error:
            report.failed.append((str(path), f"DICOM file without a usable file meta: {error}"))
        except OSError as error:
            report.failed.append((str(path), f"{LOCAL_ERROR}: cannot read it: {error.strerror}"))
    keys = list(groups)
    # At most two contexts per key (its syntax, an uncompressed fallback) fit in one association.
    per_association = MAX_CONTEXTS // 2
    for start in range(0, len(keys), per_association):
        batch = keys[start : start + per_association]
        association = _associate(config, peer_name, proposed_contexts(batch))
        try:
            for sop_class, syntax in batch:
                accepted = accepted_syntaxes(association.accepted_contexts, sop_class)
                for path in groups[(sop_class, syntax)]:
                    _send_one(association, path, syntax, accepted, report)
        finally:
            if association.is_established:
                association.release()
    return report


def _send_one(
    association: Association, path: Path, syntax: str, accepted: set[str], report: SendReport
) -> None:
    if not association.is_established:  # an earlier object's store timed out or was aborted
        report.failed.append((str(path), f"{NO_ANSWER} before this object was sent"))
        return
    if syntax not in accepted and not needs_decompression(syntax, accepted):
        report.failed.append((str(path), f"the peer accepts neither {syntax} nor uncompressed"))
        return
    try:
        # As stored when the peer takes the file's syntax (sent from the file, not decoded).
        payload = as_accepted(dcmread(path), syntax, accepted) if syntax not in accepted else path
        status = association.send_c_store(payload)
    except (ValueError, AttributeError, NotImplementedError, RuntimeError) as error:
        report.failed.append((str(path), str(error)))  # e.g. no codec to decompress it
        return
    except OSError as error:  # e.g. no file descriptor left to open it
        report.failed.append((str(path), f"{LOCAL_ERROR}: cannot read it: {error.strerror}"))
        return
    if not status or "Status" not in status:
        report.failed.append((str(path), NO_ANSWER))
        return
    code = int(status.Status)
    if code == SUCCESS or code in STORED_WITH_WARNING:
        report.stored.append(str(path))
    else:
        comment = status.get("ErrorComment", "")
        report.failed.append((str(path), f"status 0x{code:04X} {comment}".strip()))
