"""Running a browser script of tests/viewer (playwright-core driving Debian's chromium) from a
test: the mark that skips it where chromium or the scripts' packages are missing, where its
screenshots go, the JSON report it prints last, and which axe-core violations fail a test."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

VIEWER = Path(__file__).parent / "viewer"
CHROMIUM = Path("/usr/bin/chromium")

PACKAGES = ("playwright-core", "axe-core")

needs_chromium = pytest.mark.skipif(
    not CHROMIUM.is_file() or not all((VIEWER / "node_modules" / p).is_dir() for p in PACKAGES),
    reason="needs /usr/bin/chromium and `npm ci --prefix tests/viewer`",
)


def artefacts(tmp_path: Path, name: str) -> Path:
    """The folder for a test's screenshots: kept under $DICOM_NODE_TEST_ARTEFACTS when set."""
    folder = Path(os.environ.get("DICOM_NODE_TEST_ARTEFACTS", tmp_path)) / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def browser_report(script: str, arguments: dict, timeout: float = 120) -> dict:
    """Run tests/viewer/`script` with `arguments`; the report it prints as its last line, also
    kept as report.json beside the screenshots (``arguments["out"]``) for a person to read."""
    run = subprocess.run(
        ["node", str(VIEWER / script), json.dumps(arguments)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=VIEWER,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    if "out" in arguments:
        (Path(arguments["out"]) / "report.json").write_text(json.dumps(report, indent=1))
    return report


def serious(violations: list[dict]) -> list[dict]:
    """axe-core's serious and critical violations: those a console page must not have."""
    return [v for v in violations if v["impact"] in ("serious", "critical")]
