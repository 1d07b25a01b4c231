"""The `dicom-node` command line: check-config, and echo/send as an SCU against DCMTK's storescp."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import urllib.request

import pytest
import yaml
from pydicom import dcmread

from .conftest import (
    CR_CHEST,
    DCMTK,
    MALFORMED,
    ROOT,
    TOOL_ENV,
    TRANSFER_SYNTAXES,
    free_port,
    wait_for_port,
)


def dicom_node(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dicom_node", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


def write_config(tmp_path, settings: dict):
    path = tmp_path / "node.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


@pytest.fixture
def storescp(tmp_path):
    """DCMTK's storescp as the peer (by default it accepts only uncompressed syntaxes)."""
    port = free_port()
    received = tmp_path / "storescp"
    received.mkdir()
    process = subprocess.Popen(
        [str(DCMTK / "storescp"), "-aet", "STORESCP", "-od", str(received), str(port)],
        env=TOOL_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port, process)
    yield port, received
    process.terminate()
    process.wait(timeout=10)


def test_check_config_accepts_the_shipped_default():
    result = dicom_node("check-config", "config/node.yaml")
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout and "AI_NODE" in result.stdout


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"dicom": {"port": "eleven"}}, "dicom.port"),
        ({"dicom": {"prot": 104}}, "dicom.prot"),
        ({"storage": {"duplicates": "sometimes"}}, "storage.duplicates"),
        ({"ae_title": "A_TITLE_MUCH_TOO_LONG"}, "ae_title"),
        ({"dicom": {"require_known_calling_ae": True}}, "no peers are configured"),
    ],
)
def test_check_config_names_the_bad_key(tmp_path, settings, message):
    result = dicom_node("check-config", str(write_config(tmp_path, settings)))
    assert result.returncode == 3
    assert message in result.stderr


def test_check_config_reports_unreadable_yaml(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("dicom: [unclosed\n")
    result = dicom_node("check-config", str(path))
    assert result.returncode == 3
    assert "not valid YAML" in result.stderr


def test_echo_and_send_to_a_peer_that_is_down(tmp_path):
    down = free_port()  # nothing listens here
    config = write_config(
        tmp_path, {"peers": {"pacs": {"ae_title": "PACS", "host": "127.0.0.1", "port": down}}}
    )
    for args in (["echo", "pacs"], ["send", "pacs", str(TRANSFER_SYNTAXES / "CT_small.dcm")]):
        result = dicom_node("--config", str(config), *args)
        assert result.returncode == 2, result.stderr
        assert f"cannot reach peer 'pacs' (PACS at 127.0.0.1:{down})" in result.stderr
        assert "Traceback" not in result.stderr


def test_echo_unknown_peer_lists_the_known_ones(tmp_path):
    config = write_config(
        tmp_path, {"peers": {"pacs": {"ae_title": "PACS", "host": "127.0.0.1", "port": 104}}}
    )
    result = dicom_node("--config", str(config), "echo", "nowhere")
    assert result.returncode == 3
    assert "unknown peer 'nowhere'" in result.stderr and "pacs" in result.stderr


def test_echo_and_send_to_storescp(tmp_path, storescp):
    port, received = storescp
    config = write_config(
        tmp_path,
        {"peers": {"archive": {"ae_title": "STORESCP", "host": "127.0.0.1", "port": port}}},
    )
    result = dicom_node("--config", str(config), "echo", "archive")
    assert result.returncode == 0, result.stderr
    assert "C-ECHO to archive: success" in result.stdout

    files = [TRANSFER_SYNTAXES / name for name in ("CT_small.dcm", "MR_small_RLE.dcm")]
    not_dicom = tmp_path / "notes.txt"
    not_dicom.write_text("not a DICOM file")
    result = dicom_node(
        "--config", str(config), "send", "archive", *map(str, files), str(not_dicom)
    )
    assert result.returncode == 0, result.stderr  # a file that is not DICOM is no failure
    assert "sent 2 instance(s) to archive, 0 failed, 1 skipped (not DICOM)" in result.stdout
    assert result.stderr == ""
    arrived = {dcmread(path).SOPInstanceUID: dcmread(path) for path in received.iterdir()}
    assert len(arrived) == 2
    rle = dcmread(files[1])
    # storescp refuses RLE: the node fell back to an uncompressed copy of the same pixels.
    copy = arrived[rle.SOPInstanceUID]
    assert not copy.file_meta.TransferSyntaxUID.is_compressed
    rle.decompress()
    assert copy.PixelData == rle.PixelData


def test_commands_that_run_no_model_never_import_pytorch():
    """check-config, and the serve process with its job worker's modules, leave PyTorch and
    MONAI unloaded (seconds and hundreds of MiB each): a model loads them when it runs."""
    script = (
        "import sys\n"
        "from dicom_node.cli import main\n"
        "assert main(['check-config', 'config/node.yaml']) == 0\n"
        "import dicom_node.serve.node, dicom_node.jobs.runner, dicom_node.jobs.study\n"
        "import dicom_node.jobs.context\n"
        "from dicom_node.config import load_config\n"
        "from dicom_node.jobs.bundles import load_bundles\n"
        "load_bundles(load_config('config/node.yaml').inference)  # as each worker starts\n"
        "print(sorted(m for m in ('torch', 'monai') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]"


def test_send_a_folder_skips_what_is_not_dicom_and_fails_only_real_failures(tmp_path, storescp):
    """The shared chest X-ray folder (a JPEG 2000 CR, a DX and the folder's SOURCE.md), a
    README beside them and a DICOM file whose meta has no transfer syntax."""
    port, received = storescp
    config = write_config(
        tmp_path,
        {"peers": {"archive": {"ae_title": "STORESCP", "host": "127.0.0.1", "port": port}}},
    )
    readme = tmp_path / "README"
    readme.write_text("Images of the study, as exported.\n")
    broken = MALFORMED / "meta_missing_tsyntax.dcm"
    result = dicom_node(
        "--config", str(config), "send", "archive", str(CR_CHEST.parent), str(readme), str(broken)
    )
    assert result.returncode == 1
    assert "sent 2 instance(s) to archive, 1 failed, 2 skipped (not DICOM)" in result.stdout
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"failed: {broken}: DICOM file without a usable file meta")
    assert "force" not in result.stderr  # pydicom's advice is for programmers, not for users
    assert len(list(received.iterdir())) == 2


def test_a_local_override_is_merged_over_the_file_it_sits_beside(tmp_path):
    (tmp_path / "node.yaml").write_text((ROOT / "config" / "node.yaml").read_text())
    local = tmp_path / "node.local.yaml"
    local.write_text(
        yaml.safe_dump(
            {
                "dicom": {"port": 11113},
                "peers": {"pacs": {"ae_title": "PACS", "host": "10.0.0.5", "port": 104}},
            }
        )
    )
    result = dicom_node("check-config", str(tmp_path / "node.yaml"))
    assert result.returncode == 0, result.stderr
    assert f"{tmp_path / 'node.yaml'} + {local}: valid" in result.stdout
    # the override's keys, and the default's keys the override leaves alone (dicom.host)
    assert "AE title AI_NODE, DICOM 0.0.0.0 port 11113" in result.stdout
    assert "peers: pacs (PACS@10.0.0.5:104)" in result.stdout
    local.write_text(yaml.safe_dump({"dicom": {"prot": 104}}))
    result = dicom_node("check-config", str(tmp_path / "node.yaml"))
    assert result.returncode == 3
    assert f"node.yaml + {local}: dicom.prot: unknown key" in result.stderr


def test_the_shipped_default_is_tracked_and_the_local_override_ignored():
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    git = ["git", "-C", str(ROOT)]
    assert subprocess.run([*git, "ls-files", "--error-unmatch", "config/node.yaml"]).returncode == 0
    assert subprocess.run([*git, "check-ignore", "-q", "config/node.yaml"]).returncode == 1
    assert subprocess.run([*git, "check-ignore", "-q", "config/node.local.yaml"]).returncode == 0


def test_serve_starts_on_the_shipped_default_verbatim(tmp_path):
    """`dicom-node serve --config config/node.yaml` as the README gives it, on the shipped file
    byte for byte; a local override moves only the ports (tests run side by side) and storage."""
    (tmp_path / "config").mkdir()
    shutil.copy(ROOT / "config" / "node.yaml", tmp_path / "config" / "node.yaml")
    dicom_port, http_port = free_port(), free_port()
    (tmp_path / "config" / "node.local.yaml").write_text(
        yaml.safe_dump({"dicom": {"port": dicom_port}, "http": {"port": http_port}})
    )
    node = subprocess.Popen(
        [sys.executable, "-m", "dicom_node", "serve", "--config", "config/node.yaml"],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_port(http_port, node, timeout=60)
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/healthz", timeout=10) as answer:
            assert answer.status == 200
    finally:
        node.send_signal(signal.SIGTERM)
        _, log = node.communicate(timeout=60)
    assert node.returncode == 0, log
    assert f"AI_NODE listening for DICOM on 0.0.0.0, plain port {dicom_port}" in log
    audit = (tmp_path / "storage" / "audit.log").read_text()
    for name in ("node.yaml", "node.local.yaml"):
        assert str(tmp_path / "config" / name) in audit  # each file read, with its SHA-256


def test_a_job_or_outbox_id_out_of_the_index_range_is_refused_by_the_command_line(tmp_path):
    """Past 32 bits an id would reach PostgreSQL's driver as an overflow (a traceback): it is
    refused with the range, as a usage error, before the index is opened."""
    config = write_config(tmp_path, {})
    for args in (
        ["jobs", "show", str(2**31)],
        ["outbox", "retry", "7", "0"],
        ["jobs", "show", "x"],
    ):
        result = dicom_node("--config", str(config), *args)
        assert result.returncode == 2, args
        assert "Traceback" not in result.stderr
    assert (
        f"ids run from 1 to {2**31 - 1}: {2**31}"
        in dicom_node("--config", str(config), "jobs", "show", str(2**31)).stderr
    )
