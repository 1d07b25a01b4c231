"""The HTTP side of the node: health, Prometheus metrics, the state of jobs and deliveries,
and DICOMweb under `/dicomweb`."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable

import uvicorn
from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from sqlalchemy import Engine

from .. import metrics
from ..config import ConfigError, HttpConfig
from ..console.app import mount_console
from ..console.context import ConsoleContext
from ..dicomweb.app import mount_dicomweb
from ..dicomweb.auth import AuthSetupError, load_jwks
from ..dicomweb.context import DicomwebContext
from ..index import jobs
from ..index.database import reading_engine
from ..index.heartbeat import check_writable as check_index_writable
from ..index.work import work_summary
from ..store.ingest import Ingest
from ..store.storage import StorageArea, StorageError
from .http_timeouts import guarded_protocol
from .listening import listen

log = logging.getLogger(__name__)


def create_app(
    engine: Engine,
    storage: StorageArea,
    ae_title: str,
    http: HttpConfig,
    ingest: Ingest | None,
    dicom_listening: Callable[[], bool] | None = None,
    console: ConsoleContext | None = None,
) -> FastAPI:
    """The node's HTTP application; `ingest` stores what STOW-RS receives, `dicom_listening`
    says whether the DICOM listener still accepts associations; `console` adds the web console
    at `/ui/`."""
    app = FastAPI(title="DICOM AI node", docs_url=None, redoc_url=None)
    mount_dicomweb(app, DicomwebContext(reading_engine(engine), storage, ingest, http.dicomweb))
    if console is not None:
        mount_console(app, console)

    def health_problems() -> list[str]:
        """What keeps the node from storing: the index or the storage area refusing a write
        (read-only, disk full), each with the reason; the gauge follows."""
        problems = []
        try:
            check_index_writable(engine)
        except Exception as error:
            problems.append(f"index: {type(error).__name__}: {_first_line(error)}")
        metrics.HEALTHY.labels(check="index").set(0 if problems else 1)
        try:
            storage.check_writable()
            metrics.HEALTHY.labels(check="storage").set(1)
        except StorageError as error:
            problems.append(f"storage: {error.strerror}")
            metrics.HEALTHY.labels(check="storage").set(0)
        if dicom_listening is not None:
            listening = dicom_listening()
            if not listening:
                problems.append("dicom: the listener has stopped accepting associations")
            metrics.HEALTHY.labels(check="dicom").set(1 if listening else 0)
        return problems

    @app.get("/healthz")
    def healthz() -> Response:
        """Ready when the index and the storage area both take a write and the DICOM listener
        accepts associations."""
        problems = health_problems()
        body: dict[str, object] = {
            "status": "ok" if not problems else "failing",
            "ae_title": ae_title,
        }
        if problems:
            body["problems"] = problems
        return JSONResponse(body, status_code=200 if not problems else 503)

    @app.get("/status")
    def status() -> dict:
        """Jobs by state, the running ones with their step and percentage, deliveries by
        destination and state, and the deliveries that were tried and are not through (with the
        peer's last answer): what `dicom-node jobs` and `dicom-node outbox` show, for a
        monitoring system."""
        return {"jobs": jobs.counts(engine), **work_summary(engine)}

    @app.get("/metrics")
    def prometheus() -> Response:
        health_problems()  # the health gauge is current at each scrape
        payload, content_type = metrics.exposition()
        return Response(payload, media_type=content_type)

    return app


def check_http(http: HttpConfig) -> str:
    """Read the TLS and JWKS files now, so a bad path stops the node at start naming its key;
    return a one-line description of the HTTP side."""
    for key in ("tls_certificate_file", "tls_key_file"):
        path = getattr(http, key)
        if path is not None and not path.is_file():
            raise ConfigError(f"http.{key}: {path} is not a readable file")
    try:
        load_jwks(http.dicomweb.auth)
    except AuthSetupError as error:
        raise ConfigError(str(error)) from None
    auth = http.dicomweb.auth
    schemes = [
        name
        for name, used in (
            ("bearer tokens", auth.bearer_tokens),
            ("basic users", auth.basic_users),
            ("OAuth2 JWT", auth.jwt),
        )
        if used
    ]
    scheme = "https" if http.tls_certificate_file else "http"
    origins = ", ".join(http.dicomweb.cors_origins) or "off"
    return (
        f"DICOMweb {scheme}://{http.host}:{http.port}/dicomweb, "
        f"auth {', '.join(schemes) or 'none'}, CORS {origins}"
    )


def _first_line(error: Exception) -> str:
    """The database's own reason, without SQLAlchemy's statement and link lines."""
    original = getattr(error, "orig", None) or error
    return str(original).strip().splitlines()[0] if str(original).strip() else ""


def open_http_socket(http: HttpConfig) -> socket.socket:
    """The HTTP port, bound before the node starts: uvicorn binds it in its thread and, when
    the port is taken, logs and ends that thread while the node runs on without HTTP."""
    return listen(http.host, http.port, "http.port", backlog=2048)


class HttpServer:
    """uvicorn in a thread of the node's main process, serving an already bound socket."""

    def __init__(self, app: FastAPI, http: HttpConfig, listening: socket.socket) -> None:
        config = uvicorn.Config(
            app,
            host=http.host,
            port=http.port,
            log_level="warning",
            access_log=False,
            ssl_certfile=http.tls_certificate_file,
            ssl_keyfile=http.tls_key_file,
            http=guarded_protocol(
                http.request_head_timeout_seconds, http.request_idle_timeout_seconds
            ),
            limit_concurrency=http.max_connections,
            loop="uvloop",  # libuv's loop: a tenth less CPU per DICOMweb answer than asyncio's
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, args=([listening],), name="http", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
