"""The node as a C-STORE SCU (what its outbox, C-MOVE and `dicom-node send` use) against DCMTK's
storescu, both sending the same 300-slice CT series to DCMTK's storescp, alternating.

    python benchmarks/send.py [--rounds 5] [--trees PATH ...]

storescp asks for 16 kB PDUs (DCMTK's default, as Orthanc's), so a 0.5 MB slice goes in 32
PDUs. Each tree's sending code (`dicom_node.dimse.scu.send`, the path the outbox takes) runs in
its own process, as a node's would, with the node's settings for pydicom and pynetdicom's
logging; the figure is instances/s from the first file read to the association's release.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.trees import report_rates, series_to_send  # noqa: E402
from tests.conftest import TOOL_ENV  # noqa: E402

#: one send by a tree's code, in a process of its own; prints seconds
_SEND = """
import sys, time
from pathlib import Path
from pydicom import config
from pynetdicom import _config
from dicom_node.config import load_config
from dicom_node.dimse.scu import send
config.settings.reading_validation_mode = config.IGNORE
config.settings.writing_validation_mode = config.IGNORE
_config.LOG_HANDLER_LEVEL = "none"
node = load_config(sys.argv[1])
started = time.perf_counter()
report = send(node, "storescp", [Path(sys.argv[2])])
seconds = time.perf_counter() - started
assert not report.failed, report.failed[:3]
print(seconds, report.sent)
"""


def node_send(tree: Path, config: Path, folder: Path) -> float:
    done = subprocess.run(
        [sys.executable, "-c", _SEND, str(config), str(folder)],
        env={**os.environ, "PYTHONPATH": str(tree)},
        cwd=tree,
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    seconds, sent = done.stdout.split()
    return int(sent) / float(seconds)


def storescu(port: int, folder: Path, count: int) -> float:
    started = time.perf_counter()
    subprocess.run(
        ["/usr/bin/storescu", "-aec", "STORESCP", "127.0.0.1", str(port), "+sd", str(folder)],
        env=TOOL_ENV,
        check=True,
        capture_output=True,
        timeout=600,
    )
    return count / (time.perf_counter() - started)


def main() -> None:
    run = series_to_send(__doc__.splitlines()[0], "send-bench-")
    config = run.work / "node.yaml"
    config.write_text(
        f"storage: {{path: {run.work / 'storage'}}}\n"
        f"peers: {{storescp: {{ae_title: STORESCP, host: 127.0.0.1, port: {run.storescp_port}}}}}\n"
    )
    rates: dict[str, list[float]] = {str(tree): [] for tree in run.arguments.trees}
    rates["storescu"] = []
    try:
        for _ in range(run.arguments.rounds):
            for tree in run.arguments.trees:  # alternating
                rates[str(tree)].append(node_send(tree, config, run.folder))
            rates["storescu"].append(storescu(run.storescp_port, run.folder, run.arguments.slices))
    finally:
        run.storescp.terminate()
        run.storescp.wait()
        shutil.rmtree(run.work, ignore_errors=True)
    report_rates(
        f"{run.arguments.slices} CT slices to storescp, {run.arguments.rounds} rounds", rates
    )


if __name__ == "__main__":
    main()
