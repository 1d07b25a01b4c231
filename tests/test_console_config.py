"""The console's configuration API on a running node: the configuration with its secrets masked,
the reload button's endpoint (the write right and the console's header needed; a bad file refused
with `check-config`'s message), and C-ECHO against DCMTK's storescp and against a dead port."""

from __future__ import annotations

import subprocess
import sys

import pytest
import requests
import yaml

from .browser import artefacts, browser_report, needs_chromium
from .conftest import free_port
from .test_cli import storescp  # noqa: F401 (a fixture)
from .test_console import GUARD, READ, READER, WRITE, WRITER

pytestmark = pytest.mark.parametrize("database_kind", ["sqlite"])

PEER_PASSWORD = "stow-password-3"
TOKEN = "bearer-token-0123456789"


def console_node(make_node, **overrides):
    """A node whose DICOMweb (and console) has a reader, a writer and a bearer token."""
    auth = {"basic_users": [READER, WRITER], "bearer_tokens": [{"token": TOKEN}]}
    return make_node(http={"dicomweb": {"auth": auth}}, **overrides)


def test_the_configuration_is_shown_with_every_secret_masked(make_node):
    web = {
        "dicomweb_url": "http://127.0.0.1:9/dicomweb",
        "auth": {"method": "basic", "username": "node", "password": PEER_PASSWORD},
    }
    node = console_node(make_node, peers={"archive": web})
    node.start()
    base = f"http://127.0.0.1:{node.http_port}/ui/api"
    answer = requests.get(f"{base}/config", auth=READ, timeout=10)
    assert answer.status_code == 200
    for secret in (READER["password"], WRITER["password"], PEER_PASSWORD, TOKEN):
        assert secret not in answer.text
    shown = answer.json()
    assert shown["configuration"]["peers"]["archive"]["auth"]["password"] == "********"
    assert shown["configuration"]["http"]["dicomweb"]["auth"]["basic_users"][0] == {
        "username": "reader",
        "password": "********",
        "write": False,
    }
    assert [f["path"] for f in shown["files"]] == [str(node.config_path.resolve())]
    assert shown["reloadable"] and "peers" in shown["live_keys"]
    peers = requests.get(f"{base}/peers", auth=READ, timeout=10)
    assert PEER_PASSWORD not in peers.text
    assert peers.json()[0]["name"] == "archive" and not peers.json()[0]["can_echo"]


def test_the_reload_endpoint_needs_the_write_right_and_refuses_a_bad_file(make_node):
    node = console_node(make_node)
    node.start()
    url = f"http://127.0.0.1:{node.http_port}/ui/api/config/reload"
    assert requests.post(url, headers=GUARD, timeout=10).status_code == 401
    assert requests.post(url, headers=GUARD, auth=READ, timeout=10).status_code == 403
    unguarded = requests.post(url, auth=WRITE, timeout=10)
    assert unguarded.status_code == 403 and "X-Requested-By" in unguarded.json()["detail"]

    node.settings["peers"] = {"pacs": {"ae_title": "PACS", "host": "127.0.0.1", "port": 104}}
    node.config_path.write_text(yaml.safe_dump(node.settings))
    applied = requests.post(url, headers=GUARD, auth=WRITE, timeout=30)
    assert applied.status_code == 200, applied.text
    assert applied.json()["changed"] == ["peers.pacs"]
    peers = requests.get(url.replace("config/reload", "peers"), auth=READ, timeout=10)
    assert [peer["name"] for peer in peers.json()] == ["pacs"]

    node.settings["results"] = {"destinations": ["nowhere"]}
    node.config_path.write_text(yaml.safe_dump(node.settings))
    check = subprocess.run(
        [sys.executable, "-m", "dicom_node", "check-config", str(node.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    refused = requests.post(url, headers=GUARD, auth=WRITE, timeout=30)
    assert refused.status_code == 422
    assert refused.json()["detail"].endswith(check.stderr.strip())
    assert "the running configuration stays" in refused.json()["detail"]
    assert "the running configuration stays" in node.log()
    shown = requests.get(url.replace("/reload", ""), auth=READ, timeout=10).json()
    assert shown["configuration"]["results"]["destinations"] == []
    assert shown["last_reload"]["applied"] is False


def test_c_echo_answers_with_the_peers_status_or_a_clear_failure(make_node, storescp):  # noqa: F811
    port, _received = storescp
    dead = free_port()
    node = console_node(
        make_node,
        peers={
            "storescp": {"ae_title": "STORESCP", "host": "127.0.0.1", "port": port},
            "dead": {"ae_title": "DEAD", "host": "127.0.0.1", "port": dead},
        },
    )
    node.start()
    base = f"http://127.0.0.1:{node.http_port}/ui/api/peers"
    alive = requests.post(f"{base}/storescp/echo", headers=GUARD, auth=WRITE, timeout=30)
    assert alive.status_code == 200
    answer = alive.json()
    assert answer["ok"] and answer["status"] == "0x0000" and answer["round_trip_ms"] > 0
    assert answer["message"].startswith("success (status 0x0000) in ")

    failed = requests.post(f"{base}/dead/echo", headers=GUARD, auth=WRITE, timeout=30)
    assert failed.status_code == 200
    assert failed.json()["ok"] is False
    assert f"cannot reach peer 'dead' (DEAD at 127.0.0.1:{dead})" in failed.json()["message"]
    unknown = requests.post(f"{base}/nobody/echo", headers=GUARD, auth=WRITE, timeout=30)
    assert unknown.status_code == 404


@needs_chromium
def test_the_config_page_echoes_peers_and_reloads_in_a_browser(
    make_node,
    storescp,  # noqa: F811 (the fixture imported above)
    tmp_path,
):
    port, _received = storescp
    dead = free_port()
    archive = {
        "dicomweb_url": "http://127.0.0.1:9/dicomweb",
        "auth": {"method": "basic", "username": "node", "password": PEER_PASSWORD},
    }
    node = console_node(
        make_node,
        peers={
            "storescp": {"ae_title": "STORESCP", "host": "127.0.0.1", "port": port},
            "dead": {"ae_title": "DEAD", "host": "127.0.0.1", "port": dead},
            "archive": archive,
        },
    )
    node.start()
    good = dict(node.settings)
    node.config_path.write_text(yaml.safe_dump({**good, "results": {"destinations": ["nowhere"]}}))
    added = {"ae_title": "ADDED", "host": "127.0.0.1", "port": free_port()}
    fixed = yaml.safe_dump({**good, "peers": {**good["peers"], "added": added}})
    folder = artefacts(tmp_path, "console-config")
    arguments = {
        "url": f"http://127.0.0.1:{node.http_port}/ui/",
        "username": WRITER["username"],
        "password": WRITER["password"],
        "out": str(folder),
        "echo": ["storescp", "dead"],
        "config_path": str(node.config_path),
        "fixed_config": fixed,
    }
    report = browser_report("console_config.mjs", arguments)
    assert "failure" not in report, report["failure"]
    assert "Configuration" in report["navigation"]
    assert report["echo"]["storescp"].startswith("success (status 0x0000) in ")
    assert f"cannot reach peer 'dead' (DEAD at 127.0.0.1:{dead})" in report["echo"]["dead"]
    assert "reload refused, the running configuration stays" in report["refused"]
    assert "unknown peers: nowhere" in report["refused"] and report["refusedClass"] == "error"
    assert "changed peers.added" in report["applied"]
    assert report["peersAfter"] == ["added", "archive", "dead", "storescp"]
    assert "ADDED" in report["peersSection"] and PEER_PASSWORD not in report["peersSection"]
    assert report["violations"] == {"opened": [], "echoed": [], "reloaded": []}
    # The refused reload's 422 is the only error answer, and the browser's only error line.
    assert report["httpErrors"] == ["422 /ui/api/config/reload"]
    assert len(report["errors"]) == 1 and "422" in report["errors"][0]
    for name in ("config-echo.png", "config-refused.png", "config-reloaded.png"):
        assert (folder / name).stat().st_size > 10_000
