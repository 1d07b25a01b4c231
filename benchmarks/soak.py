"""Soak: valid senders, hostile clients and DICOMweb readers against one node for N minutes.

Valid senders C-STORE small CT instances (new UIDs) with pynetdicom; hostile clients cycle through
the attacks of issue 18 (garbage P-DATA in an association, a partial association request, idle
and half-open sockets, port probes (connect, close), a 1 GB PDU header, a deflate bomb, a
truncated STOW-RS body, a slow HTTP request head, malformed DICOMweb queries); readers run
QIDO-RS and WADO-RS metadata. A sampler reads the memory, open file descriptors and threads of
every node process. At the end it prints: instances acknowledged vs present (must be equal),
associations refused to valid senders, HTTP 5xx answers (must be 0), and per process the first
and peak memory, descriptors and threads (must stay flat). With `--orthanc` the DIMSE part
(valid senders and DIMSE attacks) runs against Orthanc too, alternately, and its figures are
printed beside the node's.

    python benchmarks/soak.py [--minutes 5] [--orthanc]
"""

from __future__ import annotations

import argparse
import random
import shutil
import signal
import socket
import struct
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import requests
from pydicom import dcmread
from pydicom.uid import DeflatedExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from ingest import process_tree, start_node  # noqa: E402

from tests.conftest import TRANSFER_SYNTAXES  # noqa: E402
from tests.orthanc import OrthancPeer  # noqa: E402

TEMPLATE = dcmread(TRANSFER_SYNTAXES / "CT_small.dcm")
SETTLE_SECONDS = 40


@dataclass
class Tally:
    acknowledged: set[str] = field(default_factory=set)
    refused_associations: int = 0
    failed_stores: int = 0
    attacks: Counter = field(default_factory=Counter)
    http: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)


def new_instance():
    dataset = TEMPLATE.copy()
    dataset.SOPInstanceUID = generate_uid()
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    return dataset


def valid_sender(port: int, called: str, tally: Tally, stop: threading.Event) -> None:
    ae = AE("SOAK")
    ae.add_requested_context(CTImageStorage, TEMPLATE.file_meta.TransferSyntaxUID)
    while not stop.is_set():
        association = ae.associate("127.0.0.1", port, ae_title=called)
        if not association.is_established:
            with tally.lock:
                tally.refused_associations += 1
            time.sleep(0.5)
            continue
        for _ in range(10):
            dataset = new_instance()
            status = association.send_c_store(dataset)
            with tally.lock:
                if status and status.Status == 0:
                    tally.acknowledged.add(str(dataset.SOPInstanceUID))
                else:
                    tally.failed_stores += 1
        association.release()


def _raw_association(port: int, called: str) -> socket.socket:
    """A TCP connection with an association established by hand (for hostile P-DATA)."""
    ae = AE("HOSTILE")
    ae.add_requested_context(CTImageStorage)
    association = ae.associate("127.0.0.1", port, ae_title=called)
    if not association.is_established:
        raise ConnectionError("association refused")
    return association  # type: ignore[return-value]


def dimse_attack(port: int, called: str, kind: str) -> None:
    address = ("127.0.0.1", port)
    if kind == "garbage P-DATA":
        association = _raw_association(port, called)
        sock = association.dul.socket.socket  # type: ignore[attr-defined]
        sock.sendall(struct.pack(">BBI", 0x04, 0, 8) + b"\xff" * 8)
        time.sleep(0.2)
        association.abort()  # type: ignore[attr-defined]
    elif kind == "partial association request":
        with socket.create_connection(address) as sock:
            sock.sendall(b"\x01\x00\x00\x00\x01\x00" + b"\x00" * 14)
            time.sleep(1.5)
    elif kind == "port probes":  # a scanner or a health check: connect, close, no request
        for _ in range(100):
            socket.create_connection(address).close()
    elif kind == "idle sockets":
        sockets = [socket.create_connection(address) for _ in range(20)]
        time.sleep(2)
        for sock in sockets:
            sock.close()
    elif kind == "1 GB PDU header":
        with socket.create_connection(address) as sock:
            sock.sendall(struct.pack(">BBI", 0x01, 0, 1 << 30))
            sock.settimeout(5)
            try:
                sock.recv(64)
            except OSError:
                pass
    elif kind == "deflate bomb":
        ae = AE("HOSTILE")
        ae.add_requested_context(CTImageStorage, DeflatedExplicitVRLittleEndian)
        association = ae.associate("127.0.0.1", port, ae_title=called)
        if association.is_established:
            dataset = new_instance()
            dataset.PixelData = bytes(64 << 20)
            dataset.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
            association.send_c_store(dataset)
            association.release()


def http_attack(http: int, kind: str, tally: Tally) -> None:
    base = f"http://127.0.0.1:{http}/dicomweb"
    if kind == "truncated STOW-RS":
        body = b"--b\r\nContent-Type: application/dicom\r\n\r\n" + b"\x00" * 500
        answer = requests.post(
            f"{base}/studies",
            data=body,
            headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=b'},
            timeout=30,
        )
        tally.http[answer.status_code // 100 * 100] += 1
    elif kind == "slow request head":
        with socket.create_connection(("127.0.0.1", http)) as sock:
            for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\n":
                sock.sendall(bytes([byte]))
                time.sleep(0.05)
    elif kind == "malformed queries":
        for query in ("limit=1e999", "limit=%D9%A3", "offset=-1", "PatientID=%00", "00100010=*\\"):
            answer = requests.get(f"{base}/studies?{query}", timeout=30)
            tally.http[answer.status_code // 100 * 100] += 1
        answer = requests.get(f"{base}/studies", headers={"Accept": ";;q=x,"}, timeout=30)
        tally.http[answer.status_code // 100 * 100] += 1


DIMSE_ATTACKS = [
    "garbage P-DATA",
    "partial association request",
    "idle sockets",
    "port probes",
    "1 GB PDU header",
    "deflate bomb",
]
HTTP_ATTACKS = ["truncated STOW-RS", "slow request head", "malformed queries"]


def hostile(port: int, called: str, http: int | None, tally: Tally, stop: threading.Event) -> None:
    kinds = DIMSE_ATTACKS + (HTTP_ATTACKS if http else [])
    while not stop.is_set():
        kind = random.choice(kinds)
        try:
            if kind in DIMSE_ATTACKS:
                dimse_attack(port, called, kind)
            else:
                http_attack(http, kind, tally)  # type: ignore[arg-type]
        except (OSError, ConnectionError, requests.RequestException):
            pass  # the node may close on the attacker: that is the point
        with tally.lock:
            tally.attacks[kind] += 1


def reader(http: int, tally: Tally, stop: threading.Event) -> None:
    base = f"http://127.0.0.1:{http}/dicomweb"
    while not stop.is_set():
        try:
            studies = requests.get(f"{base}/studies?limit=20", timeout=30)
            codes = [studies.status_code]
            if studies.status_code == 200 and studies.content:
                uid = studies.json()[0]["0020000D"]["Value"][0]
                codes.append(requests.get(f"{base}/studies/{uid}/metadata", timeout=60).status_code)
        except requests.RequestException:
            codes = [0]
        with tally.lock:
            for code in codes:
                tally.http[code // 100 * 100] += 1
        time.sleep(0.2)


def sample(pid: int) -> dict[int, tuple[int, int, int, str]]:
    """pid -> (resident kB, open descriptors, threads, name) for the node and its children."""
    samples = {}
    for process in process_tree(pid):
        try:
            status = Path(f"/proc/{process}/status").read_text()
            rss = int(
                next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1]
            )
            fds = len(list(Path(f"/proc/{process}/fd").iterdir()))
            threads = len(list(Path(f"/proc/{process}/task").iterdir()))
            name = (
                Path(f"/proc/{process}/cmdline")
                .read_bytes()
                .split(b"\0")[-2][-40:]
                .decode(errors="replace")
            )
        except (OSError, StopIteration, IndexError):
            continue
        samples[process] = (rss, fds, threads, name)
    return samples


def present_in_node(engine_url: str, uids: set[str]) -> int:
    from sqlalchemy import func, select

    from dicom_node.index.database import open_engine
    from dicom_node.index.schema import instances

    engine = open_engine(engine_url, create=False)
    found = 0
    ordered = sorted(uids)
    with engine.connect() as connection:
        for start in range(0, len(ordered), 500):
            chunk = ordered[start : start + 500]
            found += connection.execute(
                select(func.count()).where(instances.c.sop_instance_uid.in_(chunk))
            ).scalar_one()
    return found


def run(
    minutes: float, port: int, called: str, http: int | None, pid: int | None
) -> tuple[Tally, dict]:
    tally, stop = Tally(), threading.Event()
    threads = [
        threading.Thread(target=valid_sender, args=(port, called, tally, stop)) for _ in range(2)
    ]
    threads += [
        threading.Thread(target=hostile, args=(port, called, http, tally, stop)) for _ in range(2)
    ]
    if http:
        threads += [threading.Thread(target=reader, args=(http, tally, stop)) for _ in range(2)]
    for thread in threads:
        thread.start()
    history: dict[int, list[tuple[int, int, int, str]]] = {}
    deadline = time.monotonic() + minutes * 60
    while time.monotonic() < deadline:
        if pid:
            for process, values in sample(pid).items():
                history.setdefault(process, []).append(values)
        time.sleep(2)
    stop.set()
    for thread in threads:
        thread.join(timeout=120)
    if pid:
        # Settled: once the timeouts of the last attacks ran out (ACSE 30 s by default), every
        # process must be back near where it started.
        time.sleep(SETTLE_SECONDS)
        for process, values in sample(pid).items():
            history.setdefault(process, []).append(values)
    return tally, history


def report(name: str, tally: Tally, present: int, history: dict) -> None:
    lost = len(tally.acknowledged) - present
    print(f"\n== {name}")
    print(
        f"instances acknowledged {len(tally.acknowledged)}, present {present}"
        + (" (equal)" if present == len(tally.acknowledged) else f" (LOST {lost})")
    )
    print(
        f"associations refused to valid senders: {tally.refused_associations}; "
        f"stores failed: {tally.failed_stores}"
    )
    print(
        "attacks: " + ", ".join(f"{kind} {count}" for kind, count in sorted(tally.attacks.items()))
    )
    if tally.http:
        print(
            "HTTP answers by class: "
            + ", ".join(f"{code}: {n}" for code, n in sorted(tally.http.items()))
        )
    for process, values in sorted(history.items()):
        first, last = values[0], values[-1]
        peak_rss, peak_fds, peak_threads = (max(v[i] for v in values) for i in range(3))
        print(
            f"  pid {process} ({first[3]}): memory {first[0] // 1024} -> "
            f"peak {peak_rss // 1024} MB, "
            f"descriptors {first[1]} -> peak {peak_fds}, settled {last[1]}; "
            f"threads {first[2]} -> peak {peak_threads}, settled {last[2]}; "
            f"memory settled {last[0] // 1024} MB"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5)
    parser.add_argument(
        "--orthanc", action="store_true", help="run the DIMSE part against Orthanc too"
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="soak-"))
    node, port, http = start_node(work, workers=2)
    try:
        tally, history = run(args.minutes, port, "AI_NODE", http, node.pid)
        url = f"sqlite:///{(work / 'node-storage' / 'index.sqlite').resolve()}"
        report("node", tally, present_in_node(url, tally.acknowledged), history)
    finally:
        node.send_signal(signal.SIGTERM)
        node.wait(timeout=60)
    if args.orthanc:
        orthanc = OrthancPeer(work / "orthanc")
        orthanc.start()
        try:
            tally, history = run(
                args.minutes, orthanc.dicom_port, "ORTHANC", None, orthanc._process.pid
            )
            stored = {
                uid
                for uid in tally.acknowledged
                if requests.post(
                    f"http://127.0.0.1:{orthanc.http_port}/tools/lookup", data=uid, timeout=30
                ).json()
            }
            report("Orthanc", tally, len(stored), history)
        finally:
            orthanc.stop()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
