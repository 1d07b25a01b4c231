"""Cross-site request forgery defence for the console's changing requests.

A browser keeps basic credentials and sends them with any request to the node, including one a
hostile page makes it send. A changing request (POST) must therefore carry a header that only
script of the console's own origin can add: another origin cannot set a custom header without a
CORS preflight, which the node never grants for the console. The fetch helper `api()` in
`static/api.js` adds it to every request."""

from __future__ import annotations

import logging

from fastapi import HTTPException, Request

log = logging.getLogger(__name__)

#: the header (and value) every changing console request must carry
HEADER = "X-Requested-By"
VALUE = "dicom-node-console"


def same_origin_only(request: Request) -> None:
    """A FastAPI dependency: refuse a changing request without the console's header (403)."""
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    if request.headers.get(HEADER) != VALUE:
        log.warning(
            "console: refused %s %s without the %s header (cross-site request?)",
            request.method,
            request.url.path,
            HEADER,
        )
        raise HTTPException(403, f"console requests that change something need {HEADER}: {VALUE}")
