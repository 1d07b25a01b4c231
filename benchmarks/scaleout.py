"""Scale-out of the celery engine on this machine: studies per hour end to end with 1 and 2
workers, and ingest with 4 senders over 1 and 2 receivers; prints the figures and the ratios.

Each measurement starts a fresh cluster (as the tests do, `tests/cluster.py`): a PostgreSQL
database, a RabbitMQ vhost, one storage area, the receivers (`dicom-node serve`) and workers
(`dicom-node worker`, one job process each) as separate processes, and Orthanc as the PACS.

- End to end: ``--studies`` chest radiographs (the shared CR under new UIDs, one study each) are
  sent at once; the clock stops when Orthanc holds every result (2 per study: the Grad-CAM SEG
  and the finding SR). ``--ct`` sends 40-slice chest CTs instead (SEG and SR each).
- Ingest: 4 storescu send ``--slices`` uncompressed CT slices each (own series), all to one
  receiver, then 2 to each of two receivers.

On a machine with few cores the processes compete for them: the ratios say how much a second
worker or receiver adds here, not on hosts of their own.

    python benchmarks/scaleout.py [--studies 8] [--ct] [--slices 100]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import pydicom
import requests
from pydicom.uid import generate_uid

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.ingest import load_template_slices, send, write_series  # noqa: E402
from tests.cluster import Cluster, RabbitVhost  # noqa: E402
from tests.conftest import CR_CHEST, CT_SERIES, dcmsend, new_database  # noqa: E402
from tests.orthanc import OrthancPeer  # noqa: E402

TIMEOUT_SECONDS = 1800.0


def write_studies(folder: Path, count: int, ct: bool) -> None:
    """``count`` studies under new UIDs: the CR, or 40 slices of the CT."""
    sources = sorted(CT_SERIES.glob("*.dcm"))[100:140] if ct else [CR_CHEST]
    folder.mkdir(parents=True)
    for number in range(count):
        study, series = generate_uid(), generate_uid()
        for index, source in enumerate(sources):
            dataset = pydicom.dcmread(source)
            dataset.StudyInstanceUID, dataset.SeriesInstanceUID = study, series
            dataset.SOPInstanceUID = generate_uid()
            dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
            dataset.save_as(folder / f"{number:03d}-{index:03d}.dcm", enforce_file_format=True)


def orthanc_instances(orthanc: OrthancPeer) -> int:
    answer = requests.get(f"http://127.0.0.1:{orthanc.http_port}/statistics", timeout=30)
    return int(answer.json()["CountInstances"])


def new_cluster(work: Path, name: str, orthanc: OrthancPeer, database: str, vhost) -> Cluster:
    root = work / name
    root.mkdir(exist_ok=True)
    return Cluster(
        root,
        database,
        vhost.url,
        {
            "study": {"stable_seconds": 1, "check_interval_seconds": 0.2},
            "peers": {"pacs": orthanc.peer},
            "results": {"destinations": ["pacs"]},
            "inference": {"device": "cpu"},
        },
        vhost.password,
    )


def with_cluster(work: Path, name: str, run) -> float:
    """``run(cluster, orthanc)`` on a fresh cluster and PACS; its figure."""
    vhost = RabbitVhost()
    vhost.add()
    orthanc = OrthancPeer(work / name / "orthanc")
    with new_database("postgresql", work) as database:
        cluster = new_cluster(work, name, orthanc, database, vhost)
        orthanc.start()
        try:
            return run(cluster, orthanc)
        finally:
            cluster.stop()
            orthanc.stop()
            vhost.delete()


def studies_per_hour(work: Path, workers: int, count: int, ct: bool) -> float:
    def run(cluster: Cluster, orthanc: OrthancPeer) -> float:
        receiver = cluster.receiver()
        for _ in range(workers):
            cluster.worker()
        folder = work / f"studies-{workers}"
        write_studies(folder, count, ct)
        started = time.monotonic()
        sent = dcmsend(receiver.port, folder)  # the CR is JPEG 2000: sent as it is
        if sent.returncode != 0:
            sys.exit(f"dcmsend failed: {sent.stderr[-2000:]}")
        seconds = time.monotonic() - started
        while orthanc_instances(orthanc) < 2 * count:
            if time.monotonic() - started > TIMEOUT_SECONDS:
                sys.exit("the results did not reach Orthanc in time")
            time.sleep(0.2)
        elapsed = time.monotonic() - started
        shutil.rmtree(folder)
        print(
            f"  {workers} worker(s): {count} studies in {elapsed:.1f} s (sent in {seconds:.1f} s)"
        )
        return count / elapsed * 3600

    return with_cluster(work, f"e2e-{workers}", run)


def ingest_rate(work: Path, receivers: int, slices: int, templates: list) -> float:
    def run(cluster: Cluster, _orthanc: OrthancPeer) -> float:
        nodes = [cluster.receiver() for _ in range(receivers)]
        folders = [work / f"ingest-{receivers}-{n}" for n in range(4)]
        for folder in folders:
            write_series(templates, slices, folder)
        outcomes: list[tuple[float, bool]] = []
        threads = [
            threading.Thread(
                target=lambda node=node, part=folders[i::receivers]: outcomes.append(
                    send(node.port, "AI_NODE", part)
                )
            )
            for i, node in enumerate(nodes)
        ]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        if not all(ok for _, ok in outcomes):
            sys.exit("storescu failed")
        for folder in folders:
            shutil.rmtree(folder)
        rate = 4 * slices / elapsed
        print(f"  {receivers} receiver(s): {4 * slices} instances in {elapsed:.1f} s, {rate:.0f}/s")
        return rate

    return with_cluster(work, f"ingest-{receivers}", run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=8)
    parser.add_argument("--ct", action="store_true", help="40-slice CT studies instead of CRs")
    parser.add_argument("--slices", type=int, default=100, help="slices per ingest sender")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="scaleout-") as folder:
        work = Path(folder)
        kind = "CT (40 slices)" if args.ct else "CR"
        print(f"end to end, {kind} studies, send -> results in Orthanc:")
        one, two = (studies_per_hour(work, n, args.studies, args.ct) for n in (1, 2))
        print(f"  studies/hour: 1 worker {one:.0f}, 2 workers {two:.0f}, ratio {two / one:.2f}")
        print(f"ingest, 4 storescu x {args.slices} uncompressed CT slices:")
        templates = load_template_slices()
        single, double = (ingest_rate(work, n, args.slices, templates) for n in (1, 2))
        print(
            f"  instances/s: 1 receiver {single:.0f}, 2 receivers {double:.0f}, "
            f"ratio {double / single:.2f}"
        )


if __name__ == "__main__":
    main()
