"""What a radiologist sees of every AI result in OHIF 3.13.2, in Debian's chromium: the node gets
the chest CT (80 slices of it) and the chest CR by DCMTK, makes its results, and serves them by
DICOMweb to OHIF's own built viewer (tests/viewer, `npm ci --prefix tests/viewer`), which
playwright-core drives.
Each result series is double-clicked as a radiologist would; no error boundary, no console
error; the segment names, the measurement panel's entries with their values, and the overlay's
colour at a point the model found are there. Screenshots stay in the test's folder, or under
$DICOM_NODE_TEST_ARTEFACTS. Skipped where chromium or the viewer is not installed.

WebGL is chromium's own software implementation (SwiftShader): cornerstone's CPU rendering
draws no labelmap. The CR sent is the NEMA sample less its Pixel Spacing of 0\\0 (invalid,
dciodvfy's error): cornerstone lays an image out by its spacing, and with zero it draws nothing
of the image, whoever's results lie on it."""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from inference.dicom_seg import NOT_FOR_DIAGNOSIS

from .conftest import CR_CHEST, CT_SERIES, CT_THROUGH_LUNGS, dciodvfy_errors, dcmsend
from .test_durability import wait_until
from .test_results_delivery import job_states, stored_results, storescu_ct

VIEWER = Path(__file__).parent / "viewer"
CHROMIUM = Path("/usr/bin/chromium")
APP_CONFIG = """window.config = {{
  routerBasename: '/', extensions: [], modes: [], showStudyList: true,
  disableConfirmationPrompts: true, showCPUFallbackMessage: false,
  showWarningMessageForCrossOrigin: false, defaultDataSourceName: 'node',
  dataSources: [{{
    namespace: '@ohif/extension-default.dataSourcesModule.dicomweb', sourceName: 'node',
    configuration: {{
      friendlyName: 'DICOM AI node', name: 'node', wadoUriRoot: '{root}', qidoRoot: '{root}',
      wadoRoot: '{root}', qidoSupportsIncludeField: false, imageRendering: 'wadors',
      thumbnailRendering: 'wadors', enableStudyLazyLoad: true, supportsFuzzyMatching: false,
      supportsWildcard: true, staticWado: false, singlepart: 'bulkdata,video',
      bulkDataURI: {{ enabled: true, relativeResolution: 'studies' }},
      omitQuotationForMultipartRequest: true,
    }},
  }}],
}};
"""

pytestmark = [
    pytest.mark.skipif(
        not CHROMIUM.is_file() or not (VIEWER / "ohif" / "index.html").is_file(),
        reason="needs /usr/bin/chromium and `npm ci --prefix tests/viewer`",
    ),
    # What the viewer shows does not depend on the index's database: SQLite alone.
    pytest.mark.parametrize("database_kind", ["sqlite"]),
]


class _OhifHandler(SimpleHTTPRequestHandler):
    """OHIF's dist/ as a single-page app (its routes answered by index.html), with an
    app-config.js pointing at the node."""

    app_config = b""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        path = self.path.split("?", 1)[0]
        if path == "/app-config.js":
            self.send_response(200)
            self.send_header("Content-Type", "application/javascript")
            self.send_header("Content-Length", str(len(self.app_config)))
            self.end_headers()
            self.wfile.write(self.app_config)
            return
        if not (VIEWER / "ohif" / path.lstrip("/")).is_file():
            self.path = "/index.html"
        super().do_GET()

    def log_message(self, *args: object) -> None:
        """Quiet: the test's output is the viewer's report."""


@pytest.fixture
def ohif(node_for_viewer):
    """OHIF served on a free port, reading the node's DICOMweb; its URL."""
    root = f"http://127.0.0.1:{node_for_viewer.http_port}/dicomweb"
    handler = type(
        "Handler", (_OhifHandler,), {"app_config": APP_CONFIG.format(root=root).encode()}
    )
    server = ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(VIEWER / "ohif"))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture
def node_for_viewer(make_node, tmp_path, copy_files):
    """A node that took the chest CT (80 slices through the lungs: what the viewer shows of
    the results does not need the whole series) and the chest CR and made all their results."""
    node = make_node(study={"stable_seconds": 1, "check_interval_seconds": 0.2})
    node.settings["http"]["dicomweb"] = {"cors_origins": ["*"]}
    node.start()
    ct = copy_files(CT_SERIES, [path.name for path in CT_THROUGH_LUNGS])
    assert storescu_ct(node.port, "AI_NODE", ct).returncode == 0
    radiograph = pydicom.dcmread(CR_CHEST)
    del radiograph.PixelSpacing  # 0\0 in the sample: no image a viewer can lay out
    (tmp_path / "cr").mkdir()
    radiograph.save_as(tmp_path / "cr" / CR_CHEST.name)
    assert dcmsend(node.port, tmp_path / "cr").returncode == 0
    wait_until(lambda: job_states(node) == ["done", "done"], timeout=400)
    return node


def view(viewer: str, study: str, series: list[str], out: Path, probes: dict) -> dict:
    """tests/viewer/view.mjs's report on ``series`` of ``study``."""
    out.mkdir(parents=True, exist_ok=True)
    arguments = {"viewer": viewer, "study": study, "series": series, "out": str(out)}
    run = subprocess.run(
        ["node", str(VIEWER / "view.mjs"), json.dumps(arguments | {"probes": probes})],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout)


def drawn_in(colour: list[int], segment: pydicom.Dataset) -> bool:
    """Whether ``colour`` (drawn on a grey image) is tinted as ``segment``'s display colour: far
    from grey, its strongest channel the colour's."""
    lab = [int(v) for v in segment.RecommendedDisplayCIELabValue]
    expected = hd.color.CIELabColor.from_dicom_value(lab).to_rgb()
    return max(colour) - min(colour) > 40 and int(np.argmax(colour)) == int(np.argmax(expected))


def test_radiologist_sees_every_result_in_ohif(node_for_viewer, ohif, tmp_path):
    node = node_for_viewer
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in CT_THROUGH_LUNGS]
    slices = {h.SOPInstanceUID: h for h in headers}
    ct, cr = headers[0], pydicom.dcmread(CR_CHEST, stop_before_pixels=True)
    results = stored_results(node, ct.StudyInstanceUID) | stored_results(node, cr.StudyInstanceUID)
    assert sorted(results) == ["SEG 901", "SEG 903", "SR 902", "SR 904"]
    for result in results.values():
        assert dciodvfy_errors(result.filename) == set()
        assert result.SeriesDescription.endswith(f": {NOT_FOR_DIAGNOSIS}")

    # The objects as highdicom reads them, on the geometry of their sources.
    tissues = results["SEG 901"]
    seg = hd.seg.Segmentation.from_dataset(tissues)
    assert seg.FrameOfReferenceUID == ct.FrameOfReferenceUID
    orientation = tissues.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0]
    assert np.allclose(orientation.ImageOrientationPatient, ct.ImageOrientationPatient)
    for frame in tissues.PerFrameFunctionalGroupsSequence:
        source = frame.DerivationImageSequence[0].SourceImageSequence[0]
        position = frame.PlanePositionSequence[0].ImagePositionPatient
        assert np.allclose(position, slices[source.ReferencedSOPInstanceUID].ImagePositionPatient)
    report = hd.sr.Comprehensive3DSR.from_dataset(results["SR 902"])
    groups = report.content.get_image_measurement_groups()
    probes = {}
    for group, segment in zip(groups, tissues.SegmentSequence, strict=True):
        assert group.tracking_uid == segment.TrackingUID
        (volume, *_) = group.get_measurements()
        (circle,) = volume.referenced_coordinates
        image = circle.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        column, row = np.asarray(circle.GraphicData[:2]).astype(int)
        mask = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=[image], segment_numbers=[segment.SegmentNumber]
        )
        assert mask[0, row, column, 0], f"{segment.SegmentLabel}: the circle's centre is outside"
        if segment.SegmentLabel == "lung":
            probes["segmentation:"] = {"sop": image, "point": [int(column), int(row)]}
    explanation = hd.seg.Segmentation.from_dataset(results["SEG 903"])
    assert explanation.SegmentationType == "BINARY"
    assert (explanation.Rows, explanation.Columns) == (cr.Rows, cr.Columns)
    strongest = explanation.get_pixels_by_source_instance([cr.SOPInstanceUID])[0, ..., -1]
    rows, columns = np.nonzero(strongest)
    middle = int(np.hypot(rows - rows.mean(), columns - columns.mean()).argmin())
    probes["explanation:"] = {
        "sop": cr.SOPInstanceUID,
        "point": [int(columns[middle]), int(rows[middle])],
    }

    artefacts = Path(os.environ.get("DICOM_NODE_TEST_ARTEFACTS", tmp_path)) / "ohif"
    shown = view(ohif, ct.StudyInstanceUID, ["segmentation:", "report:"], artefacts / "ct", probes)
    shown_cr = view(
        ohif, cr.StudyInstanceUID, ["explanation:", "report:"], artefacts / "cr", probes
    )
    # OHIF's load times, double-click to overlay drawn (ms); measured, not asserted.
    print(
        json.dumps(
            {
                k: {"study": v["studyShownMs"]} | {n: s["shownMs"] for n, s in v["series"].items()}
                for k, v in (("ct", shown), ("cr", shown_cr))
            }
        )
    )
    for study in (shown, shown_cr):
        assert study["errors"] == []
        for name, series in study["series"].items():
            assert series["errorBoundary"] == 0, name
            assert series["shownMs"] is not None, f"{name}: no overlay drawn"

    ct_seg, ct_report = shown["series"]["segmentation:"], shown["series"]["report:"]
    segments = ct_seg["panels"]["panelSegmentation"]["text"]
    for label in ("lung", "fat", "soft tissue", "bone", "other body"):
        assert label in segments
    (lung,) = [s for s in tissues.SegmentSequence if s.SegmentLabel == "lung"]
    assert drawn_in(ct_seg["probe"], lung), f"lung drawn as {ct_seg['probe']}"
    # The measurement panel lists every tissue with its values.
    listed = ct_report["panels"]["trackedMeasurements"]["text"]
    assert "Measurements (5)" in listed
    for label in ("lung", "fat", "soft tissue", "bone", "other body"):
        value = r"-?\d+(\.\d+)?"
        pattern = rf"{label}: volume {value} mL, mean {value} HU, SD {value} HU"
        assert re.search(pattern, listed.replace("\n", " ")), f"{label} not listed"

    cr_explanation, cr_report = shown_cr["series"]["explanation:"], shown_cr["series"]["report:"]
    assert "evidence" in cr_explanation["panels"]["panelSegmentation"]["text"]
    band = results["SEG 903"].SegmentSequence[-1]
    assert drawn_in(cr_explanation["probe"], band), f"evidence drawn as {cr_explanation['probe']}"
    listed = cr_report["panels"]["trackedMeasurements"]["text"]
    assert "Measurements (1)" in listed
    # The shared CR is an adult's film, outside the paediatric classifier's domain: the panel
    # says it was not assessed and why, beside the probability marked as not reliable.
    finding = (
        r"pneumonia not assessed, input outside the model's domain \(.*patient age outside.*\): "
        r"probability [\d.]+ not reliable \(threshold [\d.]+\)"
    )
    assert re.search(finding, listed.replace("\n", " ")), listed
    assert cr_report["svg"] > 0, "the finding's box is not drawn"
