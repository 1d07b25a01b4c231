"""Test certificate authorities and certificates (PEM files, keys owner-only), made with
`cryptography`: a trusted CA, another CA nobody trusts, and certificates signed by either."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

_NOW = datetime.datetime.now(datetime.UTC)
_DAY = datetime.timedelta(days=1)


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key, as files."""

    certificate: Path
    key: Path
    der: bytes

    @property
    def tls_args(self) -> list[str]:
        """DCMTK's options presenting this certificate."""
        return ["+tls", str(self.key), str(self.certificate)]


class Authority:
    """A CA that issues certificates into `folder`."""

    def __init__(self, folder: Path, name: str) -> None:
        self.folder = folder
        self._name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._certificate = (
            self._builder(self._name, self._key.public_key(), _NOW - _DAY, _NOW + 30 * _DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self.certificate = folder / f"{name}.crt"
        self.certificate.write_bytes(self._certificate.public_bytes(serialization.Encoding.PEM))

    def _builder(self, subject, public_key, start, end) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self._name)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
        )

    def issue(self, common_name: str, expired: bool = False) -> Issued:
        """A certificate for `common_name` (also valid for the loopback host)."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test Hospital"),
                x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            ]
        )
        start, end = (_NOW - 10 * _DAY, _NOW - _DAY) if expired else (_NOW - _DAY, _NOW + _DAY)
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        certificate = (
            self._builder(subject, key.public_key(), start, end)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        certificate_file = self.folder / f"{common_name}.crt"
        key_file = self.folder / f"{common_name}.key"
        certificate_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        key_file.touch(mode=0o600)
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return Issued(
            certificate_file, key_file, certificate.public_bytes(serialization.Encoding.DER)
        )
