"""The typed rows that cross the index's border: what callers hand to the index and what its
queries give back, so no SQLAlchemy row or loose dict leaves this package."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class InstanceAttributes:
    """What the index records of one instance, read from its header."""

    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    instance_number: int | None
    patient_id: str
    issuer_of_patient_id: str
    patient_name: str
    patient_birth_date: str
    patient_sex: str
    study_date: str
    study_time: str
    accession_number: str
    study_id: str
    study_description: str
    referring_physician_name: str
    modality: str
    series_number: int | None
    series_description: str
    body_part_examined: str
    series_date: str
    series_time: str
    #: image geometry, for QIDO-RS instance answers (None when absent)
    rows: int | None = None
    columns: int | None = None
    bits_allocated: int | None = None
    number_of_frames: int | None = None


@dataclass(frozen=True)
class SeriesFiles:
    """A series and its stored files (relative to the storage area), in instance order."""

    series_instance_uid: str
    paths: list[str]


@dataclass(frozen=True)
class SeriesCount:
    """A series of a study as the index describes it, with its number of instances."""

    series_instance_uid: str
    series_number: int | None
    modality: str
    series_description: str
    instances: int


@dataclass(frozen=True)
class StoredFile:
    """An instance's file, and the size its index row promises."""

    sop_instance_uid: str
    path: str
    size: int


@dataclass(frozen=True)
class OutboxRow:
    """One object waiting for (or sent to, or refused by) one destination."""

    id: int
    destination: str
    sop_instance_uid: str
    path: str
    state: str
    attempts: int
    next_attempt_at: float
    last_error: str


@dataclass(frozen=True)
class OwnInstance:
    """One of the node's own results in a study, and its stored file."""

    sop_instance_uid: str
    sop_class_uid: str
    series_number: int | None
    path: str
