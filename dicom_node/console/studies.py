"""The console's studies API: search the index as C-FIND and QIDO-RS do (the same matching), a
study's timeline from what the index recorded, and the two actions an engineer takes on it: run
its job again, retry a delivery now. Every search is an audited query; an action is logged with
who took it, never with patient data."""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass

from fastapi import APIRouter, HTTPException, Request

from ..audit import messages, record
from ..config import FHIR_DESTINATION
from ..dicomweb.context import http_user, user_name
from ..index import jobs
from ..index.counts import study_counts
from ..index.history import Delivery, JobHistory, StudyHistory, last_job_states, study_history
from ..index.query import Level, QueryError, build_query, matching_rows
from ..index.schema import OUTBOX_PENDING, OUTBOX_SENT
from ..index.wildcard import has_wildcard
from .context import ConsoleContext, RowId

log = logging.getLogger(__name__)

#: the most studies one search lists
MAX_STUDIES = 200
_DATE = re.compile(r"\d{4}-?\d{2}-?\d{2}")
#: the study attributes a search lists (index column names)
SHOWN = (
    "study_instance_uid",
    "patient_id",
    "patient_name",
    "patient_birth_date",
    "study_date",
    "study_time",
    "accession_number",
    "study_description",
    "state",
)


def _date(name: str, value: str) -> str:
    """A date as DICOM writes it (YYYYMMDD), from the form's YYYY-MM-DD or YYYYMMDD."""
    if not _DATE.fullmatch(value):
        raise HTTPException(400, f"{name}: {value!r} is not a date (YYYY-MM-DD)")
    return value.replace("-", "")


def identifier(
    patient_id: str, patient_name: str, accession_number: str, date_from: str, date_to: str
) -> dict[str, str]:
    """The C-FIND identifier of a search form: IDs match exactly unless they hold wildcards; a
    name without wildcards matches anywhere in the name, as a person typing part of it means."""
    found = {"PatientID": patient_id.strip(), "AccessionNumber": accession_number.strip()}
    name = patient_name.strip()
    found["PatientName"] = name if not name or has_wildcard(name) else f"*{name}*"
    low = _date("date_from", date_from.strip()) if date_from.strip() else ""
    high = _date("date_to", date_to.strip()) if date_to.strip() else ""
    found["StudyDate"] = f"{low}-{high}" if low != high else low
    return found


@dataclass(frozen=True)
class Event:
    """One line of a study's timeline."""

    at: float
    #: received, stable, job, step, held back, note, done, failed, results, delivery, fhir
    kind: str
    text: str
    #: seconds it took (a job, a step); None when it did not finish
    duration: float | None = None


def _earlier_attempts(job: JobHistory) -> list[Event]:
    """The attempts before the latest (which the job row itself dates): each start, and its end
    with its outcome and duration, or that it did not finish."""
    events = []
    for earlier in job.attempt_times:
        if earlier.attempt >= job.attempts:
            continue
        name = f"job {job.id} attempt {earlier.attempt}"
        if earlier.finished_at is None:
            events.append(Event(earlier.started_at, "job", f"{name} started (did not finish)"))
            continue
        events.append(Event(earlier.started_at, "job", f"{name} started"))
        text = f"{name} {earlier.state}" + (f": {earlier.error}" if earlier.error else "")
        took = earlier.finished_at - earlier.started_at
        events.append(Event(earlier.finished_at, earlier.state or "note", text, took))
    return events


def _job_events(job: JobHistory) -> list[Event]:
    events = [Event(job.created_at, "stable", f"study stable: job {job.id} made")]
    events += _earlier_attempts(job)
    if job.started_at is not None:
        text = f"job {job.id} started (attempt {job.attempts})"
        events.append(Event(job.started_at, "job", text))
    for step in job.steps:
        took = None if step.finished_at is None else step.finished_at - step.started_at
        text = step.name if took is not None else f"{step.name} (did not finish)"
        events.append(Event(step.started_at, "step", text, took))
    for note in job.notes:
        kind = "held back" if "held back" in note.text else "note"
        events.append(Event(note.at, kind, note.text))
    if job.state in ("done", "failed"):
        text = f"job {job.id} {job.state}" + (f": {job.error}" if job.error else "")
        took = None if job.started_at is None else job.updated_at - job.started_at
        events.append(Event(job.updated_at, job.state, text, took))
    return events


def _delivery_events(deliveries: list[Delivery]) -> list[Event]:
    """Deliveries by destination (a series forwarded to research is hundreds of objects): when
    they were queued, and each outcome with its latest time and the peer's latest answer."""
    events = []
    by_destination: dict[str, list[Delivery]] = {}
    for delivery in deliveries:
        by_destination.setdefault(delivery.destination, []).append(delivery)
    for destination, rows in by_destination.items():
        fhir = destination == FHIR_DESTINATION
        kind, what = ("fhir", "FHIR report(s)") if fhir else ("delivery", "object(s)")
        first = min(row.created_at for row in rows)
        events.append(Event(first, kind, f"{len(rows)} {what} queued for {destination}"))
        by_state: dict[str, list[Delivery]] = {}
        for row in rows:
            if row.attempts or row.state != OUTBOX_PENDING:  # tried at least once
                by_state.setdefault(row.state, []).append(row)
        for state, same in by_state.items():
            latest = max(same, key=lambda row: row.updated_at)
            if state == OUTBOX_SENT:
                text = f"{len(same)} {what} sent to {destination}"
            else:
                text = f"{len(same)} {what} {state} for {destination} after up to "
                text += f"{max(row.attempts for row in same)} attempt(s); "
                text += f"the peer answered: {latest.last_error}"
            events.append(Event(latest.updated_at, kind, text))
    return events


def timeline(history: StudyHistory) -> list[Event]:
    """The study's events in time order, each with its time, kind and a line of text (and how
    long it took, for a job and its steps)."""
    events: list[Event] = []
    if history.received:
        got = history.received
        events.append(Event(got.first_at, "received", "first instance received"))
        text = f"last instance received ({got.instances} instance(s))"
        events.append(Event(got.last_at, "received", text))
    for job in history.jobs:
        events.extend(_job_events(job))
    if history.results:
        text = f"{history.results.instances} result(s) stored in the study"
        events.append(Event(history.results.first_at, "results", text))
    events.extend(_delivery_events(history.deliveries))
    return sorted(events, key=lambda event: event.at)


def router(context: ConsoleContext) -> APIRouter:
    """The studies search, a study's timeline and the two actions."""
    routes = APIRouter()

    @routes.get("/studies")
    def search(
        request: Request,
        patient_id: str = "",
        patient_name: str = "",
        accession_number: str = "",
        date_from: str = "",
        date_to: str = "",
        limit: int = 50,
    ) -> dict[str, object]:
        """The studies matching the form, newest first (study date and time), at most ``limit``."""
        limit = min(max(limit, 1), MAX_STUDIES)
        asked = identifier(patient_id, patient_name, accession_number, date_from, date_to)
        try:
            query = build_query(Level.STUDY, asked)
        except QueryError as error:
            raise HTTPException(400, str(error)) from None
        user = http_user(request, messages.SOURCE)
        record(messages.query(user, request.url.path, messages.URI, request.url.query.encode()))
        rows = list(matching_rows(context.engine, query, limit + 1, newest_first=True))
        uids = [row["study_instance_uid"] for row in rows[:limit]]
        counts = study_counts(context.engine, uids)
        job_states = last_job_states(context.engine, uids)
        found = []
        for row in rows[:limit]:
            study: dict[str, object] = {name: row[name] for name in SHOWN}
            numbers = counts.get(row["study_instance_uid"])
            study["modalities"] = numbers.modalities if numbers else []
            study["instances"] = numbers.instances if numbers else 0
            study["job"] = job_states.get(row["study_instance_uid"], "")
            found.append(study)
        return {"studies": found, "more": len(rows) > limit}

    @routes.get("/studies/{study_uid}")
    def study(study_uid: str) -> dict[str, object]:
        """The study's attributes, its timeline, its jobs and its deliveries."""
        try:
            query = build_query(Level.STUDY, {"StudyInstanceUID": study_uid})
        except QueryError as error:
            raise HTTPException(400, str(error)) from None
        rows = list(matching_rows(context.engine, query, 1))
        if not rows:
            raise HTTPException(404, "no such study in the index")
        history = study_history(context.engine, study_uid, context.config.ae_title)
        return {
            "study": {name: rows[0][name] for name in SHOWN},
            "timeline": [asdict(event) for event in timeline(history)],
            "jobs": [
                {"id": job.id, "state": job.state, "attempts": job.attempts, "error": job.error}
                for job in history.jobs
            ],
            "deliveries": [
                {
                    "id": item.id,
                    "destination": item.destination,
                    "sop_instance_uid": item.sop_instance_uid,
                    "state": item.state,
                    "attempts": item.attempts,
                    "last_error": item.last_error,
                    "updated_at": item.updated_at,
                }
                for item in history.deliveries
            ],
        }

    @routes.post("/jobs/{job_id}/retry")
    def retry_job(job_id: RowId, request: Request) -> dict[str, object]:
        """Run a finished or failed job again (what `dicom-node jobs retry` does)."""
        if jobs.get(context.engine, job_id) is None:
            raise HTTPException(404, f"no job {job_id}")
        if not jobs.retry(context.engine, job_id):
            raise HTTPException(409, f"job {job_id} is pending or running: it runs already")
        log.info("console: %s put job %d back to pending", user_name(request), job_id)
        return {"id": job_id, "state": "pending"}

    @routes.post("/deliveries/{delivery_id}/retry")
    def retry_delivery(delivery_id: RowId, request: Request) -> dict[str, object]:
        """Try a delivery that is not through again now (what `dicom-node outbox retry` does)."""
        if not context.box.retry([delivery_id]):
            raise HTTPException(409, f"delivery {delivery_id} does not exist or went through")
        log.info("console: %s made delivery %d due now", user_name(request), delivery_id)
        return {"id": delivery_id, "state": "pending"}

    return routes
