"""Upload and predict in the console's API, against a running node: a real chest radiograph
JPEG wrapped as a Secondary Capture, a DICOM CR and the shared chest CT stored through STOW-RS,
each job started at once with the chosen model (the node's study.stable_seconds is an hour), and
the results read back: the finding with its probability and the model's threshold, the image and
its explanation as pictures of one size, the CT's volumes, its mesh and its slices. Hostile
uploads get a precise 4xx; reading users and strangers cannot upload."""

from __future__ import annotations

import io
import json
import re
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests
from PIL import Image

from dicom_node.config import BUILTIN_BUNDLES
from dicom_node.console.results import read_finding
from dicom_node.index.contents import instance_path

from .conftest import CR_CHEST, CT_SERIES, SHARED_DATA, dciodvfy_errors
from .test_audit import audit_messages, of_event
from .test_console import GUARD, READ, READER, WRITE, WRITER

KERMANY = SHARED_DATA / "chest_xray_kermany_224" / "train"
PNEUMONIA_JPEG = sorted((KERMANY / "PNEUMONIA").glob("*.jpeg"))[0]
#: the chest model's threshold, as its bundle declares it
CXR_THRESHOLD = json.loads(
    (BUILTIN_BUNDLES / "cxr_pneumonia" / "configs" / "metadata.json").read_text()
)["threshold"]
#: the explanation bands' colours (inference.dicom_seg.EXPLANATION_BANDS), as drawn
BAND_COLOURS = {(255, 215, 0), (255, 32, 32)}


def console_node(make_node, **overrides):
    node = make_node(
        http={
            "dicomweb": {"auth": {"basic_users": [READER, WRITER]}, **overrides},
            "console": {"viewer_url": "http://viewer.example/viewer?StudyInstanceUIDs={study}"},
        }
    )
    node.start()
    return node, f"http://127.0.0.1:{node.http_port}/ui/api/predict"


def stow(node, paths: list[Path]) -> requests.Response:
    boundary = "console-test-boundary"
    body = b"".join(
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + p.read_bytes()
        + b"\r\n"
        for p in paths
    )
    body += f"--{boundary}--\r\n".encode()
    return requests.post(
        f"http://127.0.0.1:{node.http_port}/dicomweb/studies",
        body,
        headers={
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'
        },
        auth=WRITE,
        timeout=120,
    )


def upload_picture(
    api: str, data: bytes, name: str = "chest.jpeg", models=("cxr_pneumonia",), **details
):
    fields = [("models", m) for m in models] + list(details.items())
    return requests.post(
        f"{api}/picture",
        files=[("file", (name, data, "image/jpeg"))] + [(k, (None, v)) for k, v in fields],
        headers=GUARD,
        auth=WRITE,
        timeout=60,
    )


def ended(api: str, job: int, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = requests.get(f"{api}/jobs/{job}", auth=READ, timeout=30).json()
        if state["state"] in ("done", "failed"):
            return state
        time.sleep(0.5)
    raise AssertionError(f"job {job} did not end in {timeout} s: {state}")


def picture(response: requests.Response) -> Image.Image:
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "image/png"
    return Image.open(io.BytesIO(response.content))


def check_finding(api: str, state: dict, assessed: bool = True) -> dict:
    """The job's one finding, its numbers and its two pictures (same size, the overlay drawn in
    the explanation's colours where the model looked, transparent elsewhere); an image outside
    the model's domain has no finding but *not assessed* and the report's reason."""
    assert state["state"] == "done", state
    (finding,) = state["findings"]
    assert finding["model"] == "cxr_pneumonia"
    assert 0.0 <= finding["probability"] <= 1.0
    assert finding["threshold"] == CXR_THRESHOLD
    assert finding["assessed"] is assessed
    if assessed:
        assert finding["label"] in ("normal", "pneumonia") and not finding["reason"]
        assert finding["present"] == (finding["label"] == "pneumonia")
        assert finding["present"] == (finding["probability"] >= finding["threshold"])
    else:
        assert finding["label"] == "not assessed" and not finding["present"]
        assert "outside the model's domain" in finding["reason"]
    # where each model ran: the job's note names the device and the time it took
    ran = re.compile(r"cxr_pneumonia \S+ on (cpu|cuda:\d+ \(.+\)) \(\d+\.\d s\)")
    assert any(ran.search(note) for note in state["notes"]), state["notes"]
    base = f"{api}/studies/{state['study']}"
    image = picture(requests.get(f"{base}/images/{finding['image']}", auth=READ, timeout=30))
    overlay = picture(
        requests.get(
            f"{base}/explanations/{finding['explanation']}/{finding['image']}",
            auth=READ,
            timeout=30,
        )
    )
    assert image.size == overlay.size and max(image.size) <= 768
    rgba = np.asarray(overlay.convert("RGBA"))
    drawn = rgba[..., 3] == 255
    assert 0 < drawn.mean() < 1
    assert {tuple(c) for c in rgba[drawn][:, :3]} <= BAND_COLOURS
    return finding


@pytest.fixture
def node_and_api(make_node):
    return console_node(make_node, max_stow_part_bytes=3 << 20)


def test_a_picture_and_a_cr_are_classified_with_their_explanation(node_and_api):
    node, api = node_and_api
    models = requests.get(f"{api}/models", auth=READ, timeout=10).json()
    cards = {model["name"]: model for model in models}
    assert {"cxr_pneumonia", "ct_tissue", "breast_us"} <= set(cards)
    assert cards["cxr_pneumonia"]["threshold"] == CXR_THRESHOLD
    assert "Intended use" in cards["cxr_pneumonia"]["card"]

    jpeg = PNEUMONIA_JPEG.read_bytes()
    answer = upload_picture(
        api, jpeg, patient_name="Doe^Jane", patient_id="CONSOLE-1", study_description="Chest"
    )
    assert answer.status_code == 202, answer.text
    state = ended(api, answer.json()["job"], timeout=240)
    assert state["models"] == ["cxr_pneumonia"]
    assert state["viewer_url"] == (
        f"http://viewer.example/viewer?StudyInstanceUIDs={state['study']}"
    )
    finding = check_finding(api, state)
    # the pictures are reads of the patient's image: audited once for the reader and the study
    reads = [
        read
        for read in of_event(audit_messages(node.storage / "audit.log"), ("110104", "", "R"))
        if state["study"]
        in [
            item.get("ParticipantObjectID")
            for item in read.findall("ParticipantObjectIdentification")
        ]
    ]
    assert len(reads) == 1
    assert reads[0].find("ActiveParticipant[@UserID='reader']") is not None
    description = reads[0].find("EventIdentification/EventOutcomeDescription").text
    assert description.startswith("a console picture of the image; ")
    base = f"{api}/studies/{state['study']}/explanations"
    for seg, image in (
        (finding["report"], finding["image"]),
        (finding["explanation"], finding["report"]),
    ):
        assert requests.get(f"{base}/{seg}/{image}", auth=READ, timeout=30).status_code == 422
    assert (
        requests.get(f"{base}/1.2.3/{finding['image']}", auth=READ, timeout=30).status_code == 404
    )
    stored_path = node.storage / instance_path(node.engine(), finding["image"])
    assert dciodvfy_errors(stored_path) == set()
    stored = pydicom.dcmread(stored_path)
    assert stored.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"
    assert stored.ConversionType == "WSD"
    assert stored.PatientName == "Doe^Jane" and stored.PatientID == "CONSOLE-1"
    assert stored.StudyDescription == "Chest"
    assert "uploaded" in stored.SeriesDescription.lower()
    assert "uploaded in the node's web console by writer" in stored.ImageComments
    assert np.array_equal(stored.pixel_array, np.asarray(Image.open(PNEUMONIA_JPEG).convert("L")))
    assert "Doe" not in node.log() and "CONSOLE-1" not in node.log()

    stored_cr = stow(node, [CR_CHEST])
    assert stored_cr.status_code == 200, stored_cr.text
    study = str(pydicom.dcmread(CR_CHEST, stop_before_pixels=True).StudyInstanceUID)
    answer = requests.post(
        f"{api}/jobs", json={"study": study, "models": ["cxr_pneumonia"]}, headers=GUARD, auth=WRITE
    )
    assert answer.status_code == 202, answer.text
    # an adult's film (64 years by its dates): outside the model's 0-17 years, not assessed
    cr = check_finding(api, ended(api, answer.json()["job"], timeout=240), assessed=False)
    assert "patient age outside the trained 0-17 years" in cr["reason"]


def test_a_report_not_assessed_reads_back_as_such_with_its_reason(classified):
    """The adult CR's stored report, read as the console reads it: no finding, the SR's reason."""
    bundle, result, _, _, report = classified
    finding = read_finding(report, {bundle.name: bundle})
    assert finding is not None and not finding.assessed and not finding.present
    assert finding.label == "not assessed"
    assert finding.probability == pytest.approx(result.probabilities["pneumonia"], abs=1e-4)
    assert finding.reason.startswith(
        "pneumonia not assessed, input outside the model's domain (patient age outside"
    )


def png_bomb(side: int) -> bytes:
    """A valid 1-bit PNG of side x side pixels, all black: a few kB that decode into side²."""
    row = b"\x00" + bytes((side + 7) // 8)
    compressed = zlib.compress(row * side, 9)

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", compressed)
        + chunk(b"IEND", b"")
    )


def test_hostile_uploads_get_a_precise_refusal_and_strangers_none(node_and_api):
    node, api = node_and_api
    jpeg = PNEUMONIA_JPEG.read_bytes()
    assert requests.get(f"{api}/models", timeout=10).status_code == 401
    refused = requests.post(
        f"{api}/picture", files={"file": ("a.jpeg", jpeg)}, headers=GUARD, auth=READ, timeout=10
    )
    assert refused.status_code == 403
    unguarded = requests.post(
        f"{api}/picture", files={"file": ("a.jpeg", jpeg)}, auth=WRITE, timeout=10
    )
    assert unguarded.status_code == 403 and "X-Requested-By" in unguarded.json()["detail"]

    cases = {
        "not a picture": (b"%PDF-1.7 not an image", 415, "neither a PNG nor a JPEG"),
        "a GIF": (_gif(), 415, "GIF"),
        "a bomb": (png_bomb(20_000), 413, "decompression-bomb"),
        "cut short": (jpeg[: len(jpeg) // 2], 400, "cannot be decoded"),
        "too large": (jpeg + bytes(4 << 20), 413, "max_stow_part_bytes"),
    }
    for name, (data, status, reason) in cases.items():
        answer = upload_picture(api, data)
        assert answer.status_code == status, (name, answer.text)
        assert reason in answer.json()["detail"], (name, answer.text)
    assert upload_picture(api, jpeg, models=("no_such_model",)).status_code == 400
    bad = upload_picture(api, jpeg, patient_name="line\nbreak")
    assert bad.status_code == 422 and "patient_name" in bad.json()["detail"]
    unknown = requests.post(
        f"{api}/jobs",
        json={"study": "1.2.3", "models": ["cxr_pneumonia"]},
        headers=GUARD,
        auth=WRITE,
    )
    assert unknown.status_code == 404
    assert requests.get(f"{api}/jobs/999", auth=READ, timeout=10).status_code == 404
    assert "Traceback" not in node.log()


def _gif() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (8, 8)).save(buffer, "GIF")
    return buffer.getvalue()


@pytest.mark.parametrize("database_kind", ["sqlite"])
def test_a_ct_uploaded_gets_its_volumes_mesh_and_slices(make_node):
    node, api = console_node(make_node)
    paths = sorted(CT_SERIES.glob("*.dcm"))
    assert stow(node, paths).status_code == 200
    study = str(pydicom.dcmread(paths[0], stop_before_pixels=True).StudyInstanceUID)
    answer = requests.post(
        f"{api}/jobs", json={"study": study, "models": ["ct_tissue"]}, headers=GUARD, auth=WRITE
    )
    assert answer.status_code == 202, answer.text
    state = ended(api, answer.json()["job"], timeout=400)
    assert state["state"] == "done", state
    (measured,) = state["measurements"]
    volumes = {v["name"]: v for v in measured["volumes"]}
    assert {"lung", "fat", "soft tissue", "bone"} <= set(volumes)
    assert 1000 < volumes["lung"]["volume_ml"] < 8000
    assert volumes["lung"]["mean_hu"] < -500 < 200 < volumes["bone"]["mean_hu"]

    base = f"{api}/studies/{study}/ct/{measured['segmentation']}"
    mesh = requests.get(f"{base}/mesh", auth=READ, timeout=120)
    assert mesh.status_code == 200 and len(mesh.content) < 8 << 20
    length = struct.unpack("<I", mesh.content[:4])[0]
    header = json.loads(mesh.content[4 : 4 + length])
    sizes = [s["vertices"] * 12 + s["triangles"] * 12 for s in header["segments"]]
    assert len(mesh.content) == 4 + length + sum(sizes)
    assert {s["name"] for s in header["segments"]} == set(volumes)
    first = header["segments"][0]
    vertices = np.frombuffer(mesh.content, "<f4", first["vertices"] * 3, 4 + length).reshape(-1, 3)
    # the chest is about 35 cm wide and the CT 31 cm long, centred on 0
    assert 50 < np.ptp(vertices[:, 0]) < 400 and np.abs(vertices).max() < 300

    assert requests.get(f"{base}/slices", auth=READ, timeout=60).json() == {"slices": len(paths)}
    middle = picture(requests.get(f"{base}/slices/124", auth=READ, timeout=60))
    pixels = np.asarray(middle.convert("RGB")).astype(int)
    assert (np.ptp(pixels, axis=2) > 40).mean() > 0.05  # segments blended in colour
    assert requests.get(f"{base}/slices/{len(paths)}", auth=READ, timeout=60).status_code == 404


def test_the_viewer_url_must_name_the_study():
    from dicom_node.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match=r"http.console.viewer_url: .*\{study\}"):
        parse_config({"http": {"console": {"viewer_url": "https://ohif.example/viewer"}}})
    settings = parse_config({"http": {"console": {"viewer_url": "/ohif/viewer?s={study}"}}})
    assert settings.http.console.viewer_link("1.2.3") == "/ohif/viewer?s=1.2.3"
    assert parse_config({}).http.console.viewer_link("1.2.3") is None
