"""DICOM over TLS (PS3.15 Annex B): the contexts of the listener and of the SCU, the handshake
of an accepted connection, and callers pinned to a certificate.

pynetdicom's server does the handshake in its accept loop, where a client that connects and
says nothing would stop every other client from being accepted. The listener here only wraps
the socket; the handshake runs in the connection's own thread, before its association, within
the ACSE timeout. Each refusal is a log line naming the address and the reason.
"""

from __future__ import annotations

import hashlib
import logging
import ssl

from cryptography import x509
from pynetdicom.association import Association

from .. import metrics
from ..config import ConfigError, DicomTlsConfig, NodeConfig, PeerConfig

log = logging.getLogger(__name__)

_OLD_VERSION = "TLS version not accepted (TLS 1.2 or later required)"
#: OpenSSL's reasons for a failed handshake, in words an integration engineer can act on
_REASONS = {
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "no client certificate",
    "UNSUPPORTED_PROTOCOL": _OLD_VERSION,
    "TLSV1_ALERT_PROTOCOL_VERSION": _OLD_VERSION,
    "WRONG_VERSION_NUMBER": "not TLS (plain DICOM on the TLS port?)",
    "HTTP_REQUEST": "not TLS (an HTTP request)",
    "NO_SHARED_CIPHER": "no cipher in common (dicom.tls.ciphers)",
    "UNEXPECTED_EOF_WHILE_READING": "connection closed during the TLS handshake",
    "TLSV1_ALERT_UNKNOWN_CA": "the client does not trust the node's certificate",
    "SSLV3_ALERT_BAD_CERTIFICATE": "the client does not accept the node's certificate",
}


def _secure(context: ssl.SSLContext, ciphers: str | None) -> ssl.SSLContext:
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if ciphers:
        context.set_ciphers(ciphers)
    return context


def server_context(tls: DicomTlsConfig) -> ssl.SSLContext:
    """The TLS listener's context; a file that cannot be loaded names its key."""
    context = _secure(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), tls.ciphers)
    assert tls.certificate_file is not None  # DicomTlsConfig requires it with a TLS port
    try:
        context.load_cert_chain(tls.certificate_file, tls.key_file)
    except (OSError, ssl.SSLError) as error:
        raise ConfigError(
            f"dicom.tls.certificate_file/key_file: cannot load {tls.certificate_file} with "
            f"{tls.key_file}: {error}"
        ) from None
    if tls.ca_file is not None:
        try:
            context.load_verify_locations(tls.ca_file)
        except (OSError, ssl.SSLError) as error:
            raise ConfigError(f"dicom.tls.ca_file: cannot load {tls.ca_file}: {error}") from None
        context.verify_mode = ssl.CERT_OPTIONAL
    if tls.require_client_certificate:
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_args(config: NodeConfig, peer: PeerConfig) -> tuple[ssl.SSLContext, str] | None:
    """pynetdicom's ``tls_args`` for a connection to `peer`: its certificate checked against
    its ``ca_file`` (and its host name), the node's own certificate presented; None: plain."""
    if not peer.tls:
        return None
    assert peer.host is not None  # a TLS peer is a DICOM peer (see PeerConfig)
    tls = config.dicom.tls
    try:
        context = ssl.create_default_context(cafile=peer.ca_file)
        if tls.certificate_file is not None:
            context.load_cert_chain(tls.certificate_file, tls.key_file)
    except (OSError, ssl.SSLError) as error:
        raise ConfigError(f"TLS to {peer.ae_title} at {peer.host}: {error}") from None
    return _secure(context, tls.ciphers), peer.host


def _describe(error: OSError) -> str:
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"client certificate not accepted: {error.verify_message}"
    if isinstance(error, TimeoutError):
        return "no TLS handshake within the ACSE timeout"
    if isinstance(error, ssl.SSLError):
        return _REASONS.get(error.reason or "", error.reason or str(error))
    return f"connection lost during the TLS handshake ({error})"


def handshake_first(association: Association, timeout: float) -> None:
    """Make a new acceptor association do its TLS handshake (if any) in its own thread before
    it runs (on EVT_CONN_OPEN); a refused handshake ends the connection, logged."""
    transport = association.dul.socket
    sock = transport.socket if transport is not None else None
    if not isinstance(sock, ssl.SSLSocket):
        return
    run = association.run
    host, port = association.requestor.address, association.requestor.port

    def handshake_then_run() -> None:
        sock.settimeout(timeout)
        try:
            sock.do_handshake()
        except OSError as error:
            # A port probe (connect, close) is no attack: it is logged below warnings.
            probe = isinstance(error, ssl.SSLEOFError)
            level = logging.INFO if probe else logging.WARNING
            log.log(level, "TLS connection from %s:%s refused: %s", host, port, _describe(error))
            metrics.FAILURES.labels(reason="tls_refused").inc()
            sock.close()
            return
        log.info(
            "TLS connection from %s:%s: %s, %s, client certificate %s",
            host,
            port,
            sock.version(),
            (sock.cipher() or ("?",))[0],
            _subject(sock.getpeercert(binary_form=True)) or "none",
        )
        run()

    # The association's thread runs `run`: the handshake goes first, in that thread.
    association.run = handshake_then_run  # type: ignore[method-assign]


def _subject(der: bytes | None) -> str | None:
    return x509.load_der_x509_certificate(der).subject.rfc4514_string() if der else None


class PinnedPeers:
    """Peers accepted as callers only over TLS with their certificate (a SHA-256 fingerprint
    or a subject), looked up by their AE title."""

    def __init__(self, peers: dict[str, PeerConfig]) -> None:
        self._by_ae_title = {
            peer.ae_title: (name, peer)
            for name, peer in peers.items()
            if peer.pinned and peer.ae_title is not None
        }

    def refusal(self, association: Association) -> str | None:
        """Why the calling AE title may not associate over this connection; None: it may."""
        # At EVT_REQUESTED only the request primitive names the caller (pynetdicom sets
        # requestor.ae_title later, in the negotiation).
        primitive = association.requestor.primitive
        calling = primitive.calling_ae_title if primitive is not None else ""
        pinned = self._by_ae_title.get(calling.strip())
        if pinned is None:
            return None
        name, peer = pinned
        transport = association.dul.socket
        sock = transport.socket if transport is not None else None
        if not isinstance(sock, ssl.SSLSocket):
            return f"peers.{name} is accepted over TLS only"
        der = sock.getpeercert(binary_form=True)
        if der is None:
            return f"peers.{name} is accepted with its client certificate only"
        fingerprint = peer.certificate_fingerprint
        if fingerprint is not None and hashlib.sha256(der).hexdigest() != fingerprint:
            return f"the client certificate is not peers.{name}.certificate_fingerprint"
        subject = peer.certificate_subject
        if subject is not None and _subject(der) != subject:
            return f"the client certificate's subject {_subject(der)!r} is not {subject!r}"
        return None
