"""AI reports to the EHR: a job turns each SR result into a FHIR transaction Bundle (fhir_bridge)
and queues it in the outbox under the destination ``fhir``, beside the DICOM deliveries; the
outbox sender posts it. So a FHIR server that is down gets its reports when it is back, also
after a restart, and every delivery's state shows in ``/status`` and ``dicom-node outbox list``
like a DICOM one. A report the server refuses (4xx) is marked failed at once with the server's
OperationOutcome: sending the same Bundle again would be refused again.
"""

from __future__ import annotations

import io
import json
from typing import TYPE_CHECKING

import pydicom
from sqlalchemy import Engine, func, select

from fhir_bridge.client import FhirClient
from fhir_bridge.resources import ResourceError, SeriesSummary, build_transaction
from fhir_bridge.sr_content import NotAMeasurementReport, read_report

from ..config import FHIR_DESTINATION, ConfigError, NodeConfig
from ..index.jobs import add_note
from ..index.schema import instances, series

if TYPE_CHECKING:
    from .study import StudyJobContext


def open_fhir_client(config: NodeConfig) -> FhirClient | None:
    """The client for ``fhir.base_url`` (None when FHIR is off); a key file that cannot be read
    is a configuration error, reported at start."""
    if not config.fhir.enabled:
        return None
    try:
        return FhirClient(config.fhir)
    except OSError as error:
        raise ConfigError(
            f"fhir.auth.private_key_file: cannot read {error.filename}: {error.strerror}"
        ) from None


def study_series(engine: Engine, study_uid: str) -> list[SeriesSummary]:
    """The study's series as the index holds them (results included), for ImagingStudy."""
    statement = (
        select(
            series.c.series_instance_uid,
            series.c.series_number,
            series.c.modality,
            series.c.series_description,
            func.count(instances.c.sop_instance_uid),
        )
        .join(instances, instances.c.series_instance_uid == series.c.series_instance_uid)
        .where(series.c.study_instance_uid == study_uid)
        .group_by(
            series.c.series_instance_uid,
            series.c.series_number,
            series.c.modality,
            series.c.series_description,
        )
        .order_by(series.c.series_number, series.c.series_instance_uid)
    )
    with engine.connect() as connection:
        return [SeriesSummary(*row) for row in connection.execute(statement)]


def queue_report(context: StudyJobContext, job_id: int, uid: str, sr_file: bytes) -> int:
    """Queue the FHIR Bundle of the stored SR ``uid`` (its file ``sr_file``; the caller checked
    that FHIR is on and the report not queued yet); returns 1 when queued. A report that cannot
    be written as FHIR (no Patient ID, not a TID 1500 report) is a job note, not a failure of
    the job."""
    config = context.config
    dataset = pydicom.dcmread(io.BytesIO(sr_file))
    try:
        report = read_report(dataset)
        bundle = build_transaction(
            report,
            study_series(context.engine, str(dataset.StudyInstanceUID)),
            sr_file,
            config.fhir,
        )
    except (ResourceError, NotAMeasurementReport) as error:
        add_note(context.engine, job_id, f"no FHIR report for SR {uid}: {error}")
        return 0
    body = json.dumps(bundle, separators=(",", ":")).encode("utf-8")
    return int(context.outbox.enqueue(FHIR_DESTINATION, uid, [body], job_id))
