"""Start-up cost: how long `dicom-node check-config config/node.yaml` takes, how long `serve` takes
until `/healthz` answers, and the resident memory of each process of an idle node: before any job,
after a job in which no model ran (the shared small CT: one instance, no route), and after one in
which a model ran (the shared NEMA chest CR: the chest X-ray classifier).

Each round runs the commands of this tree and, with `--against PATH` (another checkout, e.g. an
older commit), of that one, alternately, so both meet the same machine load. `--cold` first drops
the installed packages and both trees from the page cache (posix_fadvise DONTNEED, file by file:
nothing else on the machine is evicted), as after a reboot.

    python benchmarks/startup.py [--rounds 5] [--cold] [--against /tmp/cli-base]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml
from pydicom import dcmread
from pynetdicom import AE

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT / "benchmarks"))
from soak import process_tree  # noqa: E402

#: (what the job does, the file sent); each becomes a study of its own
JOBS = (
    ("no model", DATA / "dicom_transfer_syntaxes_pydicom" / "CT_small.dcm"),
    ("a model", DATA / "cxr_dicom" / "nema_wg04_RG1_J2KI_cr_chest_pa.dcm"),
)
IDLE_SECONDS = 20


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def evict(folder: Path) -> None:
    """Drop the folder's files from the page cache."""
    for path in folder.rglob("*"):
        try:
            if path.is_file() and not path.is_symlink():
                with path.open("rb") as handle:
                    os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        except OSError:
            continue


def environment(tree: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(tree)}


def check_config(tree: Path) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "dicom_node", "check-config", "config/node.yaml"],
        cwd=tree,
        env=environment(tree),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def resident_mib(pid: int) -> dict[int, float]:
    """MiB resident of each process of the node, by process id."""
    found = {}
    for process in process_tree(pid):
        try:
            status = Path(f"/proc/{process}/status").read_text()
        except OSError:
            continue
        rss = next(line for line in status.splitlines() if line.startswith("VmRSS"))
        found[process] = int(rss.split()[1]) / 1024
    return found


def roles(pid: int) -> dict[int, str]:
    """The node's processes before any job: main, receivers, multiprocessing's tracker."""
    named = {}
    for process in process_tree(pid):
        command = Path(f"/proc/{process}/cmdline").read_bytes().decode(errors="replace")
        named[process] = (
            "main"
            if process == pid
            else "resource tracker"
            if "resource_tracker" in command
            else "receiver"
        )
    return named


def finished_jobs(http: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{http}/status", timeout=10) as answer:
        jobs = json.load(answer)["jobs"]
    return jobs.get("done", 0) + jobs.get("failed", 0)


def run_job(dicom_port: int, http: int, path: Path) -> None:
    """C-STORE one file (a study of its own) and wait until its job has finished."""
    before = finished_jobs(http)
    meta = dcmread(path, stop_before_pixels=True).file_meta
    ae = AE("STARTUP")
    ae.add_requested_context(meta.MediaStorageSOPClassUID, meta.TransferSyntaxUID)
    association = ae.associate("127.0.0.1", dicom_port, ae_title="AI_NODE")
    association.send_c_store(path)
    association.release()
    while finished_jobs(http) == before:
        time.sleep(0.2)


def serve(tree: Path, work: Path) -> tuple[float, dict[str, dict[str, float]]]:
    """Seconds until /healthz answers, and each process' memory after IDLE_SECONDS idle: at
    start, after a job without a model, after a job with one."""
    config = yaml.safe_load((tree / "config" / "node.yaml").read_text())
    http, dicom_port = free_port(), free_port()
    config["dicom"]["port"] = dicom_port
    config["http"]["port"] = http
    config["storage"]["path"] = str(work / "storage")
    config["study"] = {"stable_seconds": 1, "check_interval_seconds": 0.2}
    path = work / "node.yaml"
    path.write_text(yaml.safe_dump(config))
    started = time.perf_counter()
    node = subprocess.Popen(
        [sys.executable, "-m", "dicom_node", "serve", "--config", str(path)],
        cwd=tree,
        env=environment(tree),
        stderr=subprocess.DEVNULL,
    )
    try:
        while True:
            if node.poll() is not None:
                raise SystemExit(f"{tree}: serve exited with {node.returncode}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http}/healthz", timeout=1):
                    break
            except OSError:
                time.sleep(0.05)
        ready = time.perf_counter() - started
        time.sleep(IDLE_SECONDS)
        named = roles(node.pid)
        memory = {"at start": resident_mib(node.pid)}
        for what, file in JOBS:
            run_job(dicom_port, http, file)
            time.sleep(IDLE_SECONDS)
            memory[f"after a job with {what}"] = resident_mib(node.pid)
        return ready, {
            moment: {named.get(pid, "job worker"): mib for pid, mib in sizes.items()}
            for moment, sizes in memory.items()
        }
    finally:
        node.send_signal(signal.SIGTERM)
        node.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cold", action="store_true", help="evict packages and trees first")
    parser.add_argument("--against", type=Path, help="another checkout, measured alternately")
    args = parser.parse_args()
    trees = {"this tree": ROOT} | ({"against": args.against.resolve()} if args.against else {})
    packages = Path(sysconfig.get_paths()["purelib"])
    checks: dict[str, list[float]] = {name: [] for name in trees}
    ready: dict[str, list[float]] = {name: [] for name in trees}
    memory: dict[str, dict[str, dict[str, float]]] = {}
    for _ in range(args.rounds):
        for name, tree in trees.items():
            for measure in ("check", "serve"):
                if args.cold:
                    for folder in (packages, *trees.values()):
                        evict(folder)
                if measure == "check":
                    checks[name].append(check_config(tree))
                    continue
                with tempfile.TemporaryDirectory(prefix="startup-") as work:
                    seconds, memory[name] = serve(tree, Path(work))
                ready[name].append(seconds)
    print(f"{'cold' if args.cold else 'warm'} start, {args.rounds} rounds, medians (all runs):")
    for name, tree in trees.items():
        runs = ", ".join(f"{s:.1f}" for s in checks[name])
        print(f"{name} ({tree}):")
        print(f"  check-config config/node.yaml: {statistics.median(checks[name]):.1f} s ({runs})")
        runs = ", ".join(f"{s:.1f}" for s in ready[name])
        print(f"  serve until /healthz answers:  {statistics.median(ready[name]):.1f} s ({runs})")
        print(f"  resident memory, MiB, each after {IDLE_SECONDS} s idle (last round):")
        moments = list(memory[name])
        print(f"    {'process':<17}" + "".join(f"{moment:>26}" for moment in moments))
        processes = dict.fromkeys(p for sizes in memory[name].values() for p in sizes)
        for process in processes:
            sizes = [memory[name][moment].get(process) for moment in moments]
            print(
                f"    {process:<17}"
                + "".join(f"{'-' if mib is None else round(mib):>26}" for mib in sizes)
            )
        totals = [round(sum(memory[name][moment].values())) for moment in moments]
        print(f"    {'all':<17}" + "".join(f"{total:>26}" for total in totals))


if __name__ == "__main__":
    main()
