"""The whole CT job on this machine: the node's own job code on the shared chest CT.

    python benchmarks/ct_job.py [--runs 4] [--ct ../shared/data/ct_chest_midrc_ricord_1a]
                                [--profile FILE] [--keep DIR]

Stores the CT in a throw-away storage area through the node's ingest path (new UIDs for every run,
so each run is a new study, as a worker meets them), writes its job row as the stability monitor
does, and runs the job in this process as a job worker does (its garbage collection settings,
`run_study_job` on a `StudyJobContext` opened once): read the headers, route, de-identify, decode,
segment, encode the SEG and the SR, re-identify, store and index. The job's own functions are
wrapped with stopwatches (only the outermost of nested ones counts), so the split is that of the
real path; "other" is the rest (routing, job notes, audit). Prints each run's split, the first run
(a new worker's first job) apart from the median of the later ones, the total against the issue's
10 s target, and the process's peak memory. ``--profile`` writes cProfile statistics of the last
run; ``--keep DIR`` copies the SEG and SR each run stored there (the UIDs of run N are the same in
every version of the code, so two versions' results can be compared).
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import importlib
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from pydicom import Dataset, dcmread
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import generate_uid

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dicom_node.audit import open_trail  # noqa: E402
from dicom_node.config import parse_config  # noqa: E402
from dicom_node.index.database import open_engine  # noqa: E402
from dicom_node.index.jobs import claim, finish, notes  # noqa: E402
from dicom_node.index.studies import complete_quiet_studies  # noqa: E402
from dicom_node.index.writer import IndexWriter  # noqa: E402
from dicom_node.jobs.context import StudyJobContext  # noqa: E402
from dicom_node.jobs.runner import collect_garbage_for_jobs  # noqa: E402
from dicom_node.jobs.study import run_study_job  # noqa: E402
from dicom_node.store.ingest import Ingest  # noqa: E402
from dicom_node.store.storage import StorageArea  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
TARGET_SECONDS = 10.0
#: (module, attribute, step): the job's functions timed, in the order the split is printed;
#: an attribute a version of the code does not have is skipped.
STEPS = (
    ("dicom_node.jobs.study", "_read", "read headers"),
    ("dicom_node.deid.deidentify", "Deidentifier.__call__", "de-identify"),
    ("dicom_node.index.pseudonyms", "PseudonymTable.save", "de-identify"),
    ("dicom_node.jobs.results", "load_ct_series", "decode"),
    ("dicom_node.jobs.results", "segment", "model"),
    ("dicom_node.jobs.results", "encode_segmentation", "SEG encode"),
    ("dicom_node.jobs.results", "encode_measurements", "SR encode"),
    ("dicom_node.jobs.results", "reidentify", "re-identify"),
    ("dicom_node.jobs.results", "encode_instance", "store/index"),
    ("dicom_node.jobs.results", "store_own_instance", "store/index"),
    ("dicom_node.jobs.results", "_queue", "store/index"),
)


def cpu_seconds() -> float:
    """CPU time of this process and of its ended children (the decoding processes)."""
    return sum(os.times()[:4])


class Stopwatch:
    """Wall and CPU seconds per step; a timed call inside another timed call counts for the
    outer one. On a shared machine the CPU seconds are the steadier figure."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self._depth = 0

    def clear(self) -> None:
        self.seconds.clear()
        self.cpu.clear()

    def wrap(self, step: str, function: Callable) -> Callable:
        @functools.wraps(function)
        def timed(*args, **kwargs):
            self._depth += 1
            started, cpu = time.perf_counter(), cpu_seconds()
            try:
                return function(*args, **kwargs)
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self.seconds[step] += time.perf_counter() - started
                    self.cpu[step] += cpu_seconds() - cpu

        return timed

    def install(self) -> list[str]:
        """Wrap every step the code has; the steps in print order."""
        order: list[str] = []
        for module_name, attribute, step in STEPS:
            owner: object = importlib.import_module(module_name)
            *path, name = attribute.split(".")
            for part in path:
                owner = getattr(owner, part)
            if not hasattr(owner, name):
                continue
            setattr(owner, name, self.wrap(step, getattr(owner, name)))
            if step not in order:
                order.append(step)
        return order


def templates(folder: Path) -> list[Dataset]:
    files = sorted(folder.glob("*.dcm"))
    if not files:
        sys.exit(f"no CT found in {folder}")
    return [dcmread(path) for path in files]


def store_new_study(ingest: Ingest, slices: list[Dataset], number: int) -> str:
    """The CT under the UIDs of run ``number``, stored as if received (its own transfer
    syntax); the study UID."""

    def uid(*parts: object) -> str:
        return generate_uid(entropy_srcs=["ct_job benchmark", str(number), *map(str, parts)])

    study, series, frame = uid("study"), uid("series"), uid("frame")
    for index, dataset in enumerate(slices):
        dataset.StudyInstanceUID, dataset.SeriesInstanceUID = study, series
        dataset.FrameOfReferenceUID = frame
        dataset.SOPInstanceUID = uid(index)
        syntax = dataset.file_meta.TransferSyntaxUID
        buffer = DicomBytesIO()
        buffer.is_little_endian, buffer.is_implicit_VR = True, syntax.is_implicit_VR
        write_dataset(buffer, dataset)
        ingest.store(
            buffer.getvalue(), syntax, dataset.SOPClassUID, dataset.SOPInstanceUID, "BENCH"
        )
    return study


def keep_results(root: Path, target: Path) -> None:
    """Copy the SEG and SR files stored so far and not kept yet, named by SOP class."""
    kept = {path.name for path in target.parent.glob("run*/*")} if target.parent.is_dir() else set()
    target.mkdir(parents=True, exist_ok=True)
    for path in root.rglob("*"):
        if not path.is_file() or path.suffix in (".db", ".log", ".key", ".lock"):
            continue
        try:
            header = dcmread(path, stop_before_pixels=True)
        except Exception:
            continue
        name = f"{header.Modality}-{header.SOPInstanceUID}.dcm"
        if header.Modality in ("SEG", "SR") and name not in kept:
            shutil.copy(path, target / name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--ct", type=Path, default=SHARED / "ct_chest_midrc_ricord_1a")
    parser.add_argument("--profile", type=Path, help="cProfile statistics of the last run")
    parser.add_argument("--keep", type=Path, help="a folder for the results of each run")
    args = parser.parse_args()
    slices = templates(args.ct)
    with tempfile.TemporaryDirectory(prefix="ct-job-") as folder:
        config = parse_config({"storage": {"path": folder}})
        engine = open_engine(config.storage.database_url, create=True)
        writer = IndexWriter(engine, config.storage.duplicates)
        storage = StorageArea(config.storage.path)
        storage.prepare()
        ingest = Ingest(storage, writer, config.storage.duplicates, config.dicom.inflated_limit)
        # What a job worker does when it starts (jobs/runner.py), but to die with its node
        collect_garbage_for_jobs()
        open_trail(config.audit, config.audit_file, config.ae_title)
        started = time.perf_counter()
        context = StudyJobContext.open(config)
        print(
            f"CT job, {len(slices)} slices of {args.ct.name}; worker context opened in "
            f"{time.perf_counter() - started:.2f} s"
        )
        stopwatch = Stopwatch()
        order = stopwatch.install()
        runs: list[dict[str, float]] = []
        cpus: list[dict[str, float]] = []
        for number in range(1, args.runs + 1):
            study = store_new_study(ingest, slices, number)
            now = time.time()
            complete_quiet_studies(engine, now + 1, now)
            job = claim(engine)
            assert job is not None and job.study_instance_uid == study
            stopwatch.clear()
            profiler = cProfile.Profile() if args.profile and number == args.runs else None
            started, cpu = time.perf_counter(), cpu_seconds()
            if profiler:
                profiler.enable()
            run_study_job(context, job.id, study)
            if profiler:
                profiler.disable()
                profiler.dump_stats(args.profile)
            total, total_cpu = time.perf_counter() - started, cpu_seconds() - cpu
            finish(engine, job.id)
            split = {step: stopwatch.seconds.get(step, 0.0) for step in order}
            split["other"] = total - sum(split.values())
            split["total"] = total
            split_cpu = {step: stopwatch.cpu.get(step, 0.0) for step in order}
            split_cpu["other"] = total_cpu - sum(split_cpu.values())
            split_cpu["total"] = total_cpu
            runs.append(split)
            cpus.append(split_cpu)
            print(
                f"  run {number} (wall/CPU s): "
                + ", ".join(f"{k} {v:.2f}/{split_cpu[k]:.2f}" for k, v in split.items())
            )
            if number == 1:
                print("    " + "\n    ".join(notes(engine, job.id)))
            if args.keep:
                keep_results(Path(folder), args.keep / f"run{number}")
        writer.close()
    later, later_cpu = runs[1:] or runs, cpus[1:] or cpus
    median = {step: statistics.median(run[step] for run in later) for step in runs[0]}
    median_cpu = {step: statistics.median(run[step] for run in later_cpu) for step in runs[0]}
    print(f"first job of the worker: total {runs[0]['total']:.2f} s")
    print(f"median of runs 2-{len(runs)}:   wall s   CPU s")
    for step, seconds in median.items():
        print(f"  {step:14s} {seconds:8.2f} {median_cpu[step]:7.2f}")
    verdict = "met" if median["total"] <= TARGET_SECONDS else "NOT met"
    print(f"total {median['total']:.2f} s against the target <= {TARGET_SECONDS:.0f} s: {verdict}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    decoder = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2
    print(f"peak memory: this process {peak:.2f} GB, the largest decoding process {decoder:.2f} GB")


if __name__ == "__main__":
    main()
