"""The house's rules, checked rather than drawn: the import-linter contracts of setup.cfg (the
flow's layers, no circles, `inference` and `fhir_bridge` free of the node) and mypy on the
packages kept type-clean."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: the packages mypy must find clean (the others are listed in the README as not yet)
TYPED = [
    "dicom_node/audit",
    "dicom_node/config",
    "dicom_node/deid",
    "dicom_node/index",
    "dicom_node/jobs",
    "dicom_node/outbox",
    "dicom_node/store",
    "dicom_node/serve",
    "dicom_node/cli",
    "dicom_node/dimse",
    "dicom_node/dicomweb",
    "dicom_node/console",
    "fhir_bridge",
]


def _tool(name: str) -> str:
    return shutil.which(name, path=str(Path(sys.executable).parent)) or name


def test_import_contracts_hold():
    result = subprocess.run(
        [_tool("lint-imports"), "--no-cache"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_typed_packages_are_mypy_clean():
    result = subprocess.run(
        [sys.executable, "-m", "mypy", *TYPED], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout[-6000:]
