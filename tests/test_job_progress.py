"""A job's progress as its worker writes it (`jobs.progress` over `index.progress`): the step
and percentage of a running job in the index, in `/status`'s running list and in `dicom-node
jobs`; its timed steps in the study's history; a new attempt starts from nothing. On SQLite
and on PostgreSQL, with the node's own HTTP app and command line."""

from __future__ import annotations

import time

import requests
import yaml

from dicom_node.cli.main import main
from dicom_node.config import parse_config
from dicom_node.console.studies import timeline
from dicom_node.index import jobs
from dicom_node.index.database import open_engine
from dicom_node.index.history import StudyHistory, study_history
from dicom_node.index.progress import running
from dicom_node.index.schema import JOB_PENDING, STUDY_COMPLETE, studies
from dicom_node.jobs.progress import JobProgress
from dicom_node.serve.http_app import HttpServer, create_app, open_http_socket
from dicom_node.store.storage import StorageArea

from .conftest import free_port, wait_for_port

STUDY = "1.2.3.4.5"


def test_a_running_jobs_step_and_percentage_show_everywhere(database_url, tmp_path, capsys):
    settings = {
        "storage": {"path": str(tmp_path), "database": database_url},
        "http": {"port": free_port()},
    }
    (tmp_path / "node.yaml").write_text(yaml.safe_dump(settings))
    config = parse_config(settings)
    engine = open_engine(database_url)
    now = time.time()
    with engine.begin() as connection:
        connection.execute(
            studies.insert().values(
                study_instance_uid=STUDY, state=STUDY_COMPLETE, last_received_at=now
            )
        )
        connection.execute(
            jobs.jobs.insert().values(
                study_instance_uid=STUDY, state=JOB_PENDING, created_at=now, updated_at=now
            )
        )
    job = jobs.claim(engine)
    assert job is not None
    (claimed,) = running(engine)
    assert (claimed.step, claimed.percent, claimed.models) == ("waiting for a worker", 0, [])
    assert claimed.started_at is None

    # Two units: a model with its own steps, then a series nothing applies to.
    progress = JobProgress(engine, job.id, units=2, models=["cxr_pneumonia"])
    (started,) = running(engine)
    assert (started.step, started.percent, started.models) == ("starting", 0, ["cxr_pneumonia"])
    assert started.started_at is not None and started.started_at >= now
    app = create_app(engine, StorageArea(tmp_path), "AI_NODE", config.http, None)
    server = HttpServer(app, config.http, open_http_socket(config.http))
    server.start()
    try:
        wait_for_port(config.http.port)
        with progress.unit("series 1 (CR, 1 instance(s)): cxr_pneumonia 1.0.0") as report:
            report("infer and encode", 0.5)
            status = requests.get(f"http://127.0.0.1:{config.http.port}/status", timeout=10)
            assert main(["--config", str(tmp_path / "node.yaml"), "jobs"]) == 0
    finally:
        server.stop()
    (shown,) = status.json()["running"]
    assert shown["id"] == job.id and shown["study_instance_uid"] == STUDY
    assert shown["models"] == ["cxr_pneumonia"] and shown["percent"] == 25
    assert shown["step"] == "series 1 (CR, 1 instance(s)): cxr_pneumonia 1.0.0: infer and encode"
    listed = capsys.readouterr().out
    assert " 25%  series 1 (CR, 1 instance(s)): cxr_pneumonia 1.0.0: infer and encode" in listed

    assert running(engine)[0].percent == 50
    progress.skipped()
    progress.finished()
    assert (running(engine)[0].step, running(engine)[0].percent) == ("finished", 100)
    jobs.finish(engine, job.id)
    assert running(engine) == []

    # The timed step is in the study's history.
    (history,) = study_history(engine, STUDY, "AI_NODE").jobs
    (step,) = history.steps
    assert step.name == "series 1 (CR, 1 instance(s)): cxr_pneumonia 1.0.0"
    assert step.finished_at is not None and step.finished_at >= step.started_at
    assert history.started_at == started.started_at

    # A new attempt does not show the last one's progress.
    assert jobs.retry(engine, job.id)
    jobs.claim(engine)
    (again,) = running(engine)
    assert (again.step, again.percent, again.started_at) == ("waiting for a worker", 0, None)

    # Its attempts keep their own times: the first done, the second failed with its reason; the
    # console's timeline shows the earlier one beside the job row's latest.
    JobProgress(engine, job.id, units=1, models=["cxr_pneumonia"])
    jobs.finish(engine, job.id, "no space left")
    (history,) = study_history(engine, STUDY, "AI_NODE").jobs
    first, second = history.attempt_times
    assert (first.attempt, first.state, first.error) == (1, "done", "")
    assert first.started_at == started.started_at
    assert first.finished_at is not None and first.finished_at >= first.started_at
    assert (second.attempt, second.state, second.error) == (2, "failed", "no space left")
    assert second.started_at == history.started_at >= first.finished_at
    events = {event.text: event for event in timeline(StudyHistory(None, None, [history], []))}
    done = events[f"job {job.id} attempt 1 done"]
    assert (done.at, done.kind, done.duration) == (
        first.finished_at,
        "done",
        first.finished_at - first.started_at,
    )
    assert events[f"job {job.id} attempt 1 started"].at == first.started_at
    assert f"job {job.id} started (attempt 2)" in events
    assert f"job {job.id} failed: no space left" in events
