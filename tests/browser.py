"""Running a browser script of tests/viewer (playwright-core driving Debian's chromium) from a
test: where its screenshots go, and the JSON report it prints last."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

VIEWER = Path(__file__).parent / "viewer"
CHROMIUM = Path("/usr/bin/chromium")

needs_chromium = pytest.mark.skipif(
    not CHROMIUM.is_file() or not (VIEWER / "node_modules" / "axe-core").is_dir(),
    reason="needs /usr/bin/chromium and `npm ci --prefix tests/viewer`",
)


def artefacts(tmp_path: Path, name: str) -> Path:
    """The folder for a test's screenshots: kept under $DICOM_NODE_TEST_ARTEFACTS when set."""
    folder = Path(os.environ.get("DICOM_NODE_TEST_ARTEFACTS", tmp_path)) / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def browser_report(script: str, arguments: dict) -> dict:
    """Run tests/viewer/`script` with `arguments`; the report it prints as its last line."""
    run = subprocess.run(
        ["node", str(VIEWER / script), json.dumps(arguments)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=VIEWER,
    )
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.strip().splitlines()[-1])
