"""C-MOVE of a 300-slice CT study, as a workstation retrieves one: from the node and from Orthanc
(each holding the same study) to DCMTK's storescp, with DCMTK's movescu, alternating.

    python benchmarks/retrieve.py [--rounds 5] [--trees PATH ...]

Each tree's node runs on SQLite with the shipped defaults bar its ports and a `storescp` peer;
the study is sent to it and to Orthanc once with storescu. The figure is instances/s from
movescu's start to its end (its own start, about 25 ms, included alike).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from pydicom import dcmread

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.ingest import load_template_slices, start_storescp, write_series  # noqa: E402
from tests.conftest import TOOL_ENV, configured_node, free_port  # noqa: E402
from tests.orthanc import OrthancPeer  # noqa: E402


def storescu(port: int, called: str, folder: Path) -> None:
    subprocess.run(
        ["/usr/bin/storescu", "-aec", called, "127.0.0.1", str(port), "+sd", str(folder)],
        env=TOOL_ENV,
        check=True,
        capture_output=True,
        timeout=600,
    )


def movescu(port: int, called: str, study: str, count: int) -> float:
    """Instances/s of one C-MOVE of `study` to STORESCP."""
    started = time.perf_counter()
    done = subprocess.run(
        ["/usr/bin/movescu", "-v", "-S", "-aec", called, "-aem", "STORESCP", "127.0.0.1", str(port)]
        + ["-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}"],
        env=TOOL_ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0 or "Final Move Response (Success)" not in done.stdout + done.stderr:
        raise RuntimeError(f"movescu failed: {(done.stdout + done.stderr)[-800:]}")
    return count / seconds


@contextlib.contextmanager
def node_from(tree: Path, root: Path, destination: int) -> Iterator[int]:
    """A node run from source tree `tree`: its DICOM port."""
    node = configured_node(
        root,
        f"sqlite:///{root / 'index.sqlite'}",
        dicom={"host": "127.0.0.1", "port": free_port(), "workers": 2},
        peers={"storescp": {"ae_title": "STORESCP", "host": "127.0.0.1", "port": destination}},
        logging={"level": "WARNING"},
    )
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(tree)
    try:
        node.start()
    finally:
        if before is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = before
    try:
        yield node.port
    finally:
        node.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--trees", type=Path, nargs="+", default=[ROOT])
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="retrieve-bench-"))
    folder = work / "study"
    write_series(load_template_slices(), args.slices, folder)
    study = str(dcmread(next(folder.iterdir()), stop_before_pixels=True).StudyInstanceUID)
    scp, destination = start_storescp(work)
    orthanc = OrthancPeer(
        work / "orthanc",
        settings={
            "DicomModalities": {"storescp": ["STORESCP", "127.0.0.1", destination]},
            "DicomAlwaysAllowMove": True,  # movescu's AE title is not a configured modality
        },
    )
    #: server -> (DICOM port, AE title)
    servers: dict[str, tuple[int, str]] = {}
    rates: dict[str, list[float]] = {}
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, work, True)
        stack.callback(scp.terminate)
        for index, tree in enumerate(args.trees):
            port = stack.enter_context(node_from(tree, work / f"node{index}", destination))
            servers[str(tree)] = (port, "AI_NODE")
        orthanc.start()
        stack.callback(orthanc.stop)
        servers["Orthanc"] = (orthanc.dicom_port, "ORTHANC")
        for port, called in servers.values():
            storescu(port, called, folder)
        rates = {name: [] for name in servers}
        for _ in range(args.rounds):
            for name, (port, called) in servers.items():  # alternating
                rates[name].append(movescu(port, called, study, args.slices))
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(f"C-MOVE of {args.slices} CT slices to storescp, {args.rounds} rounds, load {load}")
    for name, values in rates.items():
        print(f"  {name:40s} {statistics.median(values):7.1f} instances/s (median)")


if __name__ == "__main__":
    main()
