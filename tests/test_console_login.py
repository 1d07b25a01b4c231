"""Logging in to the console when DICOMweb accepts both bearer tokens and basic users: each
scheme's challenge is its own `WWW-Authenticate` field, so a browser (which speaks only Basic)
finds the Basic one and asks for, or sends, the user's credentials; token clients still read
the Bearer challenge and its error."""

from __future__ import annotations

import pytest
import requests

from .browser import artefacts, browser_report, needs_chromium
from .test_console import READER

pytestmark = pytest.mark.parametrize("database_kind", ["sqlite"])

TOKEN = "bearer-token-0123456789"


def both_schemes(make_node):
    auth = {"basic_users": [READER], "bearer_tokens": [{"token": TOKEN}]}
    node = make_node(http={"dicomweb": {"auth": auth}})
    node.start()
    return node


def challenges(answer: requests.Response) -> list[str]:
    """The `WWW-Authenticate` fields one by one (requests joins repeated fields)."""
    return answer.raw.headers.getlist("WWW-Authenticate")


def test_each_scheme_is_challenged_in_its_own_field(make_node):
    node = both_schemes(make_node)
    base = f"http://127.0.0.1:{node.http_port}"
    for path in ("/ui/", "/dicomweb/studies"):
        refused = requests.get(base + path, timeout=10)
        assert refused.status_code == 401
        assert challenges(refused) == [
            'Basic realm="dicomweb", charset="UTF-8"',
            'Bearer realm="dicomweb"',
        ]
        assert refused.json() == {"detail": "DICOMweb needs credentials"}
    wrong = requests.get(
        f"{base}/dicomweb/studies", headers={"Authorization": "Bearer wrong"}, timeout=10
    )
    assert wrong.status_code == 401
    assert challenges(wrong)[1] == 'Bearer realm="dicomweb", error="invalid_token"'
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert requests.get(f"{base}/dicomweb/studies", headers=bearer, timeout=10).status_code == 200


@needs_chromium
def test_a_person_logs_in_to_the_console_with_chromium(make_node, tmp_path):
    node = both_schemes(make_node)
    folder = artefacts(tmp_path, "console-login")
    arguments = {
        "url": f"http://127.0.0.1:{node.http_port}/ui/",
        "username": READER["username"],
        "password": READER["password"],
        "out": str(folder),
    }
    report = browser_report("console_login.mjs", arguments)
    assert "failure" not in report, report
    # chromium answered the Basic challenge (before the fix it gave up at the 401)
    assert report["status"] == 200
    assert report["session"] == "reader (read only)"
    assert report["errors"] == []
    assert (folder / "console-login.png").stat().st_size > 5_000
