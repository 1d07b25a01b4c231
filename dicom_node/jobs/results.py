"""A route's models run on a de-identified series; their results kept in the study and delivered.

Each result object's UIDs are derived from its source's UIDs and the model's name and version,
so a job run twice (a retry, a restart) finds its results stored already and never makes a second
copy: it only makes sure every destination has them queued. Otherwise the series' headers are
de-identified with the route's options and the model runs on them; the pixels are the stored ones
(de-identification never changes pixels, and series whose pixels may show identity are held back
before this point). The SEG/SR made on the pseudonymous headers is re-identified to the original
study, stored and indexed like a received instance, and queued for ``results.destinations``.
"""

from __future__ import annotations

import importlib.metadata
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pydicom
from pydicom import Dataset

from inference.bundle import Bundle
from inference.ct_series import load_ct_series
from inference.device import device_label
from inference.dicom_seg import (
    ResultIdentity,
    derived_uid,
    encode_explanation,
    encode_segmentation,
)
from inference.dicom_sr import encode_finding, encode_measurements
from inference.errors import UnsuitableInput
from inference.image2d import display_pixels
from inference.input_domain import patient_age_years
from inference.run import classify, segment

from .. import metrics
from ..audit import messages, record
from ..config import FHIR_DESTINATION, RouteConfig
from ..deid.reidentify import reidentify
from ..index.contents import indexed_uids, instance_path
from ..index.jobs import add_note
from ..store.own_instances import encode_instance, store_own_instance
from .context import StoredSeries, StudyJobContext
from .fhir_report import queue_report
from .progress import StepReport

log = logging.getLogger(__name__)

MANUFACTURER = "DICOM AI node"
SOFTWARE_VERSION = importlib.metadata.version("dicom-ai-node")
#: Series Number of each kind of result, so a viewer lists them in a stable order after the
#: source series.
SERIES_NUMBERS = {"segmentation": 901, "measurements": 902, "explanation": 903, "finding": 904}
#: the kinds of result that are reports (SR), and become FHIR DiagnosticReports too
REPORT_KINDS = {"measurements", "finding"}


@dataclass(frozen=True)
class PlannedResult:
    """One result object to make: what it is, the original instance it is filed with."""

    kind: str
    identity: ResultIdentity
    source_index: int  # into the series' headers


def _identity(
    ae_title: str, bundle: Bundle, kind: str, series_uid: str, key: str, number: int
) -> ResultIdentity:
    return ResultIdentity(
        series_instance_uid=derived_uid(series_uid, bundle.name, bundle.version, kind),
        sop_instance_uid=derived_uid(key, bundle.name, bundle.version, kind, "instance"),
        series_number=SERIES_NUMBERS[kind],
        manufacturer=MANUFACTURER,
        software_version=SOFTWARE_VERSION,
        device_serial_number=ae_title,
        device_uid=derived_uid(ae_title, bundle.name, bundle.version, "device"),
        instance_number=number,
    )


def plan_results(ae_title: str, bundle: Bundle, headers: list[Dataset]) -> list[PlannedResult]:
    """The objects ``bundle`` makes of a series: a SEG and its report for the whole series of a
    segmentation model, an explanation and a report per image for a classifier."""
    series_uid = str(headers[0].SeriesInstanceUID)
    if bundle.task == "segmentation":
        return [
            PlannedResult(kind, _identity(ae_title, bundle, kind, series_uid, series_uid, 1), 0)
            for kind in ("segmentation", "measurements")
        ]
    return [
        PlannedResult(
            kind, _identity(ae_title, bundle, kind, series_uid, str(h.SOPInstanceUID), n), n - 1
        )
        for n, h in enumerate(headers, 1)
        for kind in ("explanation", "finding")
    ]


def _run_segmentation(
    bundle: Bundle, paths: list[Path], headers: list[Dataset], plans: list[PlannedResult]
) -> tuple[list[Dataset], list[str]]:
    seg_plan, report_plan = plans
    volume = load_ct_series(paths, headers)
    result = segment(bundle, volume)
    seg = encode_segmentation(bundle, result, volume.datasets, seg_plan.identity)
    report = encode_measurements(bundle, result, seg, volume.datasets, report_plan.identity)
    return [seg, report], []


def _domain_facts(stored: Dataset) -> Dataset:
    """What a model's input check reads of the header, and nothing that identifies the patient:
    the age in whole years (the de-identified header has none: the Basic Profile removes it and
    the birth date), the view and the modality. The model never sees the stored header itself."""
    facts = Dataset()
    age = patient_age_years(stored)
    if age is not None:
        facts.PatientAge = f"{min(int(age), 999):03d}Y"
    for keyword in ("ViewPosition", "Modality"):
        if keyword in stored:
            setattr(facts, keyword, stored.get(keyword))
    return facts


def _run_classifier(
    bundle: Bundle, paths: list[Path], headers: list[Dataset], plans: list[PlannedResult]
) -> tuple[list[Dataset], list[str]]:
    """The results of each image, and a remark for each image outside the model's domain."""
    made: list[Dataset] = []
    remarks: list[str] = []
    for explanation_plan, finding_plan in zip(plans[::2], plans[1::2], strict=True):
        index = explanation_plan.source_index
        stored = pydicom.dcmread(paths[index])
        facts = [_domain_facts(stored)]
        (result,) = classify(bundle, [display_pixels(stored)], explain=True, headers=facts)
        if not result.assessed:
            remarks.append(
                f"image {index + 1} not assessed, outside the model's domain "
                f"({'; '.join(result.concerns)})"
            )
        source = headers[index]
        made.append(encode_explanation(bundle, result, source, explanation_plan.identity))
        made.append(encode_finding(bundle, result, source, finding_plan.identity))
    return made, remarks


def _stored_chunks(context: StudyJobContext, uid: str) -> list[bytes]:
    return [context.storage.path(instance_path(context.engine, uid)).read_bytes()]


def _queue(
    context: StudyJobContext,
    job_id: int,
    kind: str,
    uid: str,
    load: Callable[[], list[bytes]],
) -> int:
    """Queue one stored result (``load`` gives its file) for every destination that does not
    have it queued yet, and a report's FHIR Bundle for the FHIR server; the file is read only
    when something still needs it."""
    outbox = context.outbox
    waiting = [d for d in context.config.results.destinations if not outbox.queued(d, uid)]
    report = (
        kind in REPORT_KINDS
        and context.config.fhir.enabled
        and not outbox.queued(FHIR_DESTINATION, uid)
    )
    if not waiting and not report:
        return 0
    chunks = load()
    queued = sum(outbox.enqueue(destination, uid, chunks, job_id) for destination in waiting)
    if report:
        queued += queue_report(context, job_id, uid, b"".join(chunks))
    return queued


def _destinations(context: StudyJobContext) -> str:
    names = list(context.config.results.destinations)
    if context.config.fhir.enabled:
        names.append(FHIR_DESTINATION)
    return ", ".join(names) or "no destination"


def run_model(
    context: StudyJobContext,
    job_id: int,
    route: RouteConfig,
    bundle: Bundle,
    stored: StoredSeries,
    headers: list[Dataset],
    label: str,
    report: StepReport,
) -> None:
    """Make, keep and queue ``bundle``'s results for one series; every outcome is a job note,
    and ``report`` follows its steps (the job's progress).

    A series the model cannot take (a volume with gaps, an image it cannot read) is noted and
    skipped; anything else propagates and fails the job, which can then be retried.
    """
    head = f"{label}: {bundle.name} {bundle.version}"
    plans = plan_results(context.config.ae_title, bundle, headers)
    uids = [plan.identity.sop_instance_uid for plan in plans]
    present = indexed_uids(context.engine, uids)
    if len(present) == len(uids):
        queued = sum(
            _queue(context, job_id, plan.kind, uid, partial(_stored_chunks, context, uid))
            for plan, uid in zip(plans, uids, strict=True)
        )
        add_note(
            context.engine,
            job_id,
            f"{head}: {len(uids)} result(s) stored by an earlier run; {queued} queued now",
        )
        return
    report("de-identify", 0.0)
    deidentify = context.deidentifier(route)
    pseudonymous = [deidentify(header) for header in headers]
    # Durable before the model runs: whatever it makes can always be mapped back.
    context.mapping.save(context.pseudonyms.take_issued())
    record(
        messages.instances_accessed(
            messages.studies_from_headers(headers),
            f"de-identified (route {route.name}) for model {bundle.name} {bundle.version}",
        )
    )
    run = _run_segmentation if bundle.task == "segmentation" else _run_classifier
    report("infer and encode", 0.1)
    started = time.perf_counter()
    try:
        made, remarks = run(bundle, stored.paths, pseudonymous, plans)
    except UnsuitableInput as error:  # not what the model takes (its message says why)
        add_note(context.engine, job_id, f"{head}: not run: {error}")
        return
    seconds = time.perf_counter() - started
    metrics.MODEL_SECONDS.labels(bundle.name, bundle.device).observe(seconds)
    head += f" on {device_label(bundle.device)} ({seconds:.1f} s)"
    report("re-identify, store and queue", 0.9)
    stored_now = queued = 0
    for plan, result in zip(plans, made, strict=True):
        original = reidentify(result, context.mapping, headers[plan.source_index])
        encoded = encode_instance(original, context.config.ae_title)
        if encoded.sop_instance_uid not in present:
            stored_now += store_own_instance(context.storage, context.engine, encoded)
        uid = encoded.sop_instance_uid
        queued += _queue(context, job_id, plan.kind, uid, partial(list, encoded.chunks))
    kinds = ", ".join(sorted({plan.kind for plan in plans}))
    log.info("job %d: %s: %d result(s) stored, %d queued", job_id, head, stored_now, queued)
    add_note(
        context.engine,
        job_id,
        f"{head}: {stored_now} result(s) stored ({kinds}), {queued} queued for "
        f"{_destinations(context)}" + "".join(f"; {remark}" for remark in remarks),
    )
