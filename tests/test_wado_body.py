"""The body of a WADO-RS answer (`dicomweb.body`): framing, stored files and transcoded instances
sent in pieces, read in the event loop where the page cache holds them and in a worker thread
where it does not; the audit wait before the last piece; a file shorter than declared ends the
answer with an error, never with other bytes; a client that hangs up mid-answer leaves no file
open in a running node."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from pathlib import Path

import anyio
import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom import dcmread

from dicom_node.dicomweb.body import Body, Spooled, StoredFile, pieces
from dicom_node.multipart import multipart_segments, new_boundary

from .conftest import CT_SERIES, configured_node, dcmsend
from .test_durability import wait_until

AS_STORED = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def collect(body: Body, before_last=lambda: None, piece_size: int = 1 << 20) -> list[bytes]:
    async def run() -> list[bytes]:
        return [bytes(piece) async for piece in pieces(body, before_last, piece_size)]

    return anyio.run(run)


def file_system(path: Path) -> str:
    """The type of the file system `path` lies on (the longest mount point above it)."""
    found, depth = "", -1
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _, mount_point, kind, *_ = line.split()
        if str(path).startswith(mount_point.rstrip("/") + "/") and len(mount_point) > depth:
            found, depth = kind, len(mount_point)
    return found


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


contents = st.lists(
    st.tuples(st.sampled_from(["literal", "file", "spooled"]), st.binary(max_size=3000)),
    min_size=1,
    max_size=8,
)


@settings(max_examples=60, deadline=None)
@given(contents, st.integers(1, 5000))
def test_the_pieces_are_the_body_in_order_and_of_the_piece_size(parts, piece_size):
    with tempfile.TemporaryDirectory() as folder:
        segments: list = []
        for number, (kind, data) in enumerate(parts):
            if kind == "literal":
                segments.append(data)
            elif kind == "file":
                path = Path(folder) / f"{number}.dcm"
                path.write_bytes(data)
                segments.append(StoredFile(str(path), len(data)))
            else:
                spool = tempfile.SpooledTemporaryFile(1000)
                spool.write(data)
                spool.seek(0)
                segments.append(Spooled(spool, len(data)))
        body = Body(segments)
        assert body.length == sum(len(data) for _, data in parts)
        fds = open_fds()
        got = collect(body, piece_size=piece_size)
        assert b"".join(got) == b"".join(data for _, data in parts)
        assert all(len(piece) == piece_size for piece in got[:-1])
        assert open_fds() == fds
        assert all(s.stream.closed for s in segments if isinstance(s, Spooled))


def test_a_multipart_answer_is_its_framing_around_the_files(tmp_path):
    files = []
    for number, data in enumerate([b"first instance", b"second"]):
        path = tmp_path / f"{number}.dcm"
        path.write_bytes(data)
        files.append(("application/dicom", StoredFile(str(path), len(data))))
    boundary = new_boundary()
    body = b"".join(collect(Body(multipart_segments(files, boundary)), piece_size=7))
    assert (
        body
        == (
            f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\nfirst instance\r\n"
            f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\nsecond\r\n"
            f"--{boundary}--\r\n"
        ).encode()
    )


def test_the_last_piece_waits_for_the_audit(tmp_path):
    path = tmp_path / "x.dcm"
    path.write_bytes(b"a" * 25)
    events: list = []

    async def run() -> None:
        body = Body([StoredFile(str(path), 25)])
        async for piece in pieces(body, lambda: events.append("audited"), piece_size=10):
            events.append(len(piece))

    anyio.run(run)
    assert events == [10, 10, "audited", 5]


def test_a_file_shorter_than_declared_ends_the_answer_with_an_error(tmp_path):
    path = tmp_path / "cut.dcm"
    path.write_bytes(b"x" * 100)
    spool = tempfile.SpooledTemporaryFile()
    body = Body([b"head", StoredFile(str(path), 150), Spooled(spool, 10)])
    fds = open_fds()
    with pytest.raises(OSError, match="ended before its 150 bytes"):
        collect(body, piece_size=64)
    assert open_fds() == fds
    assert spool.closed


def test_a_file_the_page_cache_does_not_hold_is_read_waiting(tmp_path):
    """The real kernel: a flushed file dropped from the page cache is not read in the loop
    (the read that refuses to wait gets nothing), then read whole by the waiting one."""
    data = os.urandom(1 << 20)
    path = tmp_path / "cold.dcm"
    with open(path, "wb") as stream:
        stream.write(data)
        stream.flush()
        os.fsync(stream.fileno())
        os.posix_fadvise(stream.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    if file_system(path) in ("tmpfs", "ramfs"):
        pytest.skip(f"{tmp_path} is on {file_system(path)}: files stay in memory, none is cold")
    body = Body([b"head", StoredFile(str(path), len(data))])
    piece = memoryview(bytearray(body.length))
    filled = body.fill(piece, waiting=False)
    assert filled < body.length
    assert body.fill(piece[filled:], waiting=True) == body.length - filled
    assert bytes(piece) == b"head" + data
    body.close()


def test_a_client_gone_mid_answer_leaves_nothing_open(tmp_path):
    path = tmp_path / "x.dcm"
    path.write_bytes(b"y" * 1000)
    spool = tempfile.SpooledTemporaryFile()
    spool.write(b"z" * 10)
    spool.seek(0)
    fds = open_fds()

    async def run() -> None:
        stream = pieces(Body([StoredFile(str(path), 1000), Spooled(spool, 10)]), lambda: None, 100)
        assert bytes(await anext(stream)) == b"y" * 100
        await stream.aclose()

    anyio.run(run)
    assert open_fds() == fds
    assert spool.closed


def test_a_file_in_the_page_cache_is_read_without_waiting(tmp_path):
    """What was just written (an instance just received) is read in the event loop whole."""
    data = os.urandom(300_000)
    path = tmp_path / "warm.dcm"
    path.write_bytes(data)
    body = Body([StoredFile(str(path), len(data))])
    piece = memoryview(bytearray(body.length))
    assert body.fill(piece, waiting=False) == len(data)
    assert bytes(piece) == data
    body.close()


def test_clients_leaving_mid_answer_leave_no_file_open(tmp_path):
    """A client reads the start of a 60-slice series (11 MB: more than the kernel's socket
    buffers take ahead) and hangs up; the node was reading a stored file for it, and closes
    it. Each time; then it serves the whole series to the next client."""
    folder = tmp_path / "ct"
    folder.mkdir()
    slices = sorted(CT_SERIES.glob("*.dcm"))[:60]
    for path in slices:
        shutil.copy(path, folder / path.name)
    node = configured_node(tmp_path / "node", f"sqlite:///{tmp_path / 'index.sqlite'}")
    node.start()
    try:
        assert dcmsend(node.port, folder).returncode == 0
        assert node.process is not None
        pid = node.process.pid
        header = dcmread(slices[0], stop_before_pixels=True)
        path = f"/dicomweb/studies/{header.StudyInstanceUID}/series/{header.SeriesInstanceUID}"
        request = f"GET {path} HTTP/1.1\r\nHost: node\r\nAccept: {AS_STORED}\r\n\r\n".encode()
        for _ in range(5):
            with socket.socket() as client:
                # a small window, set before connecting: the answer waits on the client
                client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                client.settimeout(30)
                client.connect(("127.0.0.1", node.http_port))
                client.sendall(request)
                assert client.recv(4096).startswith(b"HTTP/1.1 200")
                wait_until(lambda: open_stored_files(pid) == 1, timeout=10)
            wait_until(lambda: open_stored_files(pid) == 0, timeout=10)
        answer = requests.get(
            f"http://127.0.0.1:{node.http_port}{path}", headers={"Accept": AS_STORED}, timeout=60
        )
        assert answer.status_code == 200
        assert answer.content.count(b"Content-Type: application/dicom") == 60
    finally:
        node.stop()


def open_stored_files(pid: int) -> int:
    """How many stored files (``*.dcm``) process `pid` holds open."""
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            count += os.readlink(f"/proc/{pid}/fd/{fd}").endswith(".dcm")
        except OSError:
            continue  # closed meanwhile
    return count
