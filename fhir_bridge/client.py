"""Posting transaction Bundles to the FHIR server with requests: timeouts, a few immediate
retries with backoff on connection errors and 5xx/429 answers, none on other 4xx. Each post ends
in one of three verdicts the caller's outbox acts on: delivered, unavailable (try again later),
or refused (the server's OperationOutcome says why; sending it again would not help)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from .auth import AuthError, ClientCredentials, make_auth
from .settings import FhirSettings

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"
RETRIED_STATUSES = (429, 500, 502, 503, 504)


class Verdict(StrEnum):
    DELIVERED = "delivered"
    UNAVAILABLE = "unavailable"
    REFUSED = "refused"


@dataclass(frozen=True)
class Delivery:
    verdict: Verdict
    #: what the server said, in full (its OperationOutcome may quote the data it refused)
    message: str
    #: the same without quoting data: status, issue codes and where they are, fit for logs
    brief: str


def outcome_text(answer: requests.Response, quote: bool = True) -> str:
    """The OperationOutcome's issues as one line (the raw body's start when it is not one);
    without ``quote``, only each issue's code and location, never the server's words."""
    try:
        body = answer.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or body.get("resourceType") != "OperationOutcome":
        return (answer.text[:300].strip() or answer.reason) if quote else answer.reason
    parts = []
    for issue in body.get("issue", []):
        text = issue.get("diagnostics") or (issue.get("details") or {}).get("text") or ""
        where = ", ".join(issue.get("expression") or issue.get("location") or [])
        said = f"{issue.get('severity', '')} {issue.get('code', '')}"
        said += f": {text}" if quote and text else ""
        parts.append(said + (f" at {where}" if where else ""))
    return "; ".join(parts) or "OperationOutcome without issues"


class FhirClient:
    """A session to one FHIR server, its auth and retry policy from the settings."""

    def __init__(self, settings: FhirSettings) -> None:
        if not settings.enabled:
            raise ValueError("fhir.base_url is not set")
        self.base_url = str(settings.base_url).rstrip("/")
        self.timeout = settings.timeout_seconds
        self.session = requests.Session()
        self.session.auth = make_auth(settings.auth, settings.timeout_seconds)
        retry = Retry(
            total=settings.retries,
            backoff_factor=0.5,
            status_forcelist=RETRIED_STATUSES,
            allowed_methods=None,  # a transaction of conditional creates is safe to repeat
            raise_on_status=False,
            respect_retry_after_header=True,
        )
        self.session.mount("http://", HTTPAdapter(max_retries=retry))
        self.session.mount("https://", HTTPAdapter(max_retries=retry))

    def _post(self, body: bytes) -> requests.Response:
        headers = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}
        return self.session.post(self.base_url, data=body, headers=headers, timeout=self.timeout)

    def post_transaction(self, body: bytes) -> Delivery:
        """POST a transaction Bundle (its JSON) to the base URL."""
        try:
            answer = self._post(body)
            if answer.status_code == 401 and isinstance(self.session.auth, ClientCredentials):
                self.session.auth.forget()  # the token may have been revoked: one fresh try
                answer = self._post(body)
        except AuthError as error:
            text = f"authentication failed: {error}"
            return Delivery(Verdict.REFUSED, text, text)
        except requests.RequestException as error:
            text = f"FHIR server unreachable: {error}"
            return Delivery(Verdict.UNAVAILABLE, text, text)
        if answer.ok:
            return Delivery(Verdict.DELIVERED, f"{answer.status_code}", f"{answer.status_code}")
        head = f"FHIR server answered {answer.status_code}"
        verdict = Verdict.UNAVAILABLE if answer.status_code in RETRIED_STATUSES else Verdict.REFUSED
        return Delivery(
            verdict,
            f"{head}: {outcome_text(answer)}",
            f"{head}: {outcome_text(answer, quote=False)}",
        )
