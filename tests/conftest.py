"""Fixtures: the node as a real `dicom-node serve` process, on SQLite and on PostgreSQL."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
TRANSFER_SYNTAXES = SHARED_DATA / "dicom_transfer_syntaxes_pydicom"
MALFORMED = SHARED_DATA / "dicom_malformed_pydicom"
CT_SERIES = SHARED_DATA / "ct_chest_midrc_ricord_1a"
#: 80 of its 248 slices, 10 cm through the lungs (about 1.5 l of lung): for the tests that show a
#: CT's results rather than measure the whole series
CT_THROUGH_LUNGS = sorted(CT_SERIES.glob("*.dcm"))[80:160]
CR_CHEST = SHARED_DATA / "cxr_dicom" / "nema_wg04_RG1_J2KI_cr_chest_pa.dcm"
DCMTK = Path("/usr/bin")
PIXELMED = Path("/usr/share/java/pixelmed.jar")
#: the JDK's XPath limits, which pixelmed's validation stylesheets exceed
PIXELMED_XPATH_LIMITS = ("xpathExprGrpLimit", "xpathExprOpLimit", "xpathTotalOpLimit")
TOOL_ENV = {**os.environ, "TCP_NODELAY": "1"}
POSTGRES_ADMIN_URL = os.environ.get(
    "DICOM_NODE_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


#: every port handed out in this session: the kernel may free and give out a port twice in a
#: row, and a node configured with one port for DICOM and HTTP does not start
_ISSUED_PORTS: set[int] = set()


def free_port() -> int:
    """A port nothing listens on now and no earlier call returned."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in _ISSUED_PORTS:
            _ISSUED_PORTS.add(port)
            return port


def receiving_processes(pid: int) -> list[int]:
    """The receiving processes the node's main thread started: not multiprocessing's resource
    tracker, which it may start first (killed alone, nothing is replaced)."""
    found = []
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        with contextlib.suppress(OSError):  # ended meanwhile
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(int(child))
    return found


def wait_for_port(
    port: int, process: subprocess.Popen | None = None, timeout=30.0, host: str = "127.0.0.1"
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
            return  # any address family (an IPv6 host too)
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def dciodvfy_errors(path: Path) -> set[str]:
    """dicom3tools' errors on a file, UIDs masked (so a copy's errors compare with its source's)."""
    result = subprocess.run(
        ["/usr/bin/dciodvfy", str(path)], capture_output=True, text=True, timeout=60
    )
    lines = (result.stdout + result.stderr).splitlines()
    errors = [line.split(" - ", 1)[1] for line in lines if line.startswith("Error - ")]
    return {re.sub(r"[0-9][0-9.]{4,}", "<uid>", error) for error in errors}


def pixelmed_sr_errors(paths: list[Path]) -> dict[str, list[str]]:
    """pixelmed's DicomSRValidator's errors (IOD, template, context groups) on each SR, the
    validators run side by side; the test is skipped where pixelmed-apps is not installed."""
    if not PIXELMED.is_file():
        pytest.skip(f"no {PIXELMED} (apt-get install pixelmed-apps)")
    # The client compiler alone: a third of the CPU time for a run this short.
    java = ["java", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Xmx2g"]
    java += [f"-Djdk.xml.{limit}=0" for limit in PIXELMED_XPATH_LIMITS]
    validator = [*java, "-cp", str(PIXELMED), "com.pixelmed.validate.DicomSRValidator"]
    runs = {
        path.name: subprocess.Popen([*validator, str(path)], stdout=subprocess.PIPE, text=True)
        for path in paths
    }
    return {
        name: [
            line
            for line in run.communicate(timeout=300)[0].splitlines()
            if line.startswith("Error")
        ]
        for name, run in runs.items()
    }


def dcmtk(tool: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run a DCMTK tool by absolute path (pynetdicom installs look-alikes in the venv)."""
    return subprocess.run(
        [str(DCMTK / tool), *args], env=TOOL_ENV, capture_output=True, text=True, timeout=timeout
    )


def dcmsend(port: int, folder: Path) -> subprocess.CompletedProcess:
    """Send every file under `folder` to the node, each in its own (possibly compressed) syntax."""
    return dcmtk(
        "dcmsend",
        "--decompress-never",
        "-aec",
        "AI_NODE",
        "127.0.0.1",
        str(port),
        "--scan-directories",
        str(folder),
    )


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database_kind(request) -> str:
    return request.param


@contextlib.contextmanager
def new_database(kind: str, folder: Path) -> Iterator[str]:
    """The URL of a fresh, empty index database of `kind`, dropped afterwards (PostgreSQL is
    skipped, with the reason printed, when no server answers)."""
    if kind == "sqlite":
        yield f"sqlite:///{folder / 'index.sqlite'}"
        return
    from sqlalchemy import create_engine, text

    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            name = f"dicom_node_test_{uuid.uuid4().hex[:12]}"
            connection.execute(text(f"CREATE DATABASE {name}"))
    except Exception as error:
        reason = f"no PostgreSQL server answers at {POSTGRES_ADMIN_URL}: {error}"
        print(reason)
        pytest.skip(reason)
    url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


@pytest.fixture
def database_url(database_kind, tmp_path) -> Iterator[str]:
    with new_database(database_kind, tmp_path) as url:
        yield url


@dataclass
class RunningNode:
    """A `dicom-node serve` process and what a test needs to talk to it."""

    root: Path
    config_path: Path
    settings: dict
    process: subprocess.Popen | None = None
    log_path: Path = field(init=False)
    #: what the command runs under (``ip netns exec NAME``: another "host")
    prefix: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.log_path = self.root / "node.log"

    @property
    def port(self) -> int:
        """The plain DICOM port, else (DICOM over TLS only) the TLS port."""
        dicom = self.settings["dicom"]
        return dicom["port"] or dicom["tls"]["port"]

    @property
    def http_port(self) -> int:
        return self.settings["http"]["port"]

    @property
    def storage(self) -> Path:
        return Path(self.settings["storage"]["path"])

    @property
    def database_url(self) -> str:
        return self.settings["storage"]["database"]

    def start(self) -> None:
        self.config_path.write_text(yaml.safe_dump(self.settings))
        log = self.log_path.open("a")
        self.process = subprocess.Popen(
            [*self.prefix, sys.executable, "-m", "dicom_node"]
            + ["--config", str(self.config_path), "serve"],
            cwd=self.root,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_for_port(self.port, self.process, host=self.settings["dicom"]["host"])
        wait_for_port(
            self.http_port, self.process, host=self.settings["http"].get("host", "127.0.0.1")
        )

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        code = self.process.wait(timeout=60)
        self.process = None
        return code

    def log(self) -> str:
        return self.log_path.read_text()

    @contextlib.contextmanager
    def storage_unwritable(self) -> Iterator[None]:
        """Every file the node writes fails in the OS (ENOTDIR), even as root: each
        top-level shard name is taken by a plain file; the existing shards wait aside."""
        aside = self.storage.parent / "shards-aside"
        aside.mkdir()
        for shard in self.storage.iterdir():
            if re.fullmatch(r"[0-9a-f]{2}", shard.name):
                shard.rename(aside / shard.name)
        blockers = [self.storage / f"{number:02x}" for number in range(256)]
        for blocker in blockers:
            blocker.write_text("not a folder")
        try:
            yield
        finally:
            for blocker in blockers:
                blocker.unlink()
            for shard in aside.iterdir():
                shard.rename(self.storage / shard.name)
            aside.rmdir()

    def engine(self):
        from dicom_node.index.database import open_engine

        return open_engine(self.database_url, create=False)


def configured_node(root: Path, database_url: str, **overrides) -> RunningNode:
    """A node under `root` (created) with test defaults, `overrides` merged per section."""
    root.mkdir()
    settings = {
        "ae_title": "AI_NODE",
        "dicom": {"host": "127.0.0.1", "port": free_port(), "workers": 1},
        "http": {"port": free_port()},
        "storage": {"path": str(root / "storage"), "database": database_url},
        "study": {"stable_seconds": 3600, "check_interval_seconds": 0.2},
        "logging": {"level": "INFO"},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(settings.get(key), dict):
            settings[key].update(value)
        else:
            settings[key] = value
    return RunningNode(root, root / "node.yaml", settings)


@pytest.fixture
def make_node(tmp_path, database_url):
    """Factory: a configured node (not yet started); every started node is stopped after."""
    nodes: list[RunningNode] = []

    def factory(**overrides) -> RunningNode:
        node = configured_node(tmp_path / f"node{len(nodes)}", database_url, **overrides)
        nodes.append(node)
        return node

    yield factory
    for node in nodes:
        if node.process is not None:
            node.stop(signal.SIGKILL)


@pytest.fixture
def node(make_node) -> RunningNode:
    running = make_node()
    running.start()
    return running


@pytest.fixture
def fhir_server():
    """A FHIR server (Medplum's router, validating R4) without authentication, started."""
    from .fhir_server import FhirServer

    server = FhirServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def copy_files(tmp_path):
    """Copy named files of a shared data folder into a fresh folder (storescu +sd sends all)."""

    def copy(source: Path, names: list[str] | None = None) -> Path:
        target = tmp_path / f"send-{uuid.uuid4().hex[:8]}"
        target.mkdir()
        for path in sorted(source.glob("*.dcm")):
            if names is None or path.name in names:
                shutil.copy(path, target / path.name)
        return target

    return copy


@dataclass
class SegmentedSlab:
    """The CT tissue model's result on a slab of the shared chest CT, encoded as a SEG."""

    bundle: object
    volume: object
    result: object
    seg_path: Path


@pytest.fixture(scope="session")
def ct_slab(tmp_path_factory) -> SegmentedSlab:
    """40 slices of the shared chest CT: enough tissue of every kind, fast to segment."""
    from dicom_node.config import BUILTIN_BUNDLES
    from inference.bundle import find_bundles
    from inference.ct_series import load_ct_series
    from inference.dicom_seg import encode_segmentation
    from inference.run import segment

    volume = load_ct_series(sorted(CT_SERIES.glob("*.dcm"))[100:140])
    bundle = find_bundles([BUILTIN_BUNDLES])["ct_tissue"]
    result = segment(bundle, volume)
    seg = encode_segmentation(bundle, result, volume.datasets, result_identity(901))
    path = tmp_path_factory.mktemp("seg") / "seg.dcm"
    seg.save_as(path)
    return SegmentedSlab(bundle, volume, result, path)


def saved(dataset, folder):
    """``dataset`` saved in ``folder``, checked by dciodvfy and read back."""
    import pydicom

    path = folder / f"{dataset.SOPInstanceUID}.dcm"
    dataset.save_as(path)
    assert dciodvfy_errors(path) == set()
    return pydicom.dcmread(path)


@pytest.fixture(scope="session")
def measurements(ct_slab, tmp_path_factory):
    """The CT slab's SEG and its TID 1500 measurement report, both checked by dciodvfy."""
    import pydicom

    from inference.dicom_sr import encode_measurements

    seg = pydicom.dcmread(ct_slab.seg_path)
    report = encode_measurements(
        ct_slab.bundle, ct_slab.result, seg, ct_slab.volume.datasets, result_identity(902)
    )
    return seg, saved(report, tmp_path_factory.mktemp("sr"))


@pytest.fixture(scope="session")
def classified(tmp_path_factory):
    """The chest CR classified with its header: bundle, result, header, explanation SEG and
    finding report. The CR is an adult's (64 years by its dates), outside the chest model's
    domain: its finding is *not assessed*."""
    import pydicom

    from dicom_node.config import BUILTIN_BUNDLES
    from inference.bundle import find_bundles
    from inference.dicom_seg import encode_explanation
    from inference.dicom_sr import encode_finding
    from inference.image2d import display_pixels
    from inference.run import classify

    bundle = find_bundles([BUILTIN_BUNDLES])["cxr_pneumonia"]
    image = pydicom.dcmread(CR_CHEST)
    (result,) = classify(bundle, [display_pixels(image)], explain=True, headers=[image])
    header = pydicom.dcmread(CR_CHEST, stop_before_pixels=True)
    folder = tmp_path_factory.mktemp("cr")
    explanation = saved(encode_explanation(bundle, result, header, result_identity(903)), folder)
    report = saved(encode_finding(bundle, result, header, result_identity(904)), folder)
    return bundle, result, header, explanation, report


def result_identity(series_number: int):
    """A fresh identity for a result object made in a test."""
    from pydicom.uid import generate_uid

    from inference.dicom_seg import ResultIdentity

    return ResultIdentity(
        generate_uid(),
        generate_uid(),
        series_number,
        "DICOM AI node",
        "0.1.0",
        "AI_NODE",
        generate_uid(),
    )


@pytest.fixture
def research_peer(tmp_path):
    """storescp on a free port, started on demand; files land in `folder`."""
    folder = tmp_path / "research"
    folder.mkdir()
    port = free_port()
    processes = []

    def start():
        command = [
            str(DCMTK / "storescp"),
            "-aet",
            "RESEARCH",
            "+xa",
            "-od",
            str(folder),
            str(port),
        ]
        processes.append(subprocess.Popen(command, env=TOOL_ENV, stderr=subprocess.DEVNULL))
        wait_for_port(port, processes[-1])

    yield port, folder, start
    for process in processes:
        process.kill()
        process.wait()
