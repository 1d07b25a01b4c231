"""The node's configuration: one YAML file, validated at start.

Every key is declared here with its default, so a typo or a bad value is reported with the
dotted name of the key at fault (``dicom.port: Input should be a valid integer``) instead of
surfacing later as a confusing runtime error.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from fhir_bridge.settings import FhirAuthSettings, FhirSettings

from ..audit.settings import AuditSettings
from ..deid.settings import DeidentificationOptions
from .console import ConsoleSettings
from .dicomweb import DicomwebSettings
from .jobs import JobEngine, JobsConfig
from .secrets import resolve_secrets

DEFAULT_CONFIG_PATH = Path("config/node.yaml")
#: The model bundles that ship with the node.
BUILTIN_BUNDLES = Path(__file__).resolve().parents[2] / "config" / "bundles"

#: the outbox destination of FHIR reports: no DICOM peer may be called so
FHIR_DESTINATION = "fhir"

_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # PS3.5 AE: no backslash, no control


class ConfigError(Exception):
    """The configuration file is missing, unreadable or has a bad key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_ae_title(value: str) -> str:
    stripped = value.strip()
    if not _AE_TITLE.match(stripped):
        raise ValueError(
            f"{value!r} is not a valid AE title (1-16 printable characters, no backslash)"
        )
    return stripped


@dataclass(frozen=True)
class DicomAddress:
    """Where a DICOM peer listens, and the AE title it answers to."""

    ae_title: str
    host: str
    port: int


def _sha256_fingerprint(value: str | None) -> str | None:
    """``AB:CD:...`` (as ``openssl x509 -fingerprint -sha256`` prints it) or plain hex."""
    if value is None:
        return None
    digits = value.replace(":", "").strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", digits):
        raise ValueError(f"{value!r} is not a SHA-256 fingerprint (64 hexadecimal digits)")
    return digits


class PeerConfig(_Section):
    """A known node: a DICOM peer (``ae_title``, ``host``, ``port``: a destination for C-MOVE,
    sends and results, and a trusted caller), a DICOMweb destination (``dicomweb_url``, where
    results are stored with STOW-RS, with ``auth`` as for the FHIR server), or both (results
    then go over DICOMweb)."""

    ae_title: str | None = None
    host: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    #: the node connects to this peer over TLS (its port is then the peer's TLS port)
    tls: bool = False
    #: the CAs trusted for the peer's certificate (PEM); default: the system's
    ca_file: Path | None = None
    #: as a caller, the peer's AE title is accepted only over TLS with this certificate
    certificate_fingerprint: str | None = None
    #: ... or with a certificate of this subject (RFC 4514, e.g. ``CN=pacs,O=Hospital``)
    certificate_subject: str | None = None
    dicomweb_url: AnyHttpUrl | None = None
    auth: FhirAuthSettings = FhirAuthSettings()
    timeout_seconds: float = Field(default=60.0, gt=0)

    @field_validator("ae_title")
    @classmethod
    def _ae(cls, value: str | None) -> str | None:
        return None if value is None else _check_ae_title(value)

    _fingerprint = field_validator("certificate_fingerprint")(_sha256_fingerprint)

    @model_validator(mode="after")
    def _reachable(self) -> PeerConfig:
        given = [key for key in ("ae_title", "host", "port") if getattr(self, key) is not None]
        if given and len(given) < 3:
            raise ValueError("ae_title, host and port go together")
        if not given and self.dicomweb_url is None:
            raise ValueError(
                "a peer needs ae_title, host and port (DICOM) or dicomweb_url (DICOMweb STOW-RS)"
            )
        if self.ca_file is not None and not self.tls:
            raise ValueError("ca_file is for a TLS peer (tls: true)")
        dicom_only = ("tls", "certificate_fingerprint", "certificate_subject")
        if not given and any(getattr(self, key) for key in dicom_only):
            raise ValueError(f"{', '.join(dicom_only)} are for a DICOM peer (ae_title, host, port)")
        return self

    @property
    def pinned(self) -> bool:
        """Accepted as a caller only over TLS with a given certificate."""
        return self.certificate_fingerprint is not None or self.certificate_subject is not None

    @property
    def address(self) -> DicomAddress | None:
        """The DICOM address; None for a DICOMweb-only peer."""
        if self.ae_title is None or self.host is None or self.port is None:
            return None
        return DicomAddress(self.ae_title, self.host, self.port)


class DicomTlsConfig(_Section):
    """DICOM over TLS (PS3.15 Annex B): a second listener beside the plain one, TLS 1.2 or
    later, and the node's certificate, also presented as a client to TLS peers."""

    #: the TLS listener's port (e.g. 2762); absent: no TLS listener
    port: int | None = Field(default=None, ge=1, le=65535)
    #: the node's certificate chain and private key (PEM)
    certificate_file: Path | None = None
    key_file: Path | None = None
    #: the CAs whose client certificates are trusted (PEM)
    ca_file: Path | None = None
    require_client_certificate: bool = True
    #: OpenSSL cipher list for TLS 1.2 (TLS 1.3 suites are OpenSSL's own); default: OpenSSL's
    ciphers: str | None = None

    @field_validator("ciphers")
    @classmethod
    def _known_ciphers(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).set_ciphers(value)
            except ssl.SSLError:
                raise ValueError(f"{value!r} selects no cipher OpenSSL knows") from None
        return value

    @model_validator(mode="after")
    def _complete(self) -> DicomTlsConfig:
        if (self.certificate_file is None) != (self.key_file is None):
            raise ValueError("certificate_file and key_file go together")
        if self.port is not None and self.certificate_file is None:
            raise ValueError("a TLS port needs certificate_file and key_file")
        if self.port is not None and self.require_client_certificate and self.ca_file is None:
            raise ValueError(
                "require_client_certificate needs ca_file (the CAs of the callers' certificates)"
            )
        return self


class DicomConfig(_Section):
    host: str = "0.0.0.0"
    #: the plain (unencrypted) listener's port; null: DICOM over TLS only
    port: int | None = Field(default=11112, ge=1, le=65535)
    tls: DicomTlsConfig = DicomTlsConfig()
    #: Receiving processes sharing the port (SO_REUSEPORT); each is one Python interpreter.
    workers: int = Field(default=2, ge=1, le=64)
    #: Concurrent associations accepted by the whole node (shared by the workers).
    max_associations: int = Field(default=32, ge=1)
    #: Connections (node-wide) that have not yet sent their association request; past it
    #: the longest waiting one is closed, so idle connections cannot starve senders.
    max_pending_connections: int = Field(default=64, ge=1)
    #: Largest PDU we accept; 0 = unlimited, which lets senders use few, large PDUs (then a
    #: PDU may be as large as a dataset). A longer one is refused with an A-ABORT unread.
    max_pdu_size: int = Field(default=0, ge=0)
    #: Largest dataset received in one message: beyond it a C-STORE fails with 0xA700 (Out of
    #: Resources). 4 GiB by default.
    max_dataset_bytes: int = Field(default=1 << 32, ge=1)
    #: Largest a deflated dataset (Deflated Explicit VR Little Endian, C-STORE or STOW-RS) may
    #: inflate to, also bounded by max_dataset_bytes: a few kB of zlib inflate to gigabytes, in
    #: the receiver and again in the job worker. 256 MiB by default (large images use pixel
    #: compression, not deflate).
    max_inflated_bytes: int = Field(default=1 << 28, ge=1)

    @property
    def inflated_limit(self) -> int:
        return min(self.max_dataset_bytes, self.max_inflated_bytes)

    #: Only accept associations whose calling AE title is one of `peers`.
    require_known_calling_ae: bool = False
    #: Reject associations whose called AE title is not our own.
    require_called_ae: bool = True
    network_timeout: float = Field(default=60.0, gt=0)
    acse_timeout: float = Field(default=30.0, gt=0)
    dimse_timeout: float = Field(default=60.0, gt=0)

    @model_validator(mode="after")
    def _listening(self) -> DicomConfig:
        if self.port is None and self.tls.port is None:
            raise ValueError("port and tls.port are both null: nothing would listen")
        if self.port is not None and self.port == self.tls.port:
            raise ValueError("port and tls.port are the same")
        return self


class HttpConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    #: HTTPS: the server's certificate chain and private key (PEM), handed to uvicorn
    tls_certificate_file: Path | None = None
    tls_key_file: Path | None = None
    #: a request head must be complete this long after its first byte (or after the connection)
    request_head_timeout_seconds: float = Field(default=10.0, gt=0)
    #: a request whose head or body stops arriving for this long is dropped
    request_idle_timeout_seconds: float = Field(default=30.0, gt=0)
    #: open connections (and requests in progress) beyond which requests are answered 503
    max_connections: int = Field(default=1000, ge=1)
    dicomweb: DicomwebSettings = DicomwebSettings()
    console: ConsoleSettings = ConsoleSettings()

    def model_post_init(self, __context: object) -> None:
        if (self.tls_certificate_file is None) != (self.tls_key_file is None):
            raise ValueError("http: tls_certificate_file and tls_key_file go together")


class DuplicatePolicy(StrEnum):
    """What to do with a SOP Instance UID that is already stored."""

    KEEP_FIRST = "keep_first"  # answer success, keep the stored copy
    REPLACE = "replace"  # store the new copy in place of the old one
    REJECT = "reject"  # answer a failure status


class StorageConfig(_Section):
    path: Path = Path("storage")
    #: SQLAlchemy URL of the index; default: SQLite file under `path`.
    database: str | None = None
    duplicates: DuplicatePolicy = DuplicatePolicy.KEEP_FIRST

    @property
    def database_url(self) -> str:
        if self.database:
            return self.database
        return f"sqlite:///{(self.path / 'index.sqlite').resolve()}"


class ResultsConfig(_Section):
    destinations: list[str] = []


class RouteConfig(_Section):
    """Which models run on a series: every condition given must hold; a list matches any of
    its values (case-insensitive; "" matches an absent or empty attribute). What the models
    (and research destinations) get is a de-identified copy, made with the route's options."""

    name: str
    models: list[str] = []
    #: peers that receive de-identified copies of the matching series (research, teaching)
    research_destinations: list[str] = []
    deidentification: DeidentificationOptions = DeidentificationOptions()
    #: send images that may show the patient's identity in their pixels (BurnedInAnnotation YES,
    #: secondary capture, ultrasound) to the models and research destinations all the same
    allow_burned_in_text: bool = False
    modality: list[str] | None = None
    body_part: list[str] | None = None
    sop_class: list[str] | None = None
    #: values that must all be present in ImageType (e.g. [ORIGINAL, PRIMARY])
    image_type: list[str] | None = None
    #: regular expression searched in SeriesDescription (and in StudyDescription)
    description: str | None = None
    min_instances: int = Field(default=1, ge=1)
    max_instances: int | None = Field(default=None, ge=1)
    #: the Celery queue of jobs this route matches (celery engine), e.g. ``gpu`` for workers
    #: started with ``--queues gpu``; default: the jobs queue
    queue: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,64}$")

    def model_post_init(self, __context: object) -> None:
        if not self.models and not self.research_destinations:
            raise ValueError(f"route {self.name!r} names neither models nor research_destinations")

    @field_validator("description")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as error:
                raise ValueError(f"not a regular expression: {error}") from None
        return value


_CHEST = ["CHEST", "THORAX", "LUNG", "CHEST_TO_ABDOMEN", "THORAXABDOMEN"]
_CHEST_WORDS = r"(?i)chest|thora|lung|thx|cxr|pulm"


class InferenceConfig(_Section):
    #: where the models run: ``auto`` (the first GPU when PyTorch sees one, else the CPU),
    #: ``cpu``, ``cuda`` or ``cuda:N``
    device: str = Field(default="auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    #: folders holding MONAI bundles (one sub-folder per model); the first one wins a name clash
    bundles: list[Path] = [BUILTIN_BUNDLES]
    #: the model that PNG/JPEG files go to in `dicom-node infer` (they carry no DICOM attributes)
    image_model: str = "cxr_pneumonia"
    routes: list[RouteConfig] = [
        RouteConfig(
            name="chest-ct",
            models=["ct_tissue"],
            modality=["CT"],
            body_part=_CHEST,
            min_instances=20,
        ),
        RouteConfig(
            name="chest-ct-described",
            models=["ct_tissue"],
            modality=["CT"],
            description=_CHEST_WORDS,
            min_instances=20,
        ),
        RouteConfig(
            name="chest-radiograph",
            models=["cxr_pneumonia"],
            modality=["CR", "DX"],
            body_part=[*_CHEST, ""],
        ),
        RouteConfig(
            name="chest-secondary-capture",
            models=["cxr_pneumonia"],
            sop_class=["1.2.840.10008.5.1.4.1.1.7"],
            description=_CHEST_WORDS,
        ),
        RouteConfig(
            name="breast-ultrasound", models=["breast_us"], modality=["US"], body_part=["BREAST"]
        ),
    ]


class StudyConfig(_Section):
    #: Quiet time after the last instance before a study is complete and a job is written.
    stable_seconds: float = Field(default=60.0, gt=0)
    #: How often the stability monitor looks for quiet studies.
    check_interval_seconds: float = Field(default=1.0, gt=0)


class OutboxConfig(_Section):
    """Sending to peers: a peer that is down is retried forever, the delay doubling from
    `first_retry_seconds` up to `max_retry_seconds`; one that refuses an object (a failure
    status) is retried `max_refusals` times before the object is marked failed."""

    first_retry_seconds: float = Field(default=5.0, gt=0)
    max_retry_seconds: float = Field(default=600.0, gt=0)
    max_refusals: int = Field(default=5, ge=1)


class LoggingConfig(_Section):
    level: str = "INFO"

    @field_validator("level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError(f"{value!r} is not a logging level")
        return level


class DeidentificationConfig(_Section):
    #: the pseudonym key (32 random bytes, created on first use with owner-only permissions);
    #: default ``deid.key`` under ``storage.path``. Losing it breaks the link between the
    #: pseudonyms already given out and new ones.
    key_file: Path | None = None


class NodeConfig(_Section):
    ae_title: str = "AI_NODE"
    dicom: DicomConfig = DicomConfig()
    http: HttpConfig = HttpConfig()
    storage: StorageConfig = StorageConfig()
    peers: dict[str, PeerConfig] = {}
    results: ResultsConfig = ResultsConfig()
    fhir: FhirSettings = FhirSettings()
    study: StudyConfig = StudyConfig()
    jobs: JobsConfig = JobsConfig()
    outbox: OutboxConfig = OutboxConfig()
    inference: InferenceConfig = InferenceConfig()
    deidentification: DeidentificationConfig = DeidentificationConfig()
    audit: AuditSettings = AuditSettings()
    logging: LoggingConfig = LoggingConfig()

    _ae = field_validator("ae_title")(_check_ae_title)

    def model_post_init(self, __context: object) -> None:
        if self.dicom.require_known_calling_ae and not self.peers:
            raise ValueError("dicom.require_known_calling_ae is true but no peers are configured")
        if FHIR_DESTINATION in self.peers:
            raise ValueError(
                f"peers: the name {FHIR_DESTINATION!r} is the FHIR server's outbox destination"
            )
        for name, peer in self.peers.items():
            if peer.pinned and self.dicom.tls.port is None:
                raise ValueError(
                    f"peers.{name}: a certificate_fingerprint or certificate_subject needs "
                    "dicom.tls.port (the peer is accepted over TLS only)"
                )
        if self.jobs.engine == JobEngine.CELERY:
            if not self.jobs.broker_url:
                raise ValueError("jobs.broker_url: the celery engine needs a broker URL")
            if not self.storage.database_url.startswith("postgresql"):
                raise ValueError(
                    "storage.database: the celery engine needs a PostgreSQL index shared by "
                    "every host (postgresql+psycopg://...), not "
                    f"{self.storage.database_url.split(':', 1)[0]}"
                )
        unknown = [name for name in self.results.destinations if name not in self.peers]
        if unknown:
            raise ValueError(f"results.destinations names unknown peers: {', '.join(unknown)}")
        for rule in self.inference.routes:
            unknown = [name for name in rule.research_destinations if name not in self.peers]
            if unknown:
                raise ValueError(
                    f"route {rule.name!r}: research_destinations names unknown peers: "
                    f"{', '.join(unknown)}"
                )

    @property
    def audit_file(self) -> Path:
        return self.audit.file or self.storage.path / "audit.log"

    @property
    def pseudonym_key_file(self) -> Path:
        return self.deidentification.key_file or self.storage.path / "deid.key"

    def peer(self, name: str) -> PeerConfig:
        """The peer called `name` (its key in `peers`, or its AE title)."""
        if name in self.peers:
            return self.peers[name]
        for peer in self.peers.values():
            if peer.ae_title == name:
                return peer
        known = ", ".join(sorted(self.peers)) or "none configured"
        raise ConfigError(f"unknown peer {name!r} (known peers: {known})")

    def dicom_peer(self, name: str) -> DicomAddress:
        """The DICOM address of the peer called `name`; a peer without one is an error."""
        address = self.peer(name).address
        if address is None:
            raise ConfigError(f"peer {name!r} is a DICOMweb destination: it has no DICOM address")
        return address

    def peer_by_ae_title(self, ae_title: str) -> PeerConfig | None:
        """The DICOM peer with this AE title (the first listed)."""
        for peer in self.peers.values():
            if peer.address is not None and peer.address.ae_title == ae_title.strip():
                return peer
        return None


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"{key}: {message}")
    return "; ".join(lines)


def parse_config(data: object, source: str = "configuration") -> NodeConfig:
    """Validate an already-loaded YAML document."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of keys")
    try:
        return NodeConfig.model_validate(resolve_secrets(data))
    except ValidationError as error:
        raise ConfigError(f"{source}: {_describe(error)}") from None
    except ValueError as error:
        raise ConfigError(f"{source}: {error}") from None
