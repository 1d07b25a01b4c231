"""What a job does with a complete study, series by series, in a job worker process.

Each series is routed (routing.py); for every matching route, a series whose pixels may show
the patient's identity is held back unless the route allows it, the route's models run on the
de-identified series and their results come back into the study (study_results.py), and the
route's research destinations get de-identified copies (made with the route's options) through
the outbox. A model two routes name runs once per series. Every decision is written as a job
note, so "why did nothing happen?" has an answer in the index.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pydicom
from pydicom import Dataset
from pydicom.errors import InvalidDicomError

from ..audit import messages, record
from ..config import RouteConfig
from ..deid.burned_in import burned_in_text
from ..deid.deidentify import DeidentificationError
from ..index.contents import received_series
from ..index.jobs import add_note, chosen_models
from ..outbox.destinations.audited import destination as audit_destination
from .context import StoredSeries, StudyJobContext, StudyJobError
from .progress import JobProgress
from .routing import SeriesFacts, matching_routes

log = logging.getLogger(__name__)


def stored_series(context: StudyJobContext, study_uid: str) -> list[StoredSeries]:
    """The study's received series (not the node's own results), in series number order."""
    found = received_series(context.engine, study_uid, context.config.ae_title)
    return [
        StoredSeries(item.series_instance_uid, [context.storage.path(p) for p in item.paths])
        for item in found
    ]


def _read(path: Path, headers_only: bool) -> Dataset:
    try:
        return pydicom.dcmread(path, stop_before_pixels=headers_only)
    except (InvalidDicomError, OSError, ValueError, EOFError) as error:
        raise StudyJobError(f"stored file {path.name} cannot be read: {error}") from None


def chosen_route(models: list[str]) -> RouteConfig:
    """The route of a job whose models a person chose (an upload in the console): those models
    on every series, burned-in text allowed, since the person sent these very pixels to them."""
    return RouteConfig(name="chosen in the console", models=models, allow_burned_in_text=True)


def run_study_job(context: StudyJobContext, job_id: int, study_uid: str) -> None:
    """Process every series of the study; raises StudyJobError when a file defeats it."""
    found = stored_series(context, study_uid)
    chosen = chosen_models(context.engine, job_id)
    if not found:
        add_note(context.engine, job_id, "the study has no stored instance (removed?)")
    planned = []
    for stored in found:
        headers = [_read(path, headers_only=True) for path in stored.paths]
        facts = SeriesFacts.from_headers(headers)
        if chosen is not None:
            routes = [chosen_route(chosen)]
        else:
            routes = matching_routes(context.config.inference.routes, facts)
        planned.append((stored, headers, facts, routes))
    models = sorted({model for *_, routes in planned for route in routes for model in route.models})
    units = sum(_units(routes) for *_, routes in planned)
    progress = JobProgress(context.engine, job_id, units, models)
    for stored, headers, facts, routes in planned:
        label = f"series {headers[0].get('SeriesNumber', '?')} ({facts.modality or '-'}, "
        label += f"{len(headers)} instance(s))"
        if not routes:
            add_note(
                context.engine, job_id, f"{label}: no routing rule matches ({facts.describe()})"
            )
            progress.skipped()
        models_run: set[str] = set()
        for route in routes:
            _apply_route(context, job_id, route, stored, headers, label, models_run, progress)
    progress.finished()


def _units(routes: list[RouteConfig]) -> int:
    """The units of work of one series (`JobProgress`): its models, once each, and its
    forwardings; one for a series nothing applies to."""
    models = {model for route in routes for model in route.models}
    return max(1, len(models) + sum(1 for route in routes if route.research_destinations))


def _apply_route(
    context: StudyJobContext,
    job_id: int,
    route: RouteConfig,
    stored: StoredSeries,
    headers: list[Dataset],
    label: str,
    models_run: set[str],
    progress: JobProgress,
) -> None:
    reasons = {reason for h in headers if (reason := burned_in_text(h))}
    if reasons and not route.allow_burned_in_text:
        add_note(
            context.engine,
            job_id,
            f"{label}: route {route.name}: held back from models and research destinations: "
            f"{'; '.join(sorted(reasons))} (allow_burned_in_text is false for this route)",
        )
        progress.skipped(
            len(set(route.models) - models_run) + (1 if route.research_destinations else 0)
        )
        return
    for model in route.models:
        if model not in models_run:
            models_run.add(model)
            bundle = context.bundles[model]
            with progress.unit(f"{label}: {bundle.name} {bundle.version}") as report:
                # The models' code (PyTorch, MONAI, highdicom's SEG/SR) loads with the first
                # series a model runs on, so a worker whose jobs ran no model stays small.
                from .results import run_model

                run_model(context, job_id, route, bundle, stored, headers, label, report)
    if route.research_destinations:
        with progress.unit(f"{label}: route {route.name}: research forwarding"):
            queued, already = _forward(context, job_id, route, stored)
        text = f"{label}: route {route.name}: {queued} de-identified instance(s) queued for "
        text += ", ".join(route.research_destinations)
        if already:
            text += f" ({already} queued by an earlier run)"
        add_note(context.engine, job_id, text)
        if queued:
            record(
                messages.export(
                    [audit_destination(context.config, n) for n in route.research_destinations],
                    messages.studies_from_headers(headers),
                    f"route {route.name}: {queued} instance(s) de-identified (PS3.15 Basic "
                    "Profile with the route's options) for research",
                )
            )


def _forward(
    context: StudyJobContext, job_id: int, route: RouteConfig, stored: StoredSeries
) -> tuple[int, int]:
    """De-identified copies of the series into the outbox, once per destination and instance."""
    deidentify = context.deidentifier(route)
    queued = already = 0
    for path in stored.paths:
        original = _read(path, headers_only=False)
        pseudonym = context.pseudonyms.uid(str(original.SOPInstanceUID))
        waiting = [
            d for d in route.research_destinations if not context.outbox.queued(d, pseudonym)
        ]
        if not waiting:
            already += 1
            continue
        try:
            copy = deidentify(original)
        except DeidentificationError as error:
            raise StudyJobError(f"stored file {path.name}: {error}") from None
        buffer = io.BytesIO()
        copy.save_as(buffer, enforce_file_format=True)
        # The mapping is durable before the copy can leave: its results can always come back.
        context.mapping.save(context.pseudonyms.take_issued())
        for destination in waiting:
            context.outbox.enqueue(destination, copy.SOPInstanceUID, [buffer.getvalue()], job_id)
        queued += 1
    return queued, already
