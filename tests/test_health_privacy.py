"""`/healthz` tells the truth about an index that refuses writes and a full disk (and
`/metrics` shows it); the index and the stored files are readable by the node's user only."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import text

from .conftest import TRANSFER_SYNTAXES, dcmsend
from .test_http import get, samples

#: stands in for a read-only or locked-out database: every write to the heartbeat fails
REFUSE_WRITES = {
    "sqlite": [
        "CREATE TRIGGER refuse_insert BEFORE INSERT ON heartbeat "
        "BEGIN SELECT RAISE(ABORT, 'the index is read-only'); END",
        "CREATE TRIGGER refuse_update BEFORE UPDATE ON heartbeat "
        "BEGIN SELECT RAISE(ABORT, 'the index is read-only'); END",
    ],
    "postgresql": [
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'the index is read-only'; END $$",
        "CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON heartbeat "
        "FOR EACH ROW EXECUTE FUNCTION refuse()",
    ],
}
ACCEPT_WRITES = {
    "sqlite": ["DROP TRIGGER refuse_insert", "DROP TRIGGER refuse_update"],
    "postgresql": ["DROP TRIGGER refuse ON heartbeat", "DROP FUNCTION refuse()"],
}


def health(node) -> tuple[int, dict, dict]:
    """/healthz's status and body, and the health gauge of /metrics by check."""
    status, _, body = get(node, "/healthz")
    values = samples(get(node, "/metrics")[2])
    gauge = {
        check: values[("dicom_node_healthy", (("check", check),))] for check in ("index", "storage")
    }
    return status, json.loads(body), gauge


def execute(node, statements: list[str]) -> None:
    with node.engine().begin() as connection:
        for statement in statements:
            connection.execute(text(statement))


def test_healthz_fails_when_the_index_refuses_writes(node, database_kind, tmp_path):
    assert health(node)[::2] == (200, {"index": 1.0, "storage": 1.0})
    execute(node, REFUSE_WRITES[database_kind])
    try:
        status, body, gauge = health(node)
        assert status == 503 and body["status"] == "failing"
        (problem,) = body["problems"]
        assert problem.startswith("index: ") and "the index is read-only" in problem
        assert gauge == {"index": 0.0, "storage": 1.0}
    finally:
        execute(node, ACCEPT_WRITES[database_kind])
    assert health(node)[::2] == (200, {"index": 1.0, "storage": 1.0})
    folder = tmp_path / "send"
    folder.mkdir()
    (folder / "ct.dcm").write_bytes((TRANSFER_SYNTAXES / "CT_small.dcm").read_bytes())
    assert dcmsend(node.port, folder).returncode == 0


@contextlib.contextmanager
def small_file_system(path: Path) -> None:
    """A 4 MB tmpfs at `path` (skips the test where mounting is not allowed)."""
    path.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(path)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small file system here: {mounted.stderr.decode().strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def fill(folder: Path) -> Path:
    """Write a file in `folder` until the file system is full; the file."""
    filler = folder / "filler"
    with filler.open("wb") as stream:
        with contextlib.suppress(OSError):
            while True:
                stream.write(bytes(1 << 16))
                stream.flush()
    with pytest.raises(OSError) as full:
        (folder / "one-more").write_bytes(bytes(4096))
    assert full.value.errno == errno.ENOSPC
    return filler


def test_healthz_fails_when_the_storage_disk_is_full(make_node):
    node = make_node()
    with small_file_system(node.storage):
        node.start()
        try:
            assert health(node)[0] == 200
            filler = fill(node.storage)
            status, body, gauge = health(node)
            assert status == 503
            assert body["problems"] == ["storage: cannot write to storage: No space left on device"]
            assert gauge == {"index": 1.0, "storage": 0.0}
            filler.unlink()
            (node.storage / "one-more").unlink(missing_ok=True)
            assert health(node)[::2] == (200, {"index": 1.0, "storage": 1.0})
        finally:
            node.stop()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_index_and_stored_files_are_private(make_node, database_kind, tmp_path):
    old_umask = os.umask(0o022)  # the usual default: files 0644, folders 0755
    try:
        node = make_node()
        node.start()
        folder = tmp_path / "send"
        folder.mkdir()
        (folder / "ct.dcm").write_bytes((TRANSFER_SYNTAXES / "CT_small.dcm").read_bytes())
        assert dcmsend(node.port, folder).returncode == 0
        stored = list(node.storage.glob("??/??/*.dcm"))
        assert stored and {mode(path) for path in stored} == {0o600}
        shards = {path.parent for path in stored} | {path.parent.parent for path in stored}
        assert {mode(path) for path in shards} == {0o700}
        if database_kind != "sqlite":
            return
        index = Path(node.database_url.removeprefix("sqlite:///"))
        files = [index, Path(f"{index}-wal"), Path(f"{index}-shm")]
        assert {mode(path) for path in files} == {0o600}
        # An index made by an older version, world-readable, is narrowed when opened.
        node.stop()
        for path in files:
            if path.exists():
                path.chmod(0o644)
        node.start()
        assert {mode(path) for path in files if path.exists()} == {0o600}
        assert dcmsend(node.port, folder).returncode == 0
    finally:
        os.umask(old_umask)
