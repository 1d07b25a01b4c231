"""DICOMweb speed of the node against Orthanc's DICOMweb plugin, on the same data in the same run.

Loads into both (storescu on loopback) a 300-slice 512x512 CT series and 999 one-instance
studies (so 1,000 studies are indexed), then measures, alternating between the two servers:
- QIDO-RS `GET /studies` (all 1,000 studies): median latency over 200 calls;
- WADO-RS retrieval of the CT series as stored (multipart/related application/dicom): MB/s,
  median of 5;
- WADO-RS `metadata` of the CT series: median latency of 20 calls.
Prints each figure for both and the node/Orthanc ratio (>= 1.0 means the node is as fast).

    python benchmarks/dicomweb.py [--studies 1000] [--calls 200]
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
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import OrthancPeer, load_template_slices, send, start_node, write_series  # noqa: E402

from tests.conftest import TRANSFER_SYNTAXES  # noqa: E402

SMALL_CT = TRANSFER_SYNTAXES / "CT_small.dcm"
AS_STORED = 'multipart/related; type="application/dicom"; transfer-syntax=*'


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


def timed(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def get(url: str, accept: str) -> bytes:
    answer = requests.get(url, headers={"Accept": accept}, timeout=300)
    answer.raise_for_status()
    return answer.content


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=1000)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="dicomweb-bench-"))
    try:
        templates = load_template_slices()
        write_series(templates, 300, work / "ct")
        first_slice = dcmread(next((work / "ct").glob("*.dcm")), stop_before_pixels=True)
        study, series = first_slice.StudyInstanceUID, first_slice.SeriesInstanceUID
        write_small_studies(args.studies - 1, work / "small")
        node, node_port, node_http = start_node(work, args.workers)
        orthanc = OrthancPeer(work / "orthanc", dicomweb=True)
        orthanc.start()
        servers = {
            "node": (node_port, "AI_NODE", f"http://127.0.0.1:{node_http}/dicomweb"),
            "Orthanc": (orthanc.dicom_port, "ORTHANC", orthanc.dicomweb_url),
        }
        try:
            for name, (port, ae, _) in servers.items():
                seconds, ok = send(port, ae, [work / "ct", work / "small"])
                if not ok:
                    sys.exit(f"loading {name} failed")
                print(f"loaded {name} in {seconds:.1f} s")
            results: dict[str, dict[str, list[float]]] = {
                name: {"qido": [], "wado": [], "metadata": []} for name in servers
            }
            found = {
                name: len(requests.get(f"{url}/studies", timeout=60).json())
                for name, (_, _, url) in servers.items()
            }
            print(f"studies found by QIDO: {found}")
            series_url = "{}/studies/" + study + "/series/" + series
            for _ in range(args.calls):
                for name, (_, _, url) in servers.items():
                    results[name]["qido"].append(
                        timed(lambda url=url: get(f"{url}/studies", "application/dicom+json"))
                    )
            for _ in range(20):
                for name, (_, _, url) in servers.items():
                    results[name]["metadata"].append(
                        timed(
                            lambda url=url: get(
                                series_url.format(url) + "/metadata", "application/dicom+json"
                            )
                        )
                    )
            sizes = {}
            for _ in range(5):
                for name, (_, _, url) in servers.items():
                    started = time.perf_counter()
                    sizes[name] = len(get(series_url.format(url), AS_STORED))
                    results[name]["wado"].append(sizes[name] / (time.perf_counter() - started))
        finally:
            node.terminate()
            node.wait(timeout=60)
            orthanc.stop()
        node_r, orthanc_r = results["node"], results["Orthanc"]
        qido = [statistics.median(r["qido"]) * 1000 for r in (node_r, orthanc_r)]
        meta = [statistics.median(r["metadata"]) * 1000 for r in (node_r, orthanc_r)]
        wado = [statistics.median(r["wado"]) / 1e6 for r in (node_r, orthanc_r)]
        print(
            f"series retrieved: node {sizes['node'] / 1e6:.1f} MB, "
            f"Orthanc {sizes['Orthanc'] / 1e6:.1f} MB"
        )
        print(f"{'':28}{'node':>12}{'Orthanc':>12}{'ratio':>8}")
        print(
            f"{'QIDO /studies median (ms)':28}{qido[0]:12.1f}{qido[1]:12.1f}"
            f"{qido[1] / qido[0]:8.2f}"
        )
        print(f"{'WADO series (MB/s)':28}{wado[0]:12.1f}{wado[1]:12.1f}{wado[0] / wado[1]:8.2f}")
        print(
            f"{'series metadata median (ms)':28}{meta[0]:12.1f}{meta[1]:12.1f}"
            f"{meta[1] / meta[0]:8.2f}"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
