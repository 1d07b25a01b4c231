"""The console as a read-only user meets it, through a reverse proxy that serves the node under
a path prefix (as `http.dicomweb.public_url` describes): every page loads its data with relative
addresses only (no request leaves the prefix), has no enabled control that changes anything (the
API answers 403 when the reader forces one), no serious or critical axe-core violation, and the
Tab key reaches every control. tests/viewer/console_tour.mjs drives chromium."""

from __future__ import annotations

import http.client
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pydicom
import pytest
import requests

from .browser import artefacts, browser_report, needs_chromium, serious
from .conftest import CR_CHEST
from .test_console import GUARD, READER, WRITE, WRITER
from .test_console_predict import console_node, ended, stow

PREFIX = "/pacs-ai"
#: headers a proxy does not pass on (RFC 9110 7.6.1), and the length it sets itself
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
    "content-length",
    "host",
}

pytestmark = [needs_chromium, pytest.mark.parametrize("database_kind", ["sqlite"])]


def prefix_proxy(port: int) -> ThreadingHTTPServer:
    """A reverse proxy on a free port serving 127.0.0.1:``port`` under PREFIX, as a site's
    proxy does: requests outside the prefix get 404; headers pass both ways."""

    class Forward(BaseHTTPRequestHandler):
        def forward(self) -> None:
            if not self.path.startswith(PREFIX + "/"):
                self.send_error(404, "outside the proxy's prefix")
                return
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            upstream = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            upstream.request(self.command, self.path[len(PREFIX) :], body, headers)
            answer = upstream.getresponse()
            content = answer.read()
            self.send_response(answer.status, answer.reason)
            for key, value in answer.getheaders():
                if key.lower() not in HOP_BY_HOP:
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)
            upstream.close()

        do_GET = do_POST = do_HEAD = forward

        def log_message(self, *args) -> None:  # the test reports what the browser asked
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Forward)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_a_reader_tours_every_page_behind_a_prefix(make_node, tmp_path):
    node, api = console_node(make_node)
    assert stow(node, [CR_CHEST]).status_code == 200
    study = str(pydicom.dcmread(CR_CHEST, stop_before_pixels=True).StudyInstanceUID)
    answer = requests.post(
        f"{api}/jobs", json={"study": study, "models": ["cxr_pneumonia"]}, headers=GUARD, auth=WRITE
    )
    job = answer.json()["job"]
    assert ended(api, job, timeout=240)["state"] == "done"
    proxy = prefix_proxy(node.http_port)
    out = artefacts(tmp_path, "console_tour")
    arguments = {
        "url": f"http://127.0.0.1:{proxy.server_port}{PREFIX}/ui/",
        "user": READER["username"],
        "password": READER["password"],
        "study": study,
        "job": job,
        "out": str(out),
    }
    try:
        report = browser_report("console_tour.mjs", arguments, timeout=300)
    finally:
        proxy.shutdown()
    assert report["errorsBeforeForcing"] == []
    assert report["outside"] == []
    assert report["forced"] == {
        "retryJob": 403,
        "retryDelivery": 403,
        "reload": 403,
        "predict": 403,
    }
    assert set(report["pages"]) == {"studies", "study", "work", "config", "predict"}
    for name, shown in report["pages"].items():
        assert serious(shown["violations"]) == [], (name, shown["violations"])
        assert set(shown["enabled"]["buttons"]) <= {"Search"}, (name, shown["enabled"])
        assert shown["enabled"]["files"] == 0, name
        assert shown["keyboard"]["missed"] == [], (name, shown["keyboard"])
        assert shown["keyboard"]["reached"] >= 4, name  # the four pages' links at least
    assert "not assessed" in report["pages"]["study"]["text"]
    # nothing queued: said once, and no stray value beside it
    work = report["pages"]["work"]["text"].split("Outbox", 1)[1].split()
    assert work == "Nothing was queued for delivery.".split(), work
    assert "cxr_pneumonia" in report["pages"]["predict"]["text"]
    assert WRITER["username"] not in json.dumps(report)
