"""End to end as a PACS sees it: the shared chest CT sent by DCMTK's dcmsend to the node, until
its SEG and SR are in Orthanc, against the issue's 15 s after the last instance.

    python benchmarks/end_to_end.py [--rounds 3] [--stable-seconds 3]

Starts Orthanc (Debian package) as the PACS and `dicom-node serve` with a throw-away storage area
(SQLite index), the shipped defaults otherwise (default routes, two receiving processes, one job
worker, the stability monitor's 1 s check interval) bar `study.stable_seconds` and
`results.destinations: [pacs]`. Each round copies the CT under new Study, Series and SOP Instance
UIDs (pixels untouched, JPEG lossless as shared), so every round is a new study, sends it with
dcmsend, and times from dcmsend's end (the last instance's C-STORE answered and the association
released):

- stability wait: until the monitor found the study complete and wrote its job row (the
  configured quiet time plus the monitor's check interval);
- queue: until the node claimed the job for its job worker;
- job: until the job finished (round 1 includes starting the worker process and loading the
  model); its notes are printed with their seconds into the job, and `benchmarks/ct_job.py`
  splits the job itself into its steps;
- delivery: until the last result was acknowledged by Orthanc (the outbox rows' sent times), and
  until Orthanc's REST API lists the SEG and SR series in the study (polled every 0.1 s).

The job and outbox times are the node's own (`time.time()` in its index); the first round is the
one a node meets after its start, so the medians are of the later rounds.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests
from pydicom import dcmread
from pydicom.uid import generate_uid
from sqlalchemy import select

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from dicom_node.index.schema import (  # noqa: E402
    JOB_DONE,
    JOB_FAILED,
    JOB_RUNNING,
    OUTBOX_SENT,
    job_notes,
    jobs,
    outbox,
)

# The tests' own helpers start the node and Orthanc and send with dcmsend, as the tests do.
from tests.conftest import CT_SERIES, configured_node, dcmsend  # noqa: E402
from tests.orthanc import OrthancPeer  # noqa: E402

TARGET_SECONDS = 15.0
TIMEOUT_SECONDS = 300.0
POLL_SECONDS = 0.1


def copy_as_new_study(folder: Path) -> str:
    """The shared CT under new UIDs in `folder`; returns the new StudyInstanceUID."""
    folder.mkdir(parents=True)
    study, series = generate_uid(), generate_uid()
    for path in sorted(CT_SERIES.glob("*.dcm")):
        dataset = dcmread(path)
        dataset.StudyInstanceUID = study
        dataset.SeriesInstanceUID = series
        dataset.SOPInstanceUID = generate_uid()
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        dataset.save_as(folder / path.name, enforce_file_format=True)
    return study


def orthanc_modalities(orthanc: OrthancPeer, study_uid: str) -> set[str]:
    """The modalities of the series Orthanc holds in the study."""
    answer = requests.post(
        f"http://127.0.0.1:{orthanc.http_port}/tools/find",
        json={"Level": "Series", "Query": {"StudyInstanceUID": study_uid}, "Expand": True},
        timeout=30,
    )
    answer.raise_for_status()
    return {series["MainDicomTags"].get("Modality", "") for series in answer.json()}


def one_round(node, orthanc: OrthancPeer, folder: Path) -> dict:
    """Send the CT once and follow it to Orthanc: the node's and Orthanc's times, in seconds."""
    study_uid = copy_as_new_study(folder)
    started = time.time()
    sent = dcmsend(node.port, folder)
    sent_at = time.time()
    if sent.returncode != 0:
        sys.exit(f"dcmsend failed: {sent.stderr[-2000:]}")
    engine = node.engine()
    claimed_at = None
    in_orthanc_at = None
    deadline = sent_at + TIMEOUT_SECONDS
    while time.time() < deadline:
        with engine.connect() as connection:
            job = connection.execute(
                select(jobs.c.id, jobs.c.state, jobs.c.created_at, jobs.c.updated_at).where(
                    jobs.c.study_instance_uid == study_uid
                )
            ).first()
        if job is not None and job.state == JOB_RUNNING and claimed_at is None:
            claimed_at = job.updated_at
        if job is not None and job.state == JOB_FAILED:
            sys.exit(f"job {job.id} failed: see `dicom-node jobs show {job.id}`")
        if job is not None and job.state == JOB_DONE:
            if in_orthanc_at is None and {"SEG", "SR"} <= orthanc_modalities(orthanc, study_uid):
                in_orthanc_at = time.time()
            with engine.connect() as connection:
                deliveries = connection.execute(
                    select(outbox.c.state, outbox.c.updated_at).where(outbox.c.job_id == job.id)
                ).all()
            if (
                in_orthanc_at is not None
                and deliveries
                and all(row.state == OUTBOX_SENT for row in deliveries)
            ):
                break
        time.sleep(POLL_SECONDS)
    else:
        sys.exit(f"no SEG and SR in Orthanc {TIMEOUT_SECONDS:.0f} s after dcmsend")
    with engine.connect() as connection:
        notes = connection.execute(
            select(job_notes.c.at, job_notes.c.text)
            .where(job_notes.c.job_id == job.id)
            .order_by(job_notes.c.id)
        ).all()
    engine.dispose()
    shutil.rmtree(folder)
    # A job quicker than one poll was never seen running: its first note is the nearest time.
    claimed_at = claimed_at or notes[0].at
    return {
        "send": sent_at - started,
        "stability wait": job.created_at - sent_at,
        "queue": claimed_at - job.created_at,
        "job": job.updated_at - claimed_at,
        "delivery (outbox sent)": max(row.updated_at for row in deliveries) - job.updated_at,
        "total (outbox sent)": max(row.updated_at for row in deliveries) - sent_at,
        "total (seen in Orthanc)": in_orthanc_at - sent_at,
        "notes": [(at - claimed_at, text) for at, text in notes],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stable-seconds", type=float, default=3)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="end-to-end-bench-"))
    orthanc = OrthancPeer(work / "orthanc")
    node = configured_node(
        work / "node",
        f"sqlite:///{work / 'index.sqlite'}",
        peers={"pacs": orthanc.peer},
        results={"destinations": ["pacs"]},
        # the shipped receivers and check interval, not the tests' one and 0.2 s
        dicom={"workers": 2},
        study={"stable_seconds": args.stable_seconds, "check_interval_seconds": 1.0},
        logging={"level": "WARNING"},
    )
    rounds = []
    try:
        orthanc.start()
        node.start()
        for number in range(args.rounds):
            figures = one_round(node, orthanc, work / f"ct-{number}")
            rounds.append(figures)
            print(f"round {number + 1}:")
            for name, seconds in figures.items():
                if name != "notes":
                    print(f"  {name:24s} {seconds:6.2f} s")
            for seconds, text in figures["notes"]:
                print(f"    job +{seconds:5.2f} s: {text[:100]}")
    finally:
        if node.process is not None:
            node.stop()
        orthanc.stop()
        shutil.rmtree(work, ignore_errors=True)

    later = rounds[1:] or rounds
    print(
        f"\nmedians of rounds {'2-' if len(rounds) > 1 else ''}{len(rounds)} "
        f"(stable_seconds {args.stable_seconds:g}; round 1 starts the job worker):"
    )
    for name in rounds[0]:
        if name != "notes":
            print(f"  {name:24s} {statistics.median(r[name] for r in later):6.2f} s")
    total = statistics.median(r["total (seen in Orthanc)"] for r in later)
    verdict = "within" if total <= TARGET_SECONDS else "over"
    print(f"  after the last instance: {total:.2f} s, {verdict} the {TARGET_SECONDS:g} s target")


if __name__ == "__main__":
    main()
