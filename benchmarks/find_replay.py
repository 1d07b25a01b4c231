"""The servers alone on a one-result C-FIND: findscu's own conversation replayed, node against node
(source trees, e.g. main's and a branch's) and Orthanc, alternating.

`findscu` spends about 25 ms starting (DCMTK's dictionaries), which hides a server's few
milliseconds. Here its PDUs are captured once per server through a proxy, then sent again from
this process: per association, the time from connect to the A-RELEASE-RP and the CPU the
server's processes used (all of them, less their idle use measured beforehand). `echoscu`'s
conversation (one C-ECHO) is replayed beside it, in turns: what an association costs by itself,
the rest of the C-FIND's figure being the query's.

    python benchmarks/find_replay.py [--trees PATH ...] [--orthanc] [--rounds 200]

Each tree's node runs on SQLite with two receiving processes, filled like `scale.py`'s.
"""

from __future__ import annotations

import contextlib
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.scale import fill_node, fill_orthanc, findscu  # noqa: E402
from benchmarks.trees import node_from, tree_arguments  # noqa: E402
from tests.conftest import TOOL_ENV  # noqa: E402
from tests.orthanc import OrthancPeer  # noqa: E402

#: (0000,0900) Status 0x0000 in an implicit VR command set: the final C-FIND-RSP, or the C-ECHO-RSP
_FINAL_STATUS = b"\x00\x00\x00\x09\x02\x00\x00\x00\x00\x00"
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
ECHOSCU = "/usr/bin/echoscu"


def cpu_seconds(pid: int) -> float:
    """CPU time of `pid` and all its descendants."""
    total, waiting, seen = 0.0, [pid], set()
    while waiting:
        current = waiting.pop()
        if current in seen:
            continue
        seen.add(current)
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
            for task in os.listdir(f"/proc/{current}/task"):
                children = Path(f"/proc/{current}/task/{task}/children").read_text()
                waiting += [int(child) for child in children.split()]
    return total


def read_pdu(sock: socket.socket) -> bytes:
    """One whole PDU (header included)."""

    def exactly(size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = sock.recv(size - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data

    header = exactly(6)
    return header + exactly(struct.unpack(">I", header[2:])[0])


def capture(port: int, ae_title: str, tool: str) -> list[bytes]:
    """The PDUs `tool` ("findscu": one C-FIND; "echoscu": one C-ECHO) sends to the server at
    `port`."""
    listening = socket.create_server(("127.0.0.1", 0))
    sent: list[bytes] = []

    def relay() -> None:
        client, _ = listening.accept()
        server = socket.create_connection(("127.0.0.1", port))

        def answers() -> None:
            with contextlib.suppress(OSError):
                while data := server.recv(65536):
                    client.sendall(data)
            client.close()

        threading.Thread(target=answers, daemon=True).start()
        with contextlib.suppress(EOFError, OSError):
            while True:
                pdu = read_pdu(client)
                sent.append(pdu)
                server.sendall(pdu)
        server.close()

    relaying = threading.Thread(target=relay)
    relaying.start()
    if tool == "findscu":
        findscu(listening.getsockname()[1], ae_title, "PAT000001")
    else:
        subprocess.run(
            [ECHOSCU, "-aec", ae_title, "127.0.0.1", str(listening.getsockname()[1])],
            env=TOOL_ENV,
            check=True,
            capture_output=True,
        )
    relaying.join()
    listening.close()
    return sent


def replay(port: int, pdus: list[bytes]) -> float:
    """One association as the tool had it; milliseconds from connect to the A-RELEASE-RP (its
    last response has Status 0x0000: a C-FIND's final one, or a C-ECHO's)."""
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(pdus[0])
        if read_pdu(sock)[0] != 0x02:
            raise RuntimeError("association not accepted")
        for pdu in pdus[1:-1]:
            sock.sendall(pdu)
        while _FINAL_STATUS not in (answer := read_pdu(sock)):
            if answer[0] != 0x04:
                raise RuntimeError(f"PDU type {answer[0]} before the final response")
        sock.sendall(pdus[-1])
        if read_pdu(sock)[0] != 0x06:
            raise RuntimeError("release not answered")
    return (time.perf_counter() - started) * 1000


@contextlib.contextmanager
def filled_node_from(tree: Path, root: Path, studies: int) -> Iterator[tuple[int, int]]:
    """A node run from source tree `tree`, filled: its DICOM port and main process id."""
    with node_from(tree, root) as node:
        fill_node(node.database_url, 0, studies)
        assert node.process is not None
        yield node.port, node.process.pid


@contextlib.contextmanager
def orthanc_filled(work: Path, studies: int) -> Iterator[tuple[int, int]]:
    orthanc = OrthancPeer(work / "orthanc", settings={"DicomAlwaysAllowFind": True})
    orthanc.start()
    try:
        fill_orthanc(orthanc, 0, studies)
        assert orthanc._process is not None
        yield orthanc.dicom_port, orthanc._process.pid
    finally:
        try:
            orthanc.stop()
        except subprocess.TimeoutExpired:  # slow to stop on a loaded machine
            assert orthanc._process is not None
            orthanc._process.kill()
            orthanc._process.wait()


def main() -> None:
    parser = tree_arguments(__doc__.splitlines()[0], rounds=200)
    parser.add_argument("--orthanc", action="store_true")
    parser.add_argument("--studies", type=int, default=1000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="find-replay-"))
    with contextlib.ExitStack() as stack:
        #: name -> (port, pid, AE title)
        servers = {
            str(tree): (
                *stack.enter_context(filled_node_from(tree, work / f"node{index}", args.studies)),
                "AI_NODE",
            )
            for index, tree in enumerate(args.trees)
        }
        if args.orthanc:
            servers["Orthanc"] = (
                *stack.enter_context(orthanc_filled(work, args.studies)),
                "ORTHANC",
            )
        #: (server, tool) -> the PDUs to replay
        conversations = {
            (name, tool): capture(port, title, tool)
            for name, (port, _, title) in servers.items()
            for tool in ("findscu", "echoscu")
        }
        idle = {}
        for name, (_, pid, _) in servers.items():
            before, started = cpu_seconds(pid), time.perf_counter()
            time.sleep(3)
            idle[name] = (cpu_seconds(pid) - before) / (time.perf_counter() - started)
        wall: dict[tuple[str, str], list[float]] = {key: [] for key in conversations}
        cpu: dict[tuple[str, str], list[float]] = {key: [] for key in conversations}
        for _ in range(args.rounds):
            for (name, tool), pdus in conversations.items():  # alternating
                port, pid, _ = servers[name]
                before, started = cpu_seconds(pid), time.perf_counter()
                wall[name, tool].append(replay(port, pdus))
                time.sleep(0.06)  # the association's last steps and background syncs
                used = cpu_seconds(pid) - before - idle[name] * (time.perf_counter() - started)
                cpu[name, tool].append(used * 1000)
        report(wall, cpu, args.rounds, args.studies)


def report(
    wall: dict[tuple[str, str], list[float]],
    cpu: dict[tuple[str, str], list[float]],
    rounds: int,
    studies: int,
) -> None:
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(f"{rounds} rounds, {studies} studies, load average {load}", flush=True)
    for (name, tool), times in wall.items():
        low, _, high = statistics.quantiles(times, n=4)
        what = "C-FIND" if tool == "findscu" else "C-ECHO"
        print(
            f"  {name:40s} {what} {statistics.median(times):6.2f} ms median "
            f"(quartiles {low:.2f}-{high:.2f}), "
            f"CPU {statistics.mean(cpu[name, tool]):5.2f} ms per association",
            flush=True,
        )


if __name__ == "__main__":
    main()
