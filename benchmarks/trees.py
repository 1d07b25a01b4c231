"""What the A/B benchmarks share: nodes run from other source trees (a branch's checkout beside
main's, `--trees MAIN THIS`), alternating with each other and with a peer."""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from benchmarks.ingest import load_template_slices, start_storescp, write_series
from tests.conftest import RunningNode, configured_node, free_port

ROOT = Path(__file__).resolve().parent.parent


def tree_arguments(description: str, rounds: int = 5) -> argparse.ArgumentParser:
    """A parser with `--rounds` and `--trees` (source trees to run the node from, this one by
    default); a script adds its own arguments."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--trees", type=Path, nargs="+", default=[ROOT])
    return parser


@contextlib.contextmanager
def node_from(tree: Path, root: Path, **overrides) -> Iterator[RunningNode]:
    """A started node under `root` run from source tree `tree`: SQLite, two receiving
    processes, WARNING logs, `overrides` merged per section; stopped afterwards."""
    node = configured_node(
        root,
        f"sqlite:///{root / 'index.sqlite'}",
        dicom={"host": "127.0.0.1", "port": free_port(), "workers": 2},
        logging={"level": "WARNING"},
        **overrides,
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
        yield node
    finally:
        node.stop()


def report_rates(title: str, rates: dict[str, list[float]]) -> None:
    """`title` with the load average, then each sender's or server's median instances/s."""
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(f"{title}, load average {load}")
    for name, values in rates.items():
        print(f"  {name:40s} {statistics.median(values):7.1f} instances/s (median)")


@dataclass
class SeriesToSend:
    """A CT series written for a run, and DCMTK's storescp to send it to."""

    arguments: argparse.Namespace
    work: Path
    folder: Path
    storescp: subprocess.Popen
    storescp_port: int


def series_to_send(description: str, prefix: str) -> SeriesToSend:
    """Parse `tree_arguments` and `--slices`, write that many CT slices (new UIDs) under a new
    folder and start storescp (its files land in the same folder)."""
    parser = tree_arguments(description)
    parser.add_argument("--slices", type=int, default=300)
    arguments = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix=prefix))
    folder = work / "series"
    write_series(load_template_slices(), arguments.slices, folder)
    process, port = start_storescp(work)
    return SeriesToSend(arguments, work, folder, process, port)
