"""The audit messages of what leaves the node (IHE ATNA): the destination as a participant,
and the studies of the objects delivered, read from their headers before the outbox removes
them. Shared by every destination kind and by the jobs that queue research copies."""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from pathlib import Path

import pydicom
from pydicom import Dataset

from ...audit import messages, record
from ...config import FHIR_DESTINATION, NodeConfig


def destination(config: NodeConfig, name: str) -> messages.Participant:
    """A configured destination by its name: its AE title and host, its DICOMweb URL, or the
    FHIR server's base URL."""
    if name == FHIR_DESTINATION:
        return messages.Participant(str(config.fhir.base_url), False, messages.DESTINATION)
    peer = config.peers.get(name)
    if peer is not None and peer.dicomweb_url is not None:
        return messages.Participant(str(peer.dicomweb_url), False, messages.DESTINATION)
    if peer is not None and peer.address is not None:
        address = peer.address
        return messages.Participant(address.ae_title, False, messages.DESTINATION, address.host)
    return messages.Participant(name, False, messages.DESTINATION)


def header(source: bytes | Path) -> Dataset:
    """The header of a queued object, its bytes in memory or its file (read up to the pixels)."""
    return pydicom.dcmread(
        io.BytesIO(source) if isinstance(source, bytes) else source, stop_before_pixels=True
    )


def record_sent(config: NodeConfig, name: str, headers: Iterable[Dataset]) -> None:
    """Instances delivered to `name` (results or research copies, as they left)."""
    studies = messages.studies_from_headers(headers)
    if studies:
        record(messages.instances_sent(destination(config, name), studies))


def record_report_posted(config: NodeConfig, bundle: bytes) -> None:
    """A DiagnosticReport transaction accepted by the FHIR server: the study and patient it
    names (the ImagingStudy's DICOM UID, the Patient's identifier)."""
    study_uid = patient_id = ""
    for entry in json.loads(bundle).get("entry", []):
        resource = entry.get("resource", {})
        identifiers = [i.get("value", "") for i in resource.get("identifier", [])]
        if resource.get("resourceType") == "ImagingStudy":
            study_uid = next((v[8:] for v in identifiers if v.startswith("urn:oid:")), study_uid)
        elif resource.get("resourceType") == "Patient" and identifiers:
            patient_id = identifiers[0]
    study = messages.StudyData(study_uid, patient_id)
    study.add("DiagnosticReport")
    record(
        messages.export(
            [destination(config, FHIR_DESTINATION)], [study], "FHIR DiagnosticReport posted"
        )
    )
