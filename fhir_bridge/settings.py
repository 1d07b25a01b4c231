"""The ``fhir`` section of the node's configuration: where reports go and how to authenticate.

Declared here, beside the code that uses it, and embedded by the node's configuration; every
combination that cannot work (OAuth2 without a token URL, basic without a password, a base URL
without the patient identifier system) is refused when the configuration is loaded.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AuthMethod(StrEnum):
    NONE = "none"
    BEARER = "bearer"  # a static token
    BASIC = "basic"  # HTTP basic
    OAUTH2 = "oauth2"  # client credentials grant (SMART Backend Services style)


_NEEDS = {
    AuthMethod.NONE: (),
    AuthMethod.BEARER: ("token",),
    AuthMethod.BASIC: ("username", "password"),
    AuthMethod.OAUTH2: ("token_url", "client_id"),
}


class FhirAuthSettings(_Section):
    method: AuthMethod = AuthMethod.NONE
    token: str | None = None
    username: str | None = None
    password: str | None = None
    token_url: AnyHttpUrl | None = None
    client_id: str | None = None
    #: the client authenticates with this secret (HTTP basic at the token endpoint) ...
    client_secret: str | None = None
    #: ... or with a JWT assertion signed with this PEM private key (RS384), as SMART Backend
    #: Services asks
    private_key_file: Path | None = None
    #: the key's id (``kid``) the server knows it by
    key_id: str | None = None
    scope: str | None = None

    @model_validator(mode="after")
    def _complete(self) -> FhirAuthSettings:
        missing = [key for key in _NEEDS[self.method] if getattr(self, key) is None]
        if self.method == AuthMethod.OAUTH2 and not (self.client_secret or self.private_key_file):
            missing.append("client_secret or private_key_file")
        if missing:
            raise ValueError(f"fhir.auth.method {self.method.value} needs {', '.join(missing)}")
        return self


class FhirVersion(StrEnum):
    R4 = "R4"
    R5 = "R5"


class ReportStatus(StrEnum):
    PRELIMINARY = "preliminary"
    FINAL = "final"


class FhirSettings(_Section):
    #: the FHIR server's base URL; absent: no FHIR reports
    base_url: AnyHttpUrl | None = None
    version: FhirVersion = FhirVersion.R4
    #: status of the DiagnosticReport and its Observations: AI output is preliminary until a
    #: person signs it off, unless the site decides otherwise
    report_status: ReportStatus = ReportStatus.PRELIMINARY
    #: the system of the patient's identifier (the issuer of DICOM PatientID), e.g. the
    #: hospital's MRN namespace ``urn:oid:1.2.3.4`` or ``http://hospital.example/mrn``
    patient_identifier_system: str | None = None
    #: the node's DICOMweb root as the EHR reaches it; when set, ImagingStudy gets an Endpoint and
    #: the report links its DICOM SR there
    dicomweb_url: AnyHttpUrl | None = None
    timeout_seconds: float = Field(default=30.0, gt=0)
    #: immediate retries of a request that met a connection error or a 5xx/429 answer, before
    #: the report waits in the outbox for its next round
    retries: int = Field(default=2, ge=0, le=10)
    auth: FhirAuthSettings = FhirAuthSettings()

    @model_validator(mode="after")
    def _patient_system(self) -> FhirSettings:
        if self.base_url is not None and not self.patient_identifier_system:
            raise ValueError(
                "fhir.patient_identifier_system is needed when fhir.base_url is set: it says "
                "whose patient IDs the DICOM PatientID values are (e.g. urn:oid:1.2.3.4)"
            )
        return self

    @property
    def enabled(self) -> bool:
        return self.base_url is not None

    @property
    def dicomweb_root(self) -> str | None:
        """``dicomweb_url`` without a trailing slash, for joining paths to it."""
        return str(self.dicomweb_url).rstrip("/") if self.dicomweb_url is not None else None
