"""Where a process tree's Prometheus values live (prometheus_client's multiprocess mode): each
process writes its own files there, and whoever serves `/metrics` sums them. Set before the
library is first imported in the process; the processes it starts inherit it."""

from __future__ import annotations

import atexit
import glob
import os
import re
import shutil
import socket
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
    one (a worker's pool) do not remove it when they end. Its name holds the host's name and this
    process's id, so that the next start on this host removes the folders of processes that
    were killed (the out-of-memory killer, kill -9) and could not remove their own; a container
    sharing the folder counts its processes apart, under a host name of its own."""
    owner = f"{prefix}{socket.gethostname()}-"
    _remove_orphans(Path(tempfile.gettempdir()), owner)
    folder = Path(tempfile.mkdtemp(prefix=f"{owner}{os.getpid()}-"))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    atexit.register(_remove_if_created_here, folder, os.getpid())
    return folder


def _remove_orphans(parent: Path, prefix: str) -> None:
    """Remove the folders `prefix`PID-... under `parent` whose process is gone; those of
    another user's processes are left (not ours to remove, and alive)."""
    named = re.compile(re.escape(prefix) + r"(\d+)-[^/]+")
    for entry in parent.glob(f"{glob.escape(prefix)}*"):
        match = named.fullmatch(entry.name)
        if match is None or not entry.is_dir() or _alive(int(match.group(1))):
            continue
        shutil.rmtree(entry, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True


def _remove_if_created_here(folder: Path, creator: int) -> None:
    if os.getpid() == creator:
        shutil.rmtree(folder, ignore_errors=True)
