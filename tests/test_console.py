"""The web console at `/ui/`: served by `dicom-node serve`, behind the DICOMweb credentials."""

from __future__ import annotations

import requests

#: the console's test users (a reader, a writer) and the header its changing requests need
READER = {"username": "reader", "password": "reader-password"}
WRITER = {"username": "writer", "password": "writer-password", "write": True}
READ = (READER["username"], READER["password"])
WRITE = (WRITER["username"], WRITER["password"])
GUARD = {"X-Requested-By": "dicom-node-console"}


def test_the_console_asks_for_the_dicomweb_credentials_and_says_who_may_write(make_node):
    node = make_node(http={"dicomweb": {"auth": {"basic_users": [READER, WRITER]}}})
    node.start()
    base = f"http://127.0.0.1:{node.http_port}/ui"

    refused = requests.get(f"{base}/", timeout=10)
    assert refused.status_code == 401
    assert "Basic" in refused.headers["WWW-Authenticate"]

    page = requests.get(f"{base}/", auth=READ, timeout=10)
    assert page.status_code == 200
    assert '<main id="main"' in page.text
    script = requests.get(f"{base}/static/console.js", timeout=10)
    assert script.status_code == 200
    assert "javascript" in script.headers["Content-Type"]

    session = requests.get(f"{base}/api/session", auth=READ, timeout=10).json()
    assert session == {"user": "reader", "can_write": False, "ae_title": "AI_NODE"}
    assert requests.get(f"{base}/api/session", auth=WRITE, timeout=10).json()["can_write"]


def test_a_job_or_delivery_number_past_the_index_range_is_a_client_error(make_node):
    """Found by schemathesis: a job number of 25 digits reached SQLite's driver and came back as
    a 500. Numbers a row id cannot hold are refused by the route (422), like any other bad
    path value; one in range that is no row is a 404."""
    node = make_node(http={"dicomweb": {"auth": {"basic_users": [READER, WRITER]}}})
    node.start()
    api = f"http://127.0.0.1:{node.http_port}/ui/api"
    huge = "5841725854446789391810560"
    assert requests.get(f"{api}/predict/jobs/{huge}", auth=READ, timeout=10).status_code == 422
    for path in (
        f"jobs/{huge}/retry",
        f"deliveries/{huge}/retry",
        "jobs/0/retry",
        f"jobs/{2**31}/retry",
    ):
        answer = requests.post(f"{api}/{path}", auth=WRITE, headers=GUARD, timeout=10)
        assert answer.status_code == 422, path
    assert requests.get(f"{api}/predict/jobs/{2**31 - 1}", auth=READ, timeout=10).status_code == 404
