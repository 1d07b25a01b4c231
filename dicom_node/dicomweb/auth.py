"""Who may use DICOMweb: static bearer tokens, HTTP basic users and OAuth2 access tokens (JWT
checked against the issuer's keys from a JWKS file). With none configured, anyone who can
reach the port may (the default listens on loopback only).

Missing or wrong credentials get 401 with a challenge for each accepted scheme, each in its own
`WWW-Authenticate` field (RFC 9110 §11.6.1) and Basic first: chromium reads one scheme per field, so
a Basic challenge after a Bearer one in the same field never makes a browser ask for (or send) a
user's password. Valid credentials that do not allow the action (storing with a read-only token,
a JWT without the read scope) get 403.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import jwt
from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ..audit import messages, record
from ..config.dicomweb import DicomwebAuth
from .context import http_user
from .errors import DicomwebError

log = logging.getLogger(__name__)


class AuthSetupError(ValueError):
    """The JWKS file cannot be read or holds no usable key."""


@dataclass(frozen=True)
class Grant:
    who: str
    read: bool
    write: bool


def load_jwks(settings: DicomwebAuth) -> jwt.PyJWKSet | None:
    if settings.jwt is None:
        return None
    try:
        return jwt.PyJWKSet.from_json(settings.jwt.jwks_file.read_text(encoding="utf-8"))
    except OSError as error:
        raise AuthSetupError(
            f"http.dicomweb.auth.jwt.jwks_file: cannot read {settings.jwt.jwks_file}: "
            f"{error.strerror}"
        ) from None
    except (jwt.PyJWTError, ValueError) as error:
        raise AuthSetupError(
            f"http.dicomweb.auth.jwt.jwks_file: not a usable JWKS: {error}"
        ) from None


class Unauthorized(DicomwebError):
    """401: the credentials are missing or wrong; `challenges` are the accepted schemes."""

    def __init__(self, reason: str, challenges: list[str]) -> None:
        super().__init__(401, reason)
        self.challenges = challenges


def answer_unauthorized(request: Request, error: Exception) -> JSONResponse:
    """The 401 answer with one `WWW-Authenticate` field per challenge (a header dict, which
    Starlette's own handler takes, cannot repeat a field)."""
    assert isinstance(error, Unauthorized)  # registered for Unauthorized only
    response = JSONResponse({"detail": error.detail}, status_code=401)
    for challenge in error.challenges:
        response.headers.append("WWW-Authenticate", challenge)
    return response


def _challenges(settings: DicomwebAuth, error: str | None = None) -> list[str]:
    challenges = []
    if settings.basic_users:
        challenges.append('Basic realm="dicomweb", charset="UTF-8"')
    if settings.bearer_tokens or settings.jwt:
        challenges.append('Bearer realm="dicomweb"' + (f', error="{error}"' if error else ""))
    return challenges


def authorizer(settings: DicomwebAuth) -> Callable[[Request], Awaitable[None]]:
    """A FastAPI dependency checking each request's credentials against `settings`. Async: the
    check itself is a comparison or a signature (no password hash), quicker than the trip to
    a worker thread FastAPI takes for a plain function; the refusals, whose audit line is
    synced to disk, take that trip."""
    keys = load_jwks(settings)

    def unauthorized(reason: str, error: str | None = None) -> Unauthorized:
        return Unauthorized(reason, _challenges(settings, error))

    def bearer(token: str) -> Grant:
        for configured in settings.bearer_tokens:
            if hmac.compare_digest(configured.token.encode(), token.encode()):
                return Grant("a configured token", True, configured.write)
        if settings.jwt is None or keys is None:
            raise unauthorized("the bearer token is not valid", "invalid_token")
        options = settings.jwt
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            candidates = [key for key in keys.keys if kid is None or key.key_id == kid]
            if not candidates:
                raise jwt.InvalidTokenError(f"no key {kid!r} in the JWKS file")
            claims = jwt.decode(
                token,
                candidates[0].key,
                algorithms=options.algorithms,
                issuer=options.issuer,
                audience=options.audience or None,
                options={"verify_aud": bool(options.audience), "require": ["exp", "iss"]},
            )
        except jwt.PyJWTError as error:
            raise unauthorized(f"the access token is not valid: {error}", "invalid_token") from None
        except Exception as error:
            # PyJWT lets some crafted tokens through as other errors (a TypeError for an ES256
            # header on an RSA key): whatever fails in checking a token makes it invalid.
            log.warning("JWT check failed: %s: %s", type(error).__name__, error)
            raise unauthorized("the access token is not valid", "invalid_token") from None
        scopes = set(str(claims.get("scope", "")).split())
        write = options.write_scope in scopes
        return Grant(str(claims.get("sub", "a JWT")), write or options.read_scope in scopes, write)

    def basic(encoded: str) -> Grant:
        try:
            username, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise unauthorized("the basic credentials are not base64 user:password") from None
        for user in settings.basic_users:
            if user.username == username and hmac.compare_digest(
                user.password.encode(), password.encode()
            ):
                return Grant(username, True, user.write)
        raise unauthorized("unknown user or wrong password")

    def authenticate(request: Request) -> Grant:
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer" and (settings.bearer_tokens or settings.jwt):
            return bearer(credentials.strip())
        if scheme == "basic" and settings.basic_users:
            return basic(credentials.strip())
        raise unauthorized("DICOMweb needs credentials")

    async def check(request: Request) -> None:
        if not settings.enabled:
            return
        try:
            grant = authenticate(request)
        except DicomwebError as error:
            denied = messages.access_denied(
                http_user(request), request.url.path, str(error.detail), authenticated=False
            )
            await run_in_threadpool(record, denied)
            raise
        request.state.user = grant.who
        request.state.can_write = grant.write
        writing = request.method == "POST"
        if not (grant.write if writing else grant.read):
            action = "store" if writing else "read"
            log.warning(
                "DICOMweb: %s may not %s (%s %s)",
                grant.who,
                action,
                request.method,
                request.url.path,
            )
            reason = f"these credentials do not allow to {action}"
            denied = messages.access_denied(http_user(request), request.url.path, reason, True)
            await run_in_threadpool(record, denied)
            raise DicomwebError(403, reason)

    return check
