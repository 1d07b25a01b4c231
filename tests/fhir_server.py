"""The tests' FHIR server: Medplum's FHIR router (npm, under tests/fhir_server/) behind a wrapper
that validates every resource against the FHIR R4 structure definitions, on loopback; started,
stopped and restarted on the same port, and searched through its REST API."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import requests

from .conftest import free_port, wait_for_port

SERVER = Path(__file__).parent / "fhir_server"


class FhirServer:
    """One in-memory FHIR R4 server; ``auth`` as server.mjs takes it (``none``, ``bearer:T``...).
    It keeps its resources while it runs: a restart starts empty."""

    def __init__(self, auth: str = "none") -> None:
        if not (SERVER / "node_modules" / "@medplum" / "fhir-router").is_dir():
            pytest.fail(f"the FHIR server is not installed: run npm ci --prefix {SERVER}")
        self.port = free_port()
        self.auth = auth
        self._process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/fhir/R4"

    @property
    def token_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def start(self) -> None:
        self._process = subprocess.Popen(
            ["node", "server.mjs", str(self.port), self.auth],
            cwd=SERVER,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, self._process)

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=30)
            self._process = None

    def search(self, kind: str, headers: dict | None = None, **params: str) -> list[dict]:
        """The resources a search finds (one page is plenty here)."""
        answer = requests.get(
            f"{self.base_url}/{kind}",
            params={**params, "_count": "1000"},
            headers=headers,
            timeout=30,
        )
        answer.raise_for_status()
        return [entry["resource"] for entry in answer.json().get("entry", [])]

    def reports_of_patient(self, system: str, value: str) -> list[dict]:
        """DiagnosticReports of the patient with this identifier (found first by identifier)."""
        patients = self.search("Patient", identifier=f"{system}|{value}")
        assert len(patients) == 1, f"{len(patients)} patients with identifier {value}"
        return self.search("DiagnosticReport", subject=f"Patient/{patients[0]['id']}")
