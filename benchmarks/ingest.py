"""Ingest speed of the node against Orthanc, both fed by DCMTK's storescu on loopback, with
DCMTK's storescp beside them as the machine's limit.

Builds 300-slice 512x512 CT series (uncompressed, from the shared real CT, new UIDs for every
run), or with `--small` series of small instances (the CT's header with 64x64 pixels, 10 kB),
starts `dicom-node serve` (SQLite index, or with `--postgresql` a fresh PostgreSQL database),
Orthanc (Debian package, default SQLite index) and storescp (one process per association, files
written without any flush and nothing indexed) with throw-away configurations, then sends
alternately to each, five times: first with one storescu, then with four in parallel (each with
its own series). Prints instances/s and MB/s, the medians and the ratios to Orthanc, and the
CPU the node's and Orthanc's processes spent per instance (user and system time; the node's
also after receiving: the metadata documents it writes once idle), and before each round how
fast the page cache takes new data (see `page_cache_write_rate`: on some VMs it sets the
system time of every receiver). Every send waits until the node is idle, so that its deferred
work does not run during another receiver's turn; on a shared machine the CPU figure is the
steadier one.

    python benchmarks/ingest.py [--rounds 5] [--workers 2] [--slices 300] [--small] [--postgresql]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# The tests' own helpers start the peers: the benchmark runs Orthanc as the tests do.
from tests.conftest import (  # noqa: E402
    CT_SERIES,
    TOOL_ENV,
    free_port,
    new_database,
    wait_for_port,
)
from tests.orthanc import OrthancPeer  # noqa: E402

STORESCU = "/usr/bin/storescu"
STORESCP = "/usr/bin/storescp"
#: side of the small instances' image: 8 kB of pixels, about 10 kB a file
SMALL_SIDE = 64
_TICKS = os.sysconf("SC_CLK_TCK")
#: the node counts as idle once its processes use less than this share of a core
_IDLE_SHARE = 0.05


def load_template_slices(small: bool = False) -> list:
    files = sorted(CT_SERIES.glob("*.dcm"))
    if not files:
        sys.exit(f"no CT found in {CT_SERIES}")
    slices = []
    for path in files:
        dataset = dcmread(path)
        dataset.decompress()  # benchmark plain 0.5 MB instances, as most modalities send
        if small:  # the same header (a real modality's), a thumbnail's pixels
            step = dataset.Rows // SMALL_SIDE
            pixels = dataset.pixel_array[::step, ::step]
            dataset.PixelData = np.ascontiguousarray(pixels).tobytes()
            dataset.Rows, dataset.Columns = pixels.shape
        slices.append(dataset)
    return slices


def write_series(templates: list, count: int, folder: Path) -> int:
    """Write `count` slices with fresh UIDs into `folder`; return the bytes written."""
    folder.mkdir(parents=True)
    study, series = generate_uid(), generate_uid()
    total = 0
    for number in range(count):
        dataset = templates[number % len(templates)]
        dataset.StudyInstanceUID = study
        dataset.SeriesInstanceUID = series
        dataset.SOPInstanceUID = generate_uid()
        dataset.InstanceNumber = number + 1
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"{number:04d}.dcm"
        dataset.save_as(path, enforce_file_format=True)
        total += path.stat().st_size
    return total


def send(port: int, called_ae: str, folders: list[Path]) -> tuple[float, bool]:
    """Run one storescu per folder in parallel; return (seconds, all succeeded)."""
    started = time.perf_counter()
    senders = [
        subprocess.Popen(
            [STORESCU, "-aec", called_ae, "127.0.0.1", str(port), "+sd", str(folder)],
            env=TOOL_ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for folder in folders
    ]
    ok = True
    for sender in senders:
        _, errors = sender.communicate()
        if sender.returncode != 0 or b"E:" in errors:
            ok = False
    return time.perf_counter() - started, ok


def process_tree(pid: int) -> list[int]:
    """A process and its children, theirs included."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                todo += [int(child) for child in task.read_text().split()]
            except OSError:
                continue  # the thread or process ended meanwhile
    return found


def cpu_times(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of a process and its children (the receiving processes)."""
    user = system = 0
    for process in process_tree(pid):
        try:
            fields = Path(f"/proc/{process}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        user += int(fields[11])
        system += int(fields[12])
    return user / _TICKS, system / _TICKS


def cpu_seconds(pid: int) -> float:
    return sum(cpu_times(pid))


def page_cache_write_rate(folder: Path, size: int = 64 << 20) -> float:
    """GB/s at which this machine takes new data into its page cache now (a file written, not
    flushed, then removed). On a VM whose memory the host backs only when first touched (and
    takes back once free again), this falls from several GB/s to about 0.4 whenever the page
    cache grows into such memory; every receiver's writes then cost about 1.2 ms more of
    system time per 0.5 MB instance, which narrows the ratios between them."""
    path = folder / "page-cache-probe"
    block = b"\1" * (1 << 20)
    started = time.perf_counter()
    with open(path, "wb") as stream:
        for _ in range(size >> 20):
            stream.write(block)
    elapsed = time.perf_counter() - started
    path.unlink()
    return size / elapsed / 1e9


def wait_until_idle(*pids: int, interval: float = 0.5, patience: float = 120.0) -> None:
    """Return once the processes `pids` (with their children) have been (nearly) idle for
    `interval` seconds together."""
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        before = sum(cpu_seconds(pid) for pid in pids)
        time.sleep(interval)
        if sum(cpu_seconds(pid) for pid in pids) - before < _IDLE_SHARE * interval:
            return
    print("  still busy: measuring anyway")


def start_node(
    work: Path, workers: int, database: str | None = None
) -> tuple[subprocess.Popen, int, int]:
    """The node on fresh ports: (process, DICOM port, HTTP port)."""
    port, http = free_port(), free_port()
    config = work / "node.yaml"
    config.write_text(
        json.dumps(
            {
                "dicom": {"port": port, "workers": workers},
                "http": {"port": http},
                "storage": {"path": str(work / "node-storage"), "database": database},
                "study": {"stable_seconds": 3600},
                "logging": {"level": "WARNING"},
            }
        )
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "dicom_node", "--config", str(config), "serve"], cwd=ROOT
    )
    wait_for_port(port, process)
    wait_for_port(http, process)
    return process, port, http


def start_storescp(work: Path) -> tuple[subprocess.Popen, int]:
    """DCMTK's storescp on a fresh port, one child process per association (so that parallel
    senders are served in parallel): (process, port)."""
    port = free_port()
    folder = work / "storescp"
    folder.mkdir()
    process = subprocess.Popen(
        [STORESCP, "--fork", "-aet", "STORESCP", "-od", str(folder), str(port)],
        env=TOOL_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port, process)
    return process, port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--workers", type=int, default=2, help="node receiving processes")
    parser.add_argument("--small", action="store_true", help="10 kB instances, not 0.5 MB")
    parser.add_argument("--postgresql", action="store_true", help="the node's index on PostgreSQL")
    args = parser.parse_args()

    templates = load_template_slices(args.small)
    work = Path(tempfile.mkdtemp(prefix="ingest-bench-"))
    stack = ExitStack()
    database = stack.enter_context(new_database("postgresql", work)) if args.postgresql else None
    node, node_port, _ = start_node(work, args.workers, database)
    orthanc = OrthancPeer(work / "orthanc")
    orthanc.start()
    storescp, storescp_port = start_storescp(work)
    receivers = {
        "node": (node_port, "AI_NODE"),
        "orthanc": (orthanc.dicom_port, "ORTHANC"),
        "storescp": (storescp_port, "STORESCP"),
    }
    #: whose CPU is measured (storescp's is spent in children that are gone when it ends)
    measured = {"node": node.pid, "orthanc": orthanc.pid}
    results: dict[tuple[str, int], list[tuple[float, float]]] = {}
    #: per receiver and number of senders: CPU ms per instance, user and system
    cpu_used: dict[tuple[str, int], list[tuple[float, float]]] = {}
    #: per number of senders: the node's CPU ms per instance after receiving
    node_after: dict[int, list[float]] = {}
    try:
        for senders in (1, 4):
            for round_number in range(args.rounds):
                probe = page_cache_write_rate(work)
                print(
                    f"{senders} sender(s), round {round_number + 1}: "
                    f"the page cache takes {probe:.1f} GB/s"
                )
                for name, (port, ae) in receivers.items():
                    for attempt in range(3):
                        batch = work / f"series-{name}-{senders}-{round_number}-{attempt}"
                        folders = [batch / str(i) for i in range(senders)]
                        size = sum(write_series(templates, args.slices, f) for f in folders)
                        # The series just written must not be flushed to disk during the
                        # run, competing with the receiver's own writes.
                        os.sync()
                        wait_until_idle(node.pid)
                        pid = measured.get(name)
                        cpu_before = cpu_times(pid) if pid else (0.0, 0.0)
                        seconds, ok = send(port, ae, folders)
                        cpu_received = cpu_times(pid) if pid else (0.0, 0.0)
                        shutil.rmtree(batch)
                        if ok:
                            break
                        # Orthanc 1.10 can answer 0xA700 under parallel senders (a storage
                        # folder race fixed upstream): retry the run with new UIDs.
                        print(f"  {name}: a sender reported failures, retrying this run")
                    else:
                        print(f"  {name}: failures in 3 attempts; figures kept but suspect")
                    count = args.slices * senders
                    rate, throughput = count / seconds, size / seconds / 1e6
                    results.setdefault((name, senders), []).append((rate, throughput))
                    cpu = ""
                    if name in measured:
                        user, system = (
                            (cpu_received[i] - cpu_before[i]) / count * 1000 for i in (0, 1)
                        )
                        cpu_used.setdefault((name, senders), []).append((user, system))
                        cpu = f", CPU {user:.2f} user + {system:.2f} system ms per instance"
                    if name == "node":
                        wait_until_idle(node.pid)
                        after = (cpu_seconds(node.pid) - sum(cpu_received)) / count * 1000
                        node_after.setdefault(senders, []).append(after)
                        cpu += f" (+{after:.2f} after)"
                    print(
                        f"{senders} sender(s), round {round_number + 1}, {name:8s}: "
                        f"{rate:7.1f} instances/s {throughput:7.1f} MB/s "
                        f"({count} in {seconds:.2f} s{cpu}), load {os.getloadavg()[0]:.2f}"
                    )
    finally:
        node.send_signal(signal.SIGTERM)
        node.wait(timeout=60)
        orthanc.stop()
        storescp.terminate()
        storescp.wait(timeout=30)
        stack.close()
        shutil.rmtree(work, ignore_errors=True)

    kind = f"{SMALL_SIDE}x{SMALL_SIDE}" if args.small else "512x512 CT"
    index = "PostgreSQL" if args.postgresql else "SQLite"
    print(
        f"\nmedians ({args.slices}-slice {kind}, node on {index} with {args.workers} "
        "receiving processes; storescp flushes and indexes nothing):"
    )
    for senders in (1, 4):
        medians = {
            name: (
                statistics.median(r for r, _ in results[(name, senders)]),
                statistics.median(t for _, t in results[(name, senders)]),
            )
            for name in receivers
        }
        orthanc_rate = medians["orthanc"][0]
        print(
            f"  {senders} sender(s): "
            + ", ".join(
                f"{name} {rate:.1f}/s ({throughput:.1f} MB/s, {rate / orthanc_rate:.2f}× Orthanc)"
                for name, (rate, throughput) in medians.items()
            )
        )
        for name in measured:
            user = statistics.median(u for u, _ in cpu_used[(name, senders)])
            system = statistics.median(s for _, s in cpu_used[(name, senders)])
            after = (
                f", {statistics.median(node_after[senders]):.2f} after" if name == "node" else ""
            )
            print(
                f"    {name} CPU per instance while receiving: {user:.2f} ms user + "
                f"{system:.2f} ms system{after}"
            )


if __name__ == "__main__":
    main()
