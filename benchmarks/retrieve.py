"""C-MOVE of a 300-slice CT study, as a workstation retrieves one: from the node and from Orthanc
(each holding the same study) to DCMTK's storescp, with DCMTK's movescu, alternating.

    python benchmarks/retrieve.py [--rounds 5] [--trees PATH ...]

Each tree's node runs on SQLite with the shipped defaults bar its ports and a `storescp` peer;
the study is sent to it and to Orthanc once with storescu. The figure is instances/s from
movescu's start to its end (its own start, about 25 ms, included alike).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import time
from pathlib import Path

from pydicom import dcmread

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.ingest import send  # noqa: E402
from benchmarks.trees import node_from, report_rates, series_to_send  # noqa: E402
from tests.conftest import TOOL_ENV  # noqa: E402
from tests.orthanc import OrthancPeer  # noqa: E402


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


def main() -> None:
    run = series_to_send(__doc__.splitlines()[0], "retrieve-bench-")
    study = str(dcmread(next(run.folder.iterdir()), stop_before_pixels=True).StudyInstanceUID)
    orthanc = OrthancPeer(
        run.work / "orthanc",
        settings={
            "DicomModalities": {"storescp": ["STORESCP", "127.0.0.1", run.storescp_port]},
            "DicomAlwaysAllowMove": True,  # movescu's AE title is not a configured modality
        },
    )
    #: server -> (DICOM port, AE title)
    servers: dict[str, tuple[int, str]] = {}
    rates: dict[str, list[float]] = {}
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, run.work, True)
        stack.callback(run.storescp.terminate)
        peers = {
            "storescp": {"ae_title": "STORESCP", "host": "127.0.0.1", "port": run.storescp_port}
        }
        for index, tree in enumerate(run.arguments.trees):
            node = stack.enter_context(node_from(tree, run.work / f"node{index}", peers=peers))
            servers[str(tree)] = (node.port, "AI_NODE")
        orthanc.start()
        stack.callback(orthanc.stop)
        servers["Orthanc"] = (orthanc.dicom_port, "ORTHANC")
        for port, called in servers.values():
            _, sent = send(port, called, [run.folder])
            if not sent:
                raise RuntimeError(f"storescu could not store the study on port {port}")
        rates = {name: [] for name in servers}
        for _ in range(run.arguments.rounds):
            for name, (port, called) in servers.items():  # alternating
                rates[name].append(movescu(port, called, study, run.arguments.slices))
    report_rates(
        f"C-MOVE of {run.arguments.slices} CT slices to storescp, {run.arguments.rounds} rounds",
        rates,
    )


if __name__ == "__main__":
    main()
