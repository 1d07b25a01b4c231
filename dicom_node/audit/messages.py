"""Audit messages as DICOM PS3.15 Annex A.5 defines them (the IHE ATNA format).

An `AuditEvent` says what happened, who took part and which patient's and study's data were
involved; `to_xml` writes it as one ``AuditMessage`` that validates against the schema of
PS3.15 A.5.1, the node itself added as an active participant and as the audit source. The
functions below the data types build the node's events, so each caller names the facts and
never the codes.
"""

from __future__ import annotations

import base64
import ipaddress
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum
from functools import lru_cache

from pydicom import Dataset


@dataclass(frozen=True)
class Code:
    """A coded value: code, coding scheme, meaning (``csd-code``, ``codeSystemName``,
    ``originalText``)."""

    code: str
    system: str
    meaning: str


def _dcm(code: str, meaning: str) -> Code:
    return Code(code, "DCM", meaning)


# Event IDs (PS3.16 CID 400) and event types (CID 401) used by the node.
APPLICATION_ACTIVITY = _dcm("110100", "Application Activity")
INSTANCES_ACCESSED = _dcm("110103", "DICOM Instances Accessed")
INSTANCES_TRANSFERRED = _dcm("110104", "DICOM Instances Transferred")
EXPORT = _dcm("110106", "Export")
QUERY = _dcm("110112", "Query")
SECURITY_ALERT = _dcm("110113", "Security Alert")
USER_AUTHENTICATION = _dcm("110114", "User Authentication")
APPLICATION_START = _dcm("110120", "Application Start")
APPLICATION_STOP = _dcm("110121", "Application Stop")
LOGIN = _dcm("110122", "Login")
NODE_AUTHENTICATION = _dcm("110126", "Node Authentication")
SOFTWARE_CONFIGURATION = _dcm("110131", "Software Configuration")
RESTRICTED_FUNCTION = _dcm("110132", "Use of a restricted function")
# Active participant roles (CID 402).
APPLICATION = _dcm("110150", "Application")
APPLICATION_LAUNCHER = _dcm("110151", "Application Launcher")
DESTINATION = _dcm("110152", "Destination Role ID")
SOURCE = _dcm("110153", "Source Role ID")
# Participant object ID types (CID 404, and RFC 3881's own).
STUDY_INSTANCE_UID = _dcm("110180", "Study Instance UID")
SOP_CLASS_UID = _dcm("110181", "SOP Class UID")
PATIENT_NUMBER = Code("2", "RFC-3881", "Patient Number")
URI = Code("12", "RFC-3881", "URI")


class Outcome(IntEnum):
    """EventOutcomeIndicator."""

    SUCCESS = 0
    MINOR_FAILURE = 4
    SERIOUS_FAILURE = 8


class Action:
    """EventActionCode."""

    CREATE = "C"
    READ = "R"
    EXECUTE = "E"


@dataclass(frozen=True)
class Participant:
    """Someone or something taking part: a peer AE, an HTTP user, a destination."""

    user_id: str
    requestor: bool = False
    role: Code | None = None
    #: a host name or IP address (NetworkAccessPointID)
    address: str | None = None
    alternative_id: str | None = None


@dataclass
class StudyData:
    """One study's part in an event: its patient and how many instances of each SOP class.
    Mutable so that an association or a request can count its instances as they come."""

    study_uid: str
    patient_id: str = ""
    patient_name: str = ""
    sop_classes: dict[str, int] = field(default_factory=dict)

    def add(self, sop_class: str, count: int = 1) -> None:
        self.sop_classes[sop_class] = self.sop_classes.get(sop_class, 0) + count


@dataclass(frozen=True)
class ParticipantObject:
    """A ParticipantObjectIdentification: a patient, a study, a query, a report, a file."""

    object_id: str
    id_type: Code
    type_code: int
    role: int
    name: str | None = None
    query: bytes | None = None
    details: tuple[tuple[str, bytes], ...] = ()
    sop_classes: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class AuditEvent:
    """What happened; the node takes part as ``node_role``, as the requestor or not."""

    event_id: Code
    action: str
    outcome: Outcome = Outcome.SUCCESS
    types: tuple[Code, ...] = ()
    description: str | None = None
    node_role: Code | None = None
    node_requestor: bool = False
    participants: tuple[Participant, ...] = ()
    objects: tuple[ParticipantObject, ...] = ()


@dataclass(frozen=True)
class AuditSource:
    """The node as it signs its messages: its AE title, host and process."""

    ae_title: str
    host: str
    process_id: int


# XML 1.0 allows neither control characters nor unpaired surrogates; peers choose AE titles
# and patient names, so they are replaced rather than trusted.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _clean(text: str) -> str:
    return _NOT_XML.sub("\ufffd", text)


def _coded(parent: ET.Element, tag: str, code: Code) -> None:
    ET.SubElement(
        parent,
        tag,
        {"csd-code": code.code, "codeSystemName": code.system, "originalText": code.meaning},
    )


@lru_cache(maxsize=1024)  # a few clients' addresses, in every message (ip_address is slow)
def _is_ip(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


def _participant(parent: ET.Element, participant: Participant) -> None:
    attributes = {
        "UserID": _clean(participant.user_id),
        "UserIsRequestor": "true" if participant.requestor else "false",
    }
    if participant.alternative_id:
        attributes["AlternativeUserID"] = _clean(participant.alternative_id)
    if participant.address:
        attributes["NetworkAccessPointID"] = _clean(participant.address)
        attributes["NetworkAccessPointTypeCode"] = "2" if _is_ip(participant.address) else "1"
    element = ET.SubElement(parent, "ActiveParticipant", attributes)
    if participant.role is not None:
        _coded(element, "RoleIDCode", participant.role)


def _object(parent: ET.Element, item: ParticipantObject) -> None:
    attributes = {
        "ParticipantObjectID": _clean(item.object_id),
        "ParticipantObjectTypeCode": str(item.type_code),
        "ParticipantObjectTypeCodeRole": str(item.role),
    }
    element = ET.SubElement(parent, "ParticipantObjectIdentification", attributes)
    _coded(element, "ParticipantObjectIDTypeCode", item.id_type)
    if item.query is not None:
        ET.SubElement(element, "ParticipantObjectQuery").text = base64.b64encode(
            item.query
        ).decode()
    else:
        ET.SubElement(element, "ParticipantObjectName").text = _clean(item.name or item.object_id)
    for kind, value in item.details:
        ET.SubElement(
            element,
            "ParticipantObjectDetail",
            {"type": kind, "value": base64.b64encode(value).decode()},
        )
    if item.sop_classes:
        description = ET.SubElement(element, "ParticipantObjectDescription")
        for uid, count in sorted(item.sop_classes.items()):
            ET.SubElement(
                description, "SOPClass", {"UID": _clean(uid), "NumberOfInstances": str(count)}
            )


def to_xml(event: AuditEvent, source: AuditSource, when: datetime) -> bytes:
    """The message as one line of UTF-8 XML (new lines in values written as references)."""
    root = ET.Element("AuditMessage")
    identification = ET.SubElement(
        root,
        "EventIdentification",
        {
            "EventActionCode": event.action,
            "EventDateTime": when.isoformat(timespec="milliseconds"),
            "EventOutcomeIndicator": str(int(event.outcome)),
        },
    )
    _coded(identification, "EventID", event.event_id)
    for code in event.types:
        _coded(identification, "EventTypeCode", code)
    if event.description:
        ET.SubElement(identification, "EventOutcomeDescription").text = _clean(event.description)
    node = Participant(
        source.ae_title,
        event.node_requestor,
        event.node_role,
        source.host,
        alternative_id=str(source.process_id),
    )
    for participant in (node, *event.participants):
        _participant(root, participant)
    audit_source = ET.SubElement(
        root, "AuditSourceIdentification", {"AuditSourceID": source.ae_title}
    )
    ET.SubElement(audit_source, "AuditSourceTypeCode", {"csd-code": "4"})  # application server
    for item in event.objects:
        _object(root, item)
    text = ET.tostring(root, encoding="unicode")
    return text.replace("\n", "&#10;").replace("\r", "&#13;").encode()


# The participant objects the node's events name.


def _study_objects(studies: Iterable[StudyData]) -> tuple[ParticipantObject, ...]:
    """Each study, with its instances per SOP class, and its patient (each patient once)."""
    objects: list[ParticipantObject] = []
    patients: set[tuple[str, str]] = set()
    for study in studies:
        if (study.patient_id, study.patient_name) not in patients:
            patients.add((study.patient_id, study.patient_name))
            name = study.patient_name or study.patient_id
            objects.append(ParticipantObject(study.patient_id, PATIENT_NUMBER, 1, 1, name=name))
        objects.append(
            ParticipantObject(
                study.study_uid, STUDY_INSTANCE_UID, 2, 3, sop_classes=dict(study.sop_classes)
            )
        )
    return tuple(objects)


# The node's events.


def application_activity(started: bool, launcher: str) -> AuditEvent:
    """The node started or stopped (PS3.15 A.5.3.1); `launcher` is the operating system user."""
    return AuditEvent(
        APPLICATION_ACTIVITY,
        Action.EXECUTE,
        types=(APPLICATION_START if started else APPLICATION_STOP,),
        node_role=APPLICATION,
        participants=(Participant(launcher, True, APPLICATION_LAUNCHER),),
    )


def configuration_loaded(path: str, digest: bytes) -> AuditEvent:
    """The configuration file the node runs with, named with its SHA-256 (a Security Alert of
    type Software Configuration, A.5.3.11)."""
    return AuditEvent(
        SECURITY_ALERT,
        Action.EXECUTE,
        types=(SOFTWARE_CONFIGURATION,),
        description="configuration loaded",
        node_role=APPLICATION,
        node_requestor=True,
        objects=(ParticipantObject(path, URI, 2, 13, details=(("SHA-256", digest),)),),
    )


def association(peer: Participant, accepted: bool, reason: str = "") -> AuditEvent:
    """A DICOM association accepted (a User Authentication: Login), or rejected (a Security
    Alert: Node Authentication failed) with the reason."""
    if accepted:
        return AuditEvent(USER_AUTHENTICATION, Action.EXECUTE, types=(LOGIN,), participants=(peer,))
    return AuditEvent(
        SECURITY_ALERT,
        Action.EXECUTE,
        Outcome.MINOR_FAILURE,
        types=(NODE_AUTHENTICATION,),
        description=f"association rejected: {reason}",
        participants=(peer,),
    )


def access_denied(user: Participant, resource: str, reason: str, authenticated: bool) -> AuditEvent:
    """A DICOMweb request refused: failed authentication (a User Authentication: Login that
    failed), or credentials that do not allow the action (a Security Alert: Use of a restricted
    function)."""
    return AuditEvent(
        SECURITY_ALERT if authenticated else USER_AUTHENTICATION,
        Action.EXECUTE,
        Outcome.MINOR_FAILURE,
        types=(RESTRICTED_FUNCTION if authenticated else LOGIN,),
        description=reason,
        participants=(user,),
        objects=(ParticipantObject(resource, URI, 2, 4),),
    )


def instances_stored(sender: Participant, studies: Iterable[StudyData]) -> AuditEvent:
    """Instances received from `sender` (C-STORE, STOW-RS): the node is the destination."""
    return AuditEvent(
        INSTANCES_TRANSFERRED,
        Action.CREATE,
        node_role=DESTINATION,
        participants=(sender,),
        objects=_study_objects(studies),
    )


def instances_sent(
    destination: Participant,
    studies: Iterable[StudyData],
    requestor: Participant | None = None,
    outcome: Outcome = Outcome.SUCCESS,
    description: str | None = None,
) -> AuditEvent:
    """Instances sent by the node (C-MOVE, C-GET, WADO-RS, results to a peer); `requestor` is
    who asked for them when it is not the destination (a C-MOVE's caller), and with no
    requestor at all the node sent them on its own initiative."""
    participants = (destination,) if requestor is None else (destination, requestor)
    return AuditEvent(
        INSTANCES_TRANSFERRED,
        Action.READ,
        outcome,
        description=description,
        node_role=SOURCE,
        node_requestor=not any(p.requestor for p in participants),
        participants=participants,
        objects=_study_objects(studies),
    )


def query(
    requestor: Participant, what: str, what_type: Code, request: bytes, transfer_syntax: str = ""
) -> AuditEvent:
    """A query (C-FIND with its SOP class and identifier, QIDO-RS with its URL and query
    string) answered by the node (A.5.3.10)."""
    details = (("TransferSyntax", transfer_syntax.encode()),) if transfer_syntax else ()
    return AuditEvent(
        QUERY,
        Action.EXECUTE,
        node_role=DESTINATION,
        participants=(requestor,),
        objects=(ParticipantObject(what, what_type, 2, 3, query=request, details=details),),
    )


def instances_accessed(studies: Iterable[StudyData], description: str) -> AuditEvent:
    """The node read instances for its own use (a de-identified copy made for a model,
    A.5.3.5): the node is the only participant, and the requestor."""
    return AuditEvent(
        INSTANCES_ACCESSED,
        Action.READ,
        description=description,
        node_role=APPLICATION,
        node_requestor=True,
        objects=_study_objects(studies),
    )


def export(
    destinations: Iterable[Participant], studies: Iterable[StudyData], description: str
) -> AuditEvent:
    """Data of these studies leaving for other systems on the node's initiative (research
    copies, de-identified; a FHIR report, A.5.3.6): the node is the source."""
    return AuditEvent(
        EXPORT,
        Action.READ,
        description=description,
        node_role=SOURCE,
        node_requestor=True,
        participants=tuple(destinations),
        objects=_study_objects(studies),
    )


def studies_of_instances(instances: Iterable[tuple[str, str, str, str]]) -> list[StudyData]:
    """The studies of instances given as (study UID, patient ID, patient name, SOP class),
    each with its patient and its instances counted by SOP class."""
    found: dict[str, StudyData] = {}
    for study_uid, patient_id, patient_name, sop_class in instances:
        if study_uid not in found:
            found[study_uid] = StudyData(study_uid, patient_id, patient_name)
        found[study_uid].add(sop_class)
    return list(found.values())


def studies_from_headers(headers: Iterable[Dataset]) -> list[StudyData]:
    """The studies of these datasets, each with its patient and instances by SOP class."""
    return studies_of_instances(
        (
            str(h.get("StudyInstanceUID", "")),
            str(h.get("PatientID", "")),
            str(h.get("PatientName", "")),
            str(h.get("SOPClassUID", "")),
        )
        for h in headers
    )
