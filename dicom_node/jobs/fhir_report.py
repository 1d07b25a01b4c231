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

import pydicom

from fhir_bridge.resources import ResourceError, SeriesSummary, build_transaction
from fhir_bridge.sr_content import NotAMeasurementReport, read_report

from ..config import FHIR_DESTINATION
from ..index.contents import study_series
from ..index.jobs import add_note
from .context import StudyJobContext


def _series_summaries(context: StudyJobContext, study_uid: str) -> list[SeriesSummary]:
    """The study's series (results included) as ImagingStudy describes them."""
    return [
        SeriesSummary(
            uid=row.series_instance_uid,
            number=row.series_number,
            modality=row.modality,
            description=row.series_description,
            instances=row.instances,
        )
        for row in study_series(context.engine, study_uid)
    ]


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
            _series_summaries(context, str(dataset.StudyInstanceUID)),
            sr_file,
            config.fhir,
        )
    except (ResourceError, NotAMeasurementReport) as error:
        add_note(context.engine, job_id, f"no FHIR report for SR {uid}: {error}")
        return 0
    body = json.dumps(bundle, separators=(",", ":")).encode("utf-8")
    return int(context.outbox.enqueue(FHIR_DESTINATION, uid, [body], job_id))
