"""Where a process tree's Prometheus values live (prometheus_client's multiprocess mode): each
process writes its own files there, and whoever serves `/metrics` sums them. Set before the
library is first imported in the process; the processes it starts inherit it."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path


def use_metrics_folder(folder: Path) -> None:
    """`folder`, emptied, as this process tree's metrics folder."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)


def use_temporary_metrics_folder(prefix: str) -> Path:
    """A fresh folder under the system's temporary one as this process tree's metrics folder
    (a cluster's node or a worker, which share no storage folder of their own), removed when
    this process ends normally: one was left behind at every start. Processes forked from this
    one (a worker's pool) do not remove it when they end."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    atexit.register(_remove_if_created_here, folder, os.getpid())
    return folder


def _remove_if_created_here(folder: Path, creator: int) -> None:
    if os.getpid() == creator:
        shutil.rmtree(folder, ignore_errors=True)
