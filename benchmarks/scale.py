"""Cost as the store grows: the node (on SQLite and on PostgreSQL) beside Orthanc at 1k, 10k,
(50k) studies of two instances each.

Fills both stores with the same synthetic studies (real-shaped headers: patient, study, CT
series and instance attributes): the node's index by direct index writes (rows as the node
writes them, studies already complete, no files: the queries below read none), Orthanc through
its REST API (header-only instances). Then, at each size, alternating node and Orthanc:

- C-FIND, one result: `findscu` (DCMTK) at STUDY level by PatientName prefix, with the study's
  counts and modalities;
- QIDO-RS, one result: `/studies?PatientName=PREFIX*` (Orthanc's DICOMweb plugin);
- QIDO-RS, one day: `/studies?StudyDate=DAY` (about size/3650 results), not paged;
- ingest: one storescu sending a new 100-instance CT study (instances/s).

Each sample waits until every server has been idle for 0.3 s, so that every sample is a query
from idle, for both servers at every size. Back to back, the node answered from idle at 50k (it
had waited for Orthanc's 60-85 ms searches) but warm at 1k (Orthanc's 2-3 ms), and every server
on this VM answers about twice as slowly from idle; what a server still did after its turn (the
node's metadata documents after an ingest) also fell into the other's.

Prints the medians in ms (instances/s for ingest), node/Orthanc, and the node's figure against
its value at the first size. Orthanc keeps its default SQLite index throughout.

    python benchmarks/scale.py [--sizes 1000 10000 50000] [--databases sqlite postgresql]
                               [--repeat 15]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import ExplicitVRLittleEndian

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# The tests' own helpers start the node and Orthanc as the tests do.
from benchmarks.ingest import wait_until_idle  # noqa: E402
from dicom_node.index.database import open_engine  # noqa: E402
from dicom_node.index.folding import folded  # noqa: E402
from dicom_node.index.schema import instances, series, studies  # noqa: E402
from tests.conftest import (  # noqa: E402
    TOOL_ENV,
    TRANSFER_SYNTAXES,
    configured_node,
    free_port,
    new_database,
)
from tests.orthanc import OrthancPeer  # noqa: E402
from tests.test_durability import write_study  # noqa: E402

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
UID_ROOT = "1.2.826.0.1.3680043.10.543"
INSTANCES_PER_STUDY = 2
INGEST_INSTANCES = 100
#: How long every server must have been (nearly) idle before a sample is taken.
_QUIET_SECONDS = 0.3
FIND_KEYS = ["StudyInstanceUID", "PatientID", "StudyDate", "ModalitiesInStudy"]
FIND_KEYS += ["NumberOfStudyRelatedInstances", "NumberOfStudyRelatedSeries"]


def patient_name(number: int) -> str:
    return f"PAT{number:06d}^SYNTHETIC"


def study_date(number: int) -> str:
    day = number % 3650
    return f"{2010 + day // 365}{1 + day % 365 // 31:02d}{1 + day % 31 % 28:02d}"


def study_values(number: int) -> dict:
    """The attributes of synthetic study `number` (its series and instances derive from it)."""
    return {
        "study": f"{UID_ROOT}.{number}",
        "series": f"{UID_ROOT}.{number}.1",
        "patient_id": f"ID{number:06d}",
        "patient_name": patient_name(number),
        "birth_date": f"19{40 + number % 60:02d}0101",
        "sex": "FM"[number % 2],
        "study_date": study_date(number),
        "accession": f"A{number:07d}",
    }


def node_rows(first: int, last: int, now: float) -> tuple[list, list, list]:
    """Index rows of studies first..last-1, as the node's writer makes them."""
    study_rows, series_rows, instance_rows = [], [], []
    for number in range(first, last):
        v = study_values(number)
        study_rows.append(
            {
                "study_instance_uid": v["study"],
                "patient_id": v["patient_id"],
                "issuer_of_patient_id": "",
                "patient_name": v["patient_name"],
                "patient_birth_date": v["birth_date"],
                "patient_sex": v["sex"],
                "study_date": v["study_date"],
                "study_time": "101010",
                "accession_number": v["accession"],
                "study_id": str(number),
                "study_description": "CT CHEST",
                "referring_physician_name": "REFERRER^A",
                "state": "complete",
                "last_received_at": now,
                "patient_name_folded": folded(v["patient_name"]),
                "referring_physician_name_folded": folded("REFERRER^A"),
            }
        )
        series_rows.append(
            {
                "series_instance_uid": v["series"],
                "study_instance_uid": v["study"],
                "modality": "CT",
                "series_number": 1,
                "series_description": "AXIAL",
                "body_part_examined": "CHEST",
                "series_date": v["study_date"],
                "series_time": "101010",
            }
        )
        for index in range(INSTANCES_PER_STUDY):
            instance_rows.append(
                {
                    "sop_instance_uid": f"{v['series']}.{index + 1}",
                    "series_instance_uid": v["series"],
                    "sop_class_uid": CT_IMAGE,
                    "instance_number": index + 1,
                    "transfer_syntax_uid": ExplicitVRLittleEndian,
                    "path": f"synthetic/{number}/{index}.dcm",
                    "size": 1024,
                    "calling_ae_title": "SCALE",
                    "received_at": now,
                    "rows": 512,
                    "columns": 512,
                    "bits_allocated": 16,
                    "number_of_frames": None,
                }
            )
    return study_rows, series_rows, instance_rows


def fill_node(url: str, first: int, last: int) -> None:
    engine = open_engine(url, create=False)
    step = 5000
    for start in range(first, last, step):
        rows = node_rows(start, min(start + step, last), time.time())
        with engine.begin() as connection:
            for table, table_rows in zip((studies, series, instances), rows, strict=True):
                connection.execute(table.insert(), table_rows)
    engine.dispose()


def orthanc_instance(number: int, index: int) -> bytes:
    v = study_values(number)
    ds = Dataset()
    ds.SOPClassUID = CT_IMAGE
    ds.SOPInstanceUID = f"{v['series']}.{index + 1}"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = v["study"], v["series"]
    ds.PatientID, ds.PatientName = v["patient_id"], v["patient_name"]
    ds.PatientBirthDate, ds.PatientSex = v["birth_date"], v["sex"]
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber = v["study_date"], "101010", v["accession"]
    ds.StudyID, ds.StudyDescription = str(number), "CT CHEST"
    ds.ReferringPhysicianName = "REFERRER^A"
    ds.Modality, ds.SeriesNumber, ds.SeriesDescription = "CT", 1, "AXIAL"
    ds.BodyPartExamined, ds.InstanceNumber = "CHEST", index + 1
    ds.Rows, ds.Columns, ds.BitsAllocated = 512, 512, 16
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CT_IMAGE
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def fill_orthanc(orthanc: OrthancPeer, first: int, last: int) -> None:
    url = f"http://127.0.0.1:{orthanc.http_port}/instances"
    session = requests.Session()

    def post(number: int) -> None:
        for index in range(INSTANCES_PER_STUDY):
            session.post(url, data=orthanc_instance(number, index), timeout=60).raise_for_status()

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(post, range(first, last)))


def findscu(port: int, ae_title: str, name_prefix: str) -> int:
    """One C-FIND at STUDY level; returns the number of matches."""
    args = ["/usr/bin/findscu", "-v", "-S", "-aec", ae_title, "127.0.0.1", str(port)]
    args += ["-k", "QueryRetrieveLevel=STUDY", "-k", f"PatientName={name_prefix}*"]
    for key in FIND_KEYS:
        args += ["-k", key]
    done = subprocess.run(args, env=TOOL_ENV, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"findscu failed: {done.stderr[-500:]}")
    return (done.stdout + done.stderr).count("Find Response:")  # pending ones


def qido(url: str, params: dict) -> int:
    # `*` as it is: Orthanc takes an encoded one (%2A) literally.
    answer = requests.get(f"{url}?{urllib.parse.urlencode(params, safe='*')}", timeout=120)
    answer.raise_for_status()
    return len(answer.json()) if answer.content else 0


def storescu_rate(port: int, ae_title: str, folder: Path) -> float:
    write_study(folder, INGEST_INSTANCES)
    started = time.perf_counter()
    subprocess.run(
        ["/usr/bin/storescu", "-aec", ae_title, "127.0.0.1", str(port), "+sd", str(folder)],
        env=TOOL_ENV,
        check=True,
        capture_output=True,
        timeout=600,
    )
    rate = INGEST_INSTANCES / (time.perf_counter() - started)
    shutil.rmtree(folder)
    return rate


class Target:
    """One store under test: how to query it and how to send to it."""

    def __init__(self, name: str, dicom: tuple[int, str], qido_root: str, pid: int) -> None:
        self.name = name
        self.port, self.ae_title = dicom
        self.qido_root = qido_root
        self.pid = pid

    def measures(self, size: int, work: Path) -> dict[str, Callable[[], float]]:
        """Each measure: a function running it once with new random values, returning ms (or
        instances/s for ingest)."""

        def timed(run: Callable[[], object]) -> float:
            started = time.perf_counter()
            run()
            return (time.perf_counter() - started) * 1000

        def one_name() -> str:
            return patient_name(random.randrange(size)).split("^")[0]

        return {
            "C-FIND name prefix": lambda: timed(
                lambda: _expect(1, findscu(self.port, self.ae_title, one_name()))
            ),
            "QIDO name prefix": lambda: timed(
                lambda: _expect(
                    1, qido(f"{self.qido_root}/studies", {"PatientName": f"{one_name()}*"})
                )
            ),
            "QIDO one day": lambda: timed(
                lambda: qido(
                    f"{self.qido_root}/studies",
                    {"StudyDate": study_date(random.randrange(3650))},
                )
            ),
            "ingest (inst/s)": lambda: storescu_rate(
                self.port, self.ae_title, work / f"ingest-{self.name}-{time.monotonic_ns()}"
            ),
        }


def _expect(wanted: int, found: int) -> None:
    if found != wanted:
        raise RuntimeError(f"{found} matches where {wanted} were expected")


@contextlib.contextmanager
def running_node(work: Path, kind: str) -> Iterator[tuple[Target, str]]:
    """A `dicom-node serve` on a fresh index of `kind`: its target and its index URL."""
    with new_database(kind, work) as url:
        node = configured_node(
            work / f"node-{kind}",
            url,
            dicom={"host": "127.0.0.1", "port": free_port(), "workers": 2},
            logging={"level": "WARNING"},
        )
        node.start()
        try:
            root = f"http://127.0.0.1:{node.http_port}/dicomweb"
            assert node.process is not None  # started
            yield Target(f"node {kind}", (node.port, "AI_NODE"), root, node.process.pid), url
        finally:
            node.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--databases", nargs="+", default=["sqlite", "postgresql"])
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    if not (TRANSFER_SYNTAXES / "CT_small.dcm").is_file():
        sys.exit(f"no CT_small.dcm under {TRANSFER_SYNTAXES}")

    work = Path(tempfile.mkdtemp(prefix="scale-bench-"))
    #: (node, size, measure) -> (the node's median, Orthanc's median alternating with it)
    results: dict[tuple[str, int, str], tuple[float, float]] = {}
    orthanc = OrthancPeer(work / "orthanc", dicomweb=True, settings={"DicomAlwaysAllowFind": True})
    orthanc.start()
    peer = Target("Orthanc", (orthanc.dicom_port, "ORTHANC"), orthanc.dicomweb_url, orthanc.pid)
    with contextlib.ExitStack() as stack:
        nodes = [stack.enter_context(running_node(work, kind)) for kind in args.databases]
        servers = [peer.pid, *(target.pid for target, _ in nodes)]
        filled = 0
        for size in args.sizes:
            started = time.perf_counter()
            fill_orthanc(orthanc, filled, size)
            orthanc_seconds = time.perf_counter() - started
            for _, url in nodes:
                started = time.perf_counter()
                fill_node(url, filled, size)
                node_seconds = time.perf_counter() - started
            filled = size
            print(
                f"\n{size} studies: Orthanc filled in {orthanc_seconds:.0f} s, "
                f"each node index in about {node_seconds:.0f} s",
                flush=True,
            )
            time.sleep(35)  # the node's statistics refresh runs every 30 s
            for target, _ in nodes:
                pairs = [(target, target.measures(size, work)), (peer, peer.measures(size, work))]
                for measure in pairs[0][1]:
                    samples: dict[str, list[float]] = {target.name: [], peer.name: []}
                    repeat = 3 if measure.startswith("ingest") else args.repeat
                    for _ in range(repeat):
                        for who, runs in pairs:  # alternating
                            # every sample from idle (see the docstring)
                            wait_until_idle(*servers, interval=_QUIET_SECONDS)
                            samples[who.name].append(runs[measure]())
                    mine, theirs = (statistics.median(samples[who.name]) for who, _ in pairs)
                    results[(target.name, size, measure)] = (mine, theirs)
                    print(
                        f"  {measure:20s} {target.name:16s} {mine:8.1f}   Orthanc {theirs:8.1f}",
                        flush=True,
                    )
    orthanc.stop()
    shutil.rmtree(work, ignore_errors=True)
    report(results, args.sizes, [f"node {kind}" for kind in args.databases])


def report(results: dict, sizes: list[int], nodes: list[str]) -> None:
    print(
        "\nmedians: ms (ingest: instances/s); x1k = the node's figure / its figure at "
        f"{sizes[0]} studies (for ingest, the inverse: growth of time per instance)"
    )
    measures = sorted({measure for _, _, measure in results})
    for node in nodes:
        print(
            f"\n{node} against Orthanc (Orthanc on its default SQLite index; node/Orthanc below"
            " 1 is the node faster, for ingest above 1):"
        )
        print(
            f"  {'measure':20s} {'studies':>8s} {'node':>8s} {'Orthanc':>8s} "
            f"{'node/Orthanc':>13s} {'x1k':>6s}"
        )
        for measure in measures:
            first = results[(node, sizes[0], measure)][0]
            for size in sizes:
                mine, theirs = results[(node, size, measure)]
                growth = first / mine if measure.startswith("ingest") else mine / first
                print(
                    f"  {measure:20s} {size:8d} {mine:8.1f} {theirs:8.1f} "
                    f"{mine / theirs:13.2f} {growth:6.2f}"
                )


if __name__ == "__main__":
    main()
