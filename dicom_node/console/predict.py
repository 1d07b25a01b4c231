"""Upload and predict, the console's API under `/ui/api/predict`: the models a person may choose
(the installed bundles with their model cards), a PNG/JPEG picture stored as a Secondary Capture
through the ingest path, a job started at once for an uploaded study with the chosen models
(DICOM files are stored by the page through STOW-RS, the same path as any DICOMweb client), and
the job's state with the results it stored.

An upload is complete when its request ends, so its job does not wait `study.stable_seconds`.
The INFO log names neither the patient nor the study (a UID may carry an accession number)."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field, ValidationError
from pydicom.uid import UID
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from inference.bundle import Bundle, BundleError
from inference.result_codes import check_result_codes

from ..audit import messages, record
from ..dicomweb.context import http_user, user_name
from ..index import jobs
from ..index.contents import received_series
from ..index.rows import InstanceAttributes
from ..index.schema import JOB_DONE, JOB_FAILED
from ..index.studies import complete_with_models
from ..jobs.bundles import load_bundles
from ..store.ingest import Ingest, StoreFailure
from ..store.own_instances import encode_instance
from .context import ConsoleContext, RowId
from .picture import PictureDetails, PictureRefused, picture_to_dicom
from .results import study_results

log = logging.getLogger(__name__)

#: the form fields of a picture upload besides the file and the models
_DETAILS = tuple(PictureDetails.model_fields)


class JobRequest(BaseModel):
    """A job for a study the page has just stored through STOW-RS."""

    study: str = Field(min_length=1, max_length=64, pattern=r"^[0-9.]+$")
    models: list[str] = Field(min_length=1, max_length=16)


def usable_bundles(context: ConsoleContext) -> dict[str, Bundle]:
    """The installed bundles whose results the node can encode (the others would fail the
    job), by name."""
    usable = {}
    for name, bundle in load_bundles(context.config.inference, encodes_results=False).items():
        try:
            check_result_codes(bundle)
        except BundleError as error:
            log.info("console: model %s not offered: %s", name, error)
            continue
        usable[name] = bundle
    return usable


def model_card(bundle: Bundle) -> dict[str, object]:
    """What the dropdown and the model card show of a bundle (its metadata and docs/README.md)."""
    card = bundle.path / "docs" / "README.md"
    return {
        "name": bundle.name,
        "title": bundle.metadata.get("name", bundle.name),
        "version": bundle.version,
        "task": bundle.task,
        "description": bundle.metadata.get("description", ""),
        "intended_use": bundle.metadata.get("intended_use", ""),
        "limitations": bundle.metadata.get("limitations", ""),
        "labels": [bundle.labels[k] for k in sorted(bundle.labels)],
        "threshold": bundle.threshold if bundle.task == "classification" else None,
        "card": card.read_text() if card.is_file() else "",
    }


def _chosen(models: list[str], bundles: dict[str, Bundle]) -> list[str]:
    unknown = sorted(set(models) - set(bundles))
    if unknown:
        raise HTTPException(
            400, f"unknown models: {', '.join(unknown)} (installed: {', '.join(sorted(bundles))})"
        )
    if not models:
        raise HTTPException(400, "choose at least one model")
    return list(dict.fromkeys(models))


def _start(context: ConsoleContext, study: str, models: list[str]) -> dict[str, object]:
    job_id = complete_with_models(context.engine, study, models, time.time())
    log.info("console: job %d started with models %s", job_id, ", ".join(models))
    return {"job": job_id, "study": study}


async def _picture_form(request: Request, limit: int) -> tuple[bytes, PictureDetails, list[str]]:
    """The picture, its details and the models of a multipart/form-data upload of at most
    ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if not declared.isdigit():
        raise HTTPException(411, "a picture upload needs a Content-Length")
    if int(declared) > limit:
        raise HTTPException(
            413, f"the upload is larger than http.dicomweb.max_stow_part_bytes ({limit} bytes)"
        )
    try:
        async with request.form(max_files=1, max_fields=len(_DETAILS) + 16) as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise HTTPException(400, "the form has no file field named 'file'")
            fields = {k: str(form[k]) for k in _DETAILS if k in form}
            models = [str(m) for m in form.getlist("models")]
            data = await upload.read()
    except HTTPException:
        raise
    except Exception as error:  # python-multipart's and starlette's parse errors
        raise HTTPException(400, f"the form cannot be read: {error}") from None
    try:
        details = PictureDetails(**fields)
    except ValidationError as error:
        problems = "; ".join(f"{e['loc'][0]}: {e['msg']}" for e in error.errors())
        raise HTTPException(422, problems) from None
    return data, details, models


def _store_picture(
    ingest: Ingest, data: bytes, details: PictureDetails, user: str
) -> InstanceAttributes:
    """The picture wrapped and stored through the ingest path (as STOW-RS stores a part)."""
    encoded = encode_instance(picture_to_dicom(data, details, user), "")
    attributes = encoded.item.attributes
    ingest.store(
        encoded.chunks[1],
        UID(encoded.item.transfer_syntax_uid),
        attributes.sop_class_uid,
        attributes.sop_instance_uid,
        "",
    )
    return attributes


def router(context: ConsoleContext) -> APIRouter:
    routes = APIRouter(prefix="/predict", tags=["console: upload and predict"])
    bundles = usable_bundles(context)

    @routes.get("/models")
    def models() -> list[dict[str, object]]:
        """The models a person may choose, with their model cards."""
        return [model_card(bundle) for bundle in bundles.values()]

    @routes.post("/picture", status_code=202)
    async def picture(request: Request) -> dict[str, object]:
        """A PNG/JPEG picture as a Secondary Capture of a new study, and its job."""
        if context.ingest is None:
            raise HTTPException(503, "this process does not store instances")
        limit = context.config.http.dicomweb.max_stow_part_bytes
        data, details, chosen = await _picture_form(request, limit)
        chosen = _chosen(chosen, bundles)
        user = user_name(request)
        try:
            attributes = await run_in_threadpool(
                _store_picture, context.ingest, data, details, user
            )
        except PictureRefused as refused:
            log.warning("console: picture refused (%d): %s", refused.status, refused.reason)
            raise HTTPException(refused.status, refused.reason) from None
        except StoreFailure as failure:
            log.warning("console: picture not stored (%s): %s", failure.reason, failure.comment)
            raise HTTPException(409, f"the picture was not stored: {failure.comment}") from None
        study = messages.StudyData(
            attributes.study_instance_uid, attributes.patient_id, attributes.patient_name
        )
        study.add(attributes.sop_class_uid)
        record(messages.instances_stored(http_user(request, messages.SOURCE), [study]))
        log.info(
            "console: a %s x %s picture stored as a secondary capture",
            attributes.columns,
            attributes.rows,
        )
        return _start(context, attributes.study_instance_uid, chosen)

    @routes.post("/jobs", status_code=202)
    def start_job(asked: JobRequest) -> dict[str, object]:
        """A job with the chosen models for a study stored just now (through STOW-RS)."""
        chosen = _chosen(asked.models, bundles)
        if not received_series(context.engine, asked.study, context.config.ae_title):
            raise HTTPException(404, "no received instance of this study is stored here")
        return _start(context, asked.study, chosen)

    @routes.get("/jobs/{job_id}")
    def job(job_id: RowId) -> dict[str, object]:
        """The job's state and notes, and, once it has ended, the results in its study."""
        found = jobs.get(context.engine, job_id)
        if found is None:
            raise HTTPException(404, f"there is no job {job_id}")
        answer: dict[str, object] = {
            "id": found.id,
            "state": found.state,
            "error": found.error,
            "study": found.study_instance_uid,
            "models": jobs.chosen_models(context.engine, job_id),
            "notes": jobs.notes(context.engine, job_id),
            "viewer_url": context.config.http.console.viewer_link(found.study_instance_uid),
        }
        if found.state in (JOB_DONE, JOB_FAILED):
            results = study_results(
                context.engine,
                context.storage,
                found.study_instance_uid,
                context.config.ae_title,
                bundles,
            )
            answer["findings"] = [asdict(f) for f in results.findings]
            answer["measurements"] = [asdict(m) for m in results.measurements]
        return answer

    return routes
