"""The `http.dicomweb` configuration section: who may use DICOMweb, from which web origins,
how many results one search may return, and the bounds of what one request may ask or send."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BearerToken(_Section):
    """A static token, e.g. for a script or another node."""

    token: str = Field(min_length=16)
    #: may store (STOW-RS) as well as read
    write: bool = False


class BasicUser(_Section):
    username: str = Field(min_length=1)
    password: str = Field(min_length=8)
    write: bool = False


class JwtSettings(_Section):
    """OAuth2 access tokens (JWT) issued by the hospital's authorization server, checked
    against its public keys (a JWKS file, so the node needs no network to check them)."""

    issuer: str
    jwks_file: Path
    #: the `aud` claim the token must carry; unchecked when empty
    audience: str = ""
    #: scopes (the `scope` claim, space-separated) that allow searching/retrieving and storing
    read_scope: str = "dicomweb.read"
    write_scope: str = "dicomweb.write"
    algorithms: list[str] = ["RS256", "RS384", "ES256"]


class DicomwebAuth(_Section):
    """Credentials DICOMweb accepts; none configured means no authentication (loopback use)."""

    bearer_tokens: list[BearerToken] = []
    basic_users: list[BasicUser] = []
    jwt: JwtSettings | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.bearer_tokens or self.basic_users or self.jwt)


class DicomwebSettings(_Section):
    #: the DICOMweb root as clients reach it (e.g. https://pacs.example.org/dicomweb behind a
    #: reverse proxy), for the URLs in answers; default: from each request
    public_url: str = ""
    #: web origins (scheme://host:port) of browser viewers allowed to call DICOMweb; "*" any
    cors_origins: list[str] = []
    #: the most results one QIDO-RS search returns; a client pages with limit/offset
    max_results: int = Field(default=1000, ge=1)
    #: STOW-RS: the largest request body, and the largest part (one instance, held in memory
    #: until stored), in bytes; beyond, 413
    max_stow_bytes: int = Field(default=4 << 30, ge=1)
    max_stow_part_bytes: int = Field(default=1 << 30, ge=1)
    #: rendered resources: the largest viewport width or height, in pixels; beyond, 400
    max_viewport: int = Field(default=4096, ge=1)
    #: WADO-RS frames: the most frame numbers one request may name; beyond, 400
    max_frames: int = Field(default=1000, ge=1)
    auth: DicomwebAuth = DicomwebAuth()
