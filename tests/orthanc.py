"""Orthanc (Debian package) on loopback as the PACS peer of a test: started, stopped and
restarted on the same ports and storage, and asked through its REST API what it holds."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import requests

from .conftest import TOOL_ENV, free_port, wait_for_port

ORTHANC = "/usr/sbin/Orthanc"
#: Debian's orthanc-dicomweb
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


class OrthancPeer:
    """One Orthanc server with AE title ORTHANC, taking C-STORE from any calling AE."""

    def __init__(self, folder: Path, dicomweb: bool = False, settings: dict | None = None) -> None:
        self.dicom_port = free_port()
        self.http_port = free_port()
        self.config = folder / "orthanc.json"
        folder.mkdir(parents=True, exist_ok=True)
        self.config.write_text(
            json.dumps(
                {
                    "Name": "test",
                    "StorageDirectory": str(folder / "storage"),
                    "IndexDirectory": str(folder / "storage"),
                    "DicomAet": "ORTHANC",
                    "DicomPort": self.dicom_port,
                    "HttpPort": self.http_port,
                    "RemoteAccessAllowed": False,
                    "AuthenticationEnabled": False,
                    "Plugins": [DICOMWEB_PLUGIN] if dicomweb else [],
                    "DicomWeb": {"Enable": dicomweb, "Root": "/dicom-web/"},
                    **(settings or {}),
                }
            )
        )
        self._process: subprocess.Popen | None = None

    @property
    def dicomweb_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/dicom-web"

    @property
    def peer(self) -> dict:
        """The node's `peers` entry for this server."""
        return {"ae_title": "ORTHANC", "host": "127.0.0.1", "port": self.dicom_port}

    @property
    def pid(self) -> int:
        """The running server's process id (for a benchmark's CPU figures)."""
        assert self._process is not None, "Orthanc is not started"
        return self._process.pid

    def start(self) -> None:
        self._process = subprocess.Popen(
            [ORTHANC, str(self.config)],
            env=TOOL_ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.dicom_port, self._process)
        wait_for_port(self.http_port, self._process)

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=30)
            self._process = None

    def get(self, path: str):
        answer = requests.get(f"http://127.0.0.1:{self.http_port}{path}", timeout=30)
        answer.raise_for_status()
        return answer.json()

    def instances_of_study(self, study_uid: str) -> list[dict]:
        """Each instance Orthanc holds in the study: its main DICOM tags and its series'."""
        found = []
        for study in self.get("/studies?expand"):
            if study["MainDicomTags"]["StudyInstanceUID"] != study_uid:
                continue
            for series in self.get(f"/studies/{study['ID']}/series?expand"):
                for instance in self.get(f"/series/{series['ID']}/instances?expand"):
                    found.append({**series["MainDicomTags"], **instance["MainDicomTags"]})
        return found

    def file(self, sop_instance_uid: str) -> bytes:
        (match,) = requests.post(
            f"http://127.0.0.1:{self.http_port}/tools/find",
            json={"Level": "Instance", "Query": {"SOPInstanceUID": sop_instance_uid}},
            timeout=30,
        ).json()
        answer = requests.get(
            f"http://127.0.0.1:{self.http_port}/instances/{match}/file", timeout=30
        )
        answer.raise_for_status()
        return answer.content
