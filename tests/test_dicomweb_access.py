"""Who may use DICOMweb (bearer tokens, basic users, OAuth2 JWTs), from which web origins
(CORS), and over TLS."""

from __future__ import annotations

import datetime
import io
import json
import time

import jwt
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from dicomweb_client.api import DICOMwebClient
from pydicom import dcmread

from .conftest import TRANSFER_SYNTAXES
from .test_dicomweb import STOW_TYPE, multipart, renamed_copy

READ_TOKEN = "read-token-0123456789abcdef"
WRITE_TOKEN = "write-token-0123456789abcdef"
ISSUER = "https://auth.hospital.example"


@pytest.fixture(scope="module")
def signing_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def access_token(key, scope: str, expires_in: int = 300, issuer: str = ISSUER) -> str:
    claims = {
        "iss": issuer,
        "sub": "viewer",
        "aud": "dicom-node",
        "scope": scope,
        "exp": int(time.time()) + expires_in,
    }
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})


@pytest.fixture
def secured(make_node, tmp_path, signing_key):
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(signing_key.public_key()))
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}))
    node = make_node(
        http={
            "dicomweb": {
                "cors_origins": ["https://viewer.hospital.example"],
                "auth": {
                    "bearer_tokens": [
                        {"token": READ_TOKEN},
                        {"token": WRITE_TOKEN, "write": True},
                    ],
                    "basic_users": [{"username": "radiology", "password": "s3cret-pass"}],
                    "jwt": {"issuer": ISSUER, "jwks_file": str(jwks), "audience": "dicom-node"},
                },
            }
        }
    )
    node.start()
    node.url = f"http://127.0.0.1:{node.http_port}/dicomweb"
    return node


def stow(url: str, headers: dict) -> requests.Response:
    body = multipart([("application/dicom", renamed_copy(TRANSFER_SYNTAXES / "CT_small.dcm"))])
    return requests.post(
        f"{url}/studies", data=body, headers={"Content-Type": STOW_TYPE, **headers}, timeout=30
    )


def test_credentials(secured, signing_key):
    url = secured.url
    missing = requests.get(f"{url}/studies", timeout=30)
    assert missing.status_code == 401
    assert "Bearer" in missing.headers["www-authenticate"]
    assert "Basic" in missing.headers["www-authenticate"]
    wrong = requests.get(f"{url}/studies", headers={"Authorization": "Bearer nope"}, timeout=30)
    assert wrong.status_code == 401
    # The health check stays open for monitoring.
    assert requests.get(f"http://127.0.0.1:{secured.http_port}/healthz", timeout=30).ok

    read = {"Authorization": f"Bearer {READ_TOKEN}"}
    assert requests.get(f"{url}/studies", headers=read, timeout=30).status_code == 200
    assert stow(url, read).status_code == 403
    assert stow(url, {"Authorization": f"Bearer {WRITE_TOKEN}"}).status_code == 200

    basic = requests.get(f"{url}/studies", auth=("radiology", "s3cret-pass"), timeout=30)
    assert basic.status_code == 200 and len(basic.json()) == 1
    assert requests.get(f"{url}/studies", auth=("radiology", "x"), timeout=30).status_code == 401

    def bearer(token: str) -> dict:
        return {"Authorization": f"Bearer {token}"}

    viewer = access_token(signing_key, "openid dicomweb.read")
    client = DICOMwebClient(url, headers=bearer(viewer))
    assert len(client.search_for_studies()) == 1
    assert stow(url, bearer(viewer)).status_code == 403
    assert stow(url, bearer(access_token(signing_key, "dicomweb.write"))).status_code == 200
    for refused, status in (
        (access_token(signing_key, "dicomweb.read", expires_in=-60), 401),
        (access_token(signing_key, "dicomweb.read", issuer="https://other.example"), 401),
        (
            access_token(
                rsa.generate_private_key(public_exponent=65537, key_size=2048), "dicomweb.read"
            ),
            401,
        ),
        (access_token(signing_key, "profile"), 403),
    ):
        answer = requests.get(f"{url}/studies", headers=bearer(refused), timeout=30)
        assert answer.status_code == status, answer.text
    assert "may not store" in secured.log()


def test_crafted_jwts_are_401_never_500(secured, signing_key):
    claims = {"iss": ISSUER, "aud": "dicom-node", "scope": "dicomweb.read", "exp": 2**40}
    elliptic = ec.generate_private_key(ec.SECP256R1())
    for token in (
        # ES256 (an allowed algorithm) named on the RSA key k1: PyJWT raises a TypeError
        jwt.encode(claims, elliptic, algorithm="ES256", headers={"kid": "k1"}),
        jwt.encode(claims, "s" * 32, algorithm="HS256", headers={"kid": "k1"}),
        "a.b.c",
        "e30.e30.",
        "\u00ff\u00fe.\u00e9",
    ):
        answer = requests.get(
            f"{secured.url}/studies", headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        assert answer.status_code == 401, (token, answer.text)
        assert answer.json()["detail"].startswith("the access token is not valid")
        assert 'error="invalid_token"' in answer.headers["www-authenticate"]
    valid = {"Authorization": f"Bearer {access_token(signing_key, 'dicomweb.read')}"}
    assert requests.get(f"{secured.url}/studies", headers=valid, timeout=30).status_code == 200


def test_cors(secured):
    origin = "https://viewer.hospital.example"
    preflight = requests.options(
        f"{secured.url}/studies",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
        timeout=30,
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == origin
    answer = requests.get(
        f"{secured.url}/studies",
        headers={"Origin": origin, "Authorization": f"Bearer {READ_TOKEN}"},
        timeout=30,
    )
    assert answer.headers["access-control-allow-origin"] == origin
    other = requests.get(
        f"{secured.url}/studies",
        headers={"Origin": "https://elsewhere.example", "Authorization": f"Bearer {READ_TOKEN}"},
        timeout=30,
    )
    assert "access-control-allow-origin" not in other.headers


def self_signed(folder):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "node.crt", folder / "node.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def test_tls(make_node, tmp_path):
    cert_file, key_file = self_signed(tmp_path)
    node = make_node(http={"tls_certificate_file": str(cert_file), "tls_key_file": str(key_file)})
    node.start()
    session = requests.Session()
    session.verify = str(cert_file)
    session.trust_env = False  # else REQUESTS_CA_BUNDLE overrides verify
    client = DICOMwebClient(f"https://localhost:{node.http_port}/dicomweb", session=session)
    data = renamed_copy(TRANSFER_SYNTAXES / "CT_small.dcm")
    sent = dcmread(io.BytesIO(data))
    client.store_instances([sent])
    (study,) = client.search_for_studies()
    assert study["00081190"]["Value"][0].startswith("https://localhost:")
    (got,) = client.retrieve_study(sent.StudyInstanceUID)  # streamed through TLS
    assert got.SOPInstanceUID == sent.SOPInstanceUID and got.PixelData == sent.PixelData
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"https://localhost:{node.http_port}/dicomweb/studies", timeout=30)


def test_unreadable_jwks_stops_the_node_at_start(make_node, tmp_path):
    node = make_node(
        http={"dicomweb": {"auth": {"jwt": {"issuer": ISSUER, "jwks_file": str(tmp_path / "x")}}}}
    )
    with pytest.raises(RuntimeError, match="exited"):
        node.start()
    assert "http.dicomweb.auth.jwt.jwks_file: cannot read" in node.log()
