"""Authentication to the FHIR server, as requests auth objects: none, a static bearer token,
HTTP basic, or an OAuth2 client credentials grant (SMART Backend Services style), the client
proving itself with its secret or with a JWT assertion signed by its private key."""

from __future__ import annotations

import threading
import time
import uuid

import jwt
import requests
from requests.auth import AuthBase, HTTPBasicAuth

from .settings import AuthMethod, FhirAuthSettings

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: a token is renewed this long before the server said it expires
EXPIRY_MARGIN_SECONDS = 30.0


class AuthError(Exception):
    """The token endpoint refused the client, or its answer is not a token."""


class BearerToken(AuthBase):
    def __init__(self, token: str) -> None:
        self.token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.token}"
        return request


class ClientCredentials(AuthBase):
    """Fetches an access token with the client credentials grant and keeps it until shortly
    before it expires; ``forget`` drops it (after a 401) so the next request fetches anew."""

    def __init__(self, settings: FhirAuthSettings, timeout: float) -> None:
        self.settings = settings
        self.timeout = timeout
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = threading.Lock()
        self._key = settings.private_key_file.read_bytes() if settings.private_key_file else None

    def _assertion(self, key: bytes) -> str:
        now = int(time.time())
        claims = {
            "iss": self.settings.client_id,
            "sub": self.settings.client_id,
            "aud": str(self.settings.token_url),
            "jti": uuid.uuid4().hex,
            "iat": now,
            "exp": now + 300,
        }
        headers = {"kid": self.settings.key_id} if self.settings.key_id else None
        return jwt.encode(claims, key, algorithm="RS384", headers=headers)

    def _fetch(self) -> None:
        form = {"grant_type": "client_credentials"}
        if self.settings.scope:
            form["scope"] = self.settings.scope
        auth = None
        if self._key is not None:
            form |= {
                "client_assertion_type": JWT_BEARER,
                "client_assertion": self._assertion(self._key),
            }
        else:
            # FhirAuthSettings gives oauth2 a client_id, and a client_secret when there is no key
            assert self.settings.client_id is not None and self.settings.client_secret is not None
            auth = HTTPBasicAuth(self.settings.client_id, self.settings.client_secret)
        answer = requests.post(
            str(self.settings.token_url), data=form, auth=auth, timeout=self.timeout
        )
        if answer.status_code >= 500 or answer.status_code == 429:  # down for now: try later
            raise requests.ConnectionError(f"token endpoint answered {answer.status_code}")
        if answer.status_code != 200:
            raise AuthError(
                f"token endpoint answered {answer.status_code}: {answer.text[:300].strip()}"
            )
        try:
            body = answer.json()
            self._token = str(body["access_token"])
        except (ValueError, KeyError, TypeError):
            raise AuthError("token endpoint answer holds no access_token") from None
        lifetime = float(body.get("expires_in") or 300)
        self._expires_at = time.monotonic() + max(lifetime - EXPIRY_MARGIN_SECONDS, 1.0)

    def forget(self) -> None:
        with self._lock:
            self._token = None

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        with self._lock:
            if self._token is None or time.monotonic() >= self._expires_at:
                self._fetch()
            request.headers["Authorization"] = f"Bearer {self._token}"
        return request


def make_auth(settings: FhirAuthSettings, timeout: float) -> AuthBase | None:
    """The requests auth for ``settings``; reads the private key now, so a missing or unreadable
    key file is an error at start, not at the first report."""
    # FhirAuthSettings refuses a method without the settings it needs (_NEEDS)
    if settings.method == AuthMethod.BEARER:
        assert settings.token is not None
        return BearerToken(settings.token)
    if settings.method == AuthMethod.BASIC:
        assert settings.username is not None and settings.password is not None
        return HTTPBasicAuth(settings.username, settings.password)
    if settings.method == AuthMethod.OAUTH2:
        return ClientCredentials(settings, timeout)
    return None
