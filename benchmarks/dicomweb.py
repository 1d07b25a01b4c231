"""DICOMweb speed of the node against Orthanc's DICOMweb plugin, on the same data in the same run.

Loads into both (storescu on loopback) 300-slice 512x512 CT series (uncompressed), a 30-slice
series of the shared CT as stored (JPEG Lossless) and 999 one-instance studies (so about 1,000
studies are indexed), then measures, alternating between the two servers:
- QIDO-RS `GET /studies` (all studies): median latency over 200 calls;
- WADO-RS `metadata` of a 300-slice series the first time it is asked for (no cache warm on
  either side: one call per series, median over the series, which server goes first alternates);
- WADO-RS `metadata` of the same series again: median latency of 20 calls;
- WADO-RS retrieval of the 300-slice series as stored (multipart/related application/dicom):
  MB/s, median of 5;
- WADO-RS retrieval of the 30-slice compressed series as stored: median latency of 20 calls,
  and the server process's CPU time (user and system, all its threads) per call over them: less
  disturbed than latency by other load on the machine; then the same with curl as the client
  (20 transfers in one curl, on one connection where the server keeps it, as a browser does):
  `requests` spends about 9 ms of its own reading the 5.6 MB in 10 kB chunks, which hides most of
  the servers' difference;
- the first frame of each of those 30 instances, one request each, as OHIF loads a series
  (multipart, the frames as stored): median time for all 30 over 20 turns, and CPU per frame.
Prints each figure for both and the Orthanc/node ratio of times (node/Orthanc of rates): >= 1.0
means the node is as fast.

    python benchmarks/dicomweb.py [--studies 1000] [--calls 200] [--first-series 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import OrthancPeer, load_template_slices, send, start_node, write_series  # noqa: E402

from tests.conftest import CT_SERIES, TRANSFER_SYNTAXES, dcmtk  # noqa: E402

SMALL_CT = TRANSFER_SYNTAXES / "CT_small.dcm"
AS_STORED = 'multipart/related; type="application/dicom"; transfer-syntax=*'
FRAMES_AS_STORED = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'


def write_small_studies(count: int, folder: Path) -> None:
    """`count` one-instance studies (pydicom's small CT with new UIDs and patient IDs)."""
    folder.mkdir(parents=True)
    dataset = dcmread(SMALL_CT)
    for number in range(count):
        dataset.PatientID = f"BENCH{number:05d}"
        dataset.StudyInstanceUID = generate_uid()
        dataset.SeriesInstanceUID = generate_uid()
        dataset.SOPInstanceUID = generate_uid()
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        dataset.save_as(folder / f"{number:05d}.dcm", enforce_file_format=True)


def write_compressed_series(count: int, folder: Path) -> None:
    """The first `count` slices of the shared CT as stored (JPEG Lossless), fresh UIDs."""
    folder.mkdir(parents=True)
    study, series = generate_uid(), generate_uid()
    for number, path in enumerate(sorted(CT_SERIES.glob("*.dcm"))[:count]):
        dataset = dcmread(path)
        dataset.StudyInstanceUID, dataset.SeriesInstanceUID = study, series
        dataset.SOPInstanceUID = generate_uid()
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        dataset.save_as(folder / f"{number:04d}.dcm", enforce_file_format=True)


def series_path(folder: Path) -> str:
    """`/studies/{study}/series/{series}` of the series in `folder`."""
    header = dcmread(next(folder.glob("*.dcm")), stop_before_pixels=True)
    return f"/studies/{header.StudyInstanceUID}/series/{header.SeriesInstanceUID}"


def timed(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def cpu_seconds(pid: int) -> float:
    """The CPU time (user and system) process `pid` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def get(url: str, accept: str) -> bytes:
    answer = requests.get(url, headers={"Accept": accept}, timeout=300)
    answer.raise_for_status()
    return answer.content


def curl_times(url: str, transfers: int) -> list[float]:
    """Seconds of each of `transfers` retrievals of `url` as stored, by one curl process."""
    command = ["curl", "-sS", "--fail", "-H", f"Accept: {AS_STORED}", "-w", "%{time_total}\\n"]
    for _ in range(transfers):
        command += ["-o", "/dev/null", url]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return [float(line) for line in done.stdout.split()]


def row(label: str, node: float, orthanc: float, rate: bool = False) -> str:
    """One line of the table; the ratio is >= 1.0 where the node is as fast."""
    ratio = node / orthanc if rate else orthanc / node
    return f"{label:36}{node:12.1f}{orthanc:12.1f}{ratio:8.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=1000)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--first-series", type=int, default=3, help="300-slice series")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="dicomweb-bench-"))
    try:
        templates = load_template_slices()
        big = [work / f"ct{number}" for number in range(args.first_series)]
        for folder in big:
            write_series(templates, 300, folder)
        write_compressed_series(30, work / "compressed")
        write_small_studies(args.studies - 1 - len(big), work / "small")
        node, node_port, node_http = start_node(work, args.workers)
        orthanc = OrthancPeer(work / "orthanc", dicomweb=True)
        orthanc.start()
        servers = {
            "node": (node_port, "AI_NODE", f"http://127.0.0.1:{node_http}/dicomweb"),
            "Orthanc": (orthanc.dicom_port, "ORTHANC", orthanc.dicomweb_url),
        }
        pids = {"node": node.pid, "Orthanc": orthanc.pid}
        try:
            for name, (port, ae, _) in servers.items():
                seconds, ok = send(port, ae, [*big, work / "small"])
                # storescu offers one syntax per SOP class; dcmsend the compressed slices as such.
                compressed = dcmtk(
                    "dcmsend",
                    "--decompress-never",
                    "-aec",
                    ae,
                    "127.0.0.1",
                    str(port),
                    "--scan-directories",
                    str(work / "compressed"),
                )
                if not ok or compressed.returncode != 0:
                    sys.exit(f"loading {name} failed")
                print(f"loaded {name} in {seconds:.1f} s")
            results = measure(servers, pids, big, work / "compressed", args.calls)
        finally:
            node.terminate()
            node.wait(timeout=60)
            orthanc.stop()
        median = {
            name: {key: statistics.median(values) for key, values in figures.items()}
            for name, figures in results.items()
        }
        node_m, orthanc_m = median["node"], median["Orthanc"]
        print(f"{'':36}{'node':>12}{'Orthanc':>12}{'ratio':>8}")
        for label, key, scale in [
            ("QIDO /studies median (ms)", "qido", 1000),
            ("first series metadata (ms)", "first_metadata", 1000),
            ("series metadata again (ms)", "metadata", 1000),
            ("30 compressed slices WADO (ms)", "small_wado", 1000),
            ("  CPU per call (ms)", "small_wado_cpu", 1000),
            ("  the same with curl (ms)", "small_wado_curl", 1000),
            ("their 30 first frames, one by one (ms)", "frames", 1000),
            ("  CPU per frame (ms)", "frames_cpu", 1000),
        ]:
            print(row(label, node_m[key] * scale, orthanc_m[key] * scale))
        print(
            row("300-slice series WADO (MB/s)", node_m["wado"] / 1e6, orthanc_m["wado"] / 1e6, True)
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure(
    servers: dict[str, tuple[int, str, str]],
    pids: dict[str, int],
    big: list[Path],
    compressed: Path,
    calls: int,
) -> dict[str, dict[str, list[float]]]:
    """Each figure's samples per server, the servers taking turns (and turns about going
    first), so load from elsewhere on the machine falls on both alike."""
    results: dict[str, dict[str, list[float]]] = {
        name: {
            "qido": [],
            "first_metadata": [],
            "metadata": [],
            "wado": [],
            "small_wado": [],
            "small_wado_cpu": [],
            "small_wado_curl": [],
            "frames": [],
            "frames_cpu": [],
        }
        for name in servers
    }
    urls = {name: url for name, (_, _, url) in servers.items()}

    def turns(number: int) -> list[tuple[str, str]]:
        order = list(urls.items())
        return order if number % 2 == 0 else order[::-1]

    def json_get(url: str) -> bytes:
        return get(url, "application/dicom+json")

    found = {
        name: len(requests.get(f"{url}/studies", timeout=60).json()) for name, url in urls.items()
    }
    print(f"studies found by QIDO: {found}")
    for number, folder in enumerate(big):
        for name, url in turns(number):
            metadata_url = f"{url}{series_path(folder)}/metadata"
            results[name]["first_metadata"].append(timed(lambda u=metadata_url: json_get(u)))
    for number in range(calls):
        for name, url in turns(number):
            results[name]["qido"].append(timed(lambda u=f"{url}/studies": json_get(u)))
    for number in range(20):
        for name, url in turns(number):
            metadata_url = f"{url}{series_path(big[0])}/metadata"
            results[name]["metadata"].append(timed(lambda u=metadata_url: json_get(u)))
    sizes = {}
    cpu = dict.fromkeys(servers, 0.0)  # summed per server: /proc counts in clock ticks (10 ms)
    for number in range(20):
        for name, url in turns(number):
            small_url = url + series_path(compressed)
            cpu_before = cpu_seconds(pids[name])
            started = time.perf_counter()
            sizes[name] = len(get(small_url, AS_STORED))
            results[name]["small_wado"].append(time.perf_counter() - started)
            cpu[name] += cpu_seconds(pids[name]) - cpu_before
    for name, seconds in cpu.items():
        results[name]["small_wado_cpu"].append(seconds / 20)
    print(f"30 compressed slices retrieved: {sizes}")
    for number in range(10):
        for name, url in turns(number):
            results[name]["small_wado_curl"] += curl_times(url + series_path(compressed), 20)
    slices = sorted(compressed.glob("*.dcm"))
    instances = [
        f"{series_path(compressed)}/instances/{uid}"
        for uid in (dcmread(path, stop_before_pixels=True).SOPInstanceUID for path in slices)
    ]
    cpu = dict.fromkeys(servers, 0.0)
    for number in range(20):
        for name, url in turns(number):
            cpu_before = cpu_seconds(pids[name])
            started = time.perf_counter()
            sizes[name] = sum(len(get(f"{url}{i}/frames/1", FRAMES_AS_STORED)) for i in instances)
            results[name]["frames"].append(time.perf_counter() - started)
            cpu[name] += cpu_seconds(pids[name]) - cpu_before
    for name, seconds in cpu.items():
        results[name]["frames_cpu"].append(seconds / 20 / len(instances))
    print(f"30 first frames retrieved: {sizes}")
    for number in range(5):
        for name, url in turns(number):
            started = time.perf_counter()
            size = len(get(url + series_path(big[0]), AS_STORED))
            results[name]["wado"].append(size / (time.perf_counter() - started))
    return results


if __name__ == "__main__":
    main()
