"""What a radiologist sees of every AI result in OHIF 3.13.2, in Debian's chromium: the node gets
the chest CT and the chest CR by DCMTK, makes its results, and serves them by DICOMweb to OHIF's
own built viewer (tests/viewer, `npm ci --prefix tests/viewer`), which playwright-core drives.
Each result series is double-clicked as a radiologist would; no error boundary, no console
error; the segment names, the SR values drawn in the viewport and the overlays are there. The
screenshots stay in the test's folder. Skipped where chromium or the viewer is not installed."""

from __future__ import annotations

import functools
import json
import re
import subprocess
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from .conftest import CR_CHEST, CT_SERIES, dciodvfy_errors, dcmsend
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

pytestmark = pytest.mark.skipif(
    not CHROMIUM.is_file() or not (VIEWER / "ohif" / "index.html").is_file(),
    reason="needs /usr/bin/chromium and `npm ci --prefix tests/viewer`",
)


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
def node_for_viewer(make_node, copy_files):
    """A node that took the chest CT and the chest CR and made all their results."""
    node = make_node(study={"stable_seconds": 1, "check_interval_seconds": 0.2})
    node.settings["http"]["dicomweb"] = {"cors_origins": ["*"]}
    node.start()
    assert storescu_ct(node.port, "AI_NODE").returncode == 0
    assert dcmsend(node.port, copy_files(CR_CHEST.parent, [CR_CHEST.name])).returncode == 0
    wait_until(lambda: job_states(node) == ["done", "done"], timeout=400)
    return node


def view(viewer: str, study: str, series: list[str], out: Path) -> dict:
    """tests/viewer/view.mjs's report on ``series`` of ``study``."""
    out.mkdir(exist_ok=True)
    arguments = {"viewer": viewer, "study": study, "series": series, "out": str(out)}
    run = subprocess.run(
        ["node", str(VIEWER / "view.mjs"), json.dumps(arguments)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout)


def test_radiologist_sees_every_result_in_ohif(node_for_viewer, ohif, tmp_path):
    node = node_for_viewer
    ct = pydicom.dcmread(next(CT_SERIES.glob("*.dcm")), stop_before_pixels=True)
    cr = pydicom.dcmread(CR_CHEST, stop_before_pixels=True)
    results = stored_results(node, ct.StudyInstanceUID) | stored_results(node, cr.StudyInstanceUID)
    for result in results.values():
        assert dciodvfy_errors(result.filename) == set()

    # The objects as highdicom reads them, on the geometry of their sources.
    seg = hd.seg.Segmentation.from_dataset(results["SEG 901"])
    assert seg.FrameOfReferenceUID == ct.FrameOfReferenceUID
    report = hd.sr.Comprehensive3DSR.from_dataset(results["SR 902"])
    groups = report.content.get_image_measurement_groups()
    assert [g.tracking_identifier for g in groups] == [
        s.SegmentLabel for s in results["SEG 901"].SegmentSequence
    ]
    for group, segment in zip(groups, results["SEG 901"].SegmentSequence, strict=True):
        assert group.tracking_uid == segment.TrackingUID
        (volume, *_) = group.get_measurements()
        (circle,) = volume.referenced_coordinates
        image = circle.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        column, row = np.asarray(circle.GraphicData[:2]).astype(int)
        mask = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=[image], segment_numbers=[segment.SegmentNumber]
        )
        assert mask[0, row, column, 0], f"{segment.SegmentLabel}: the circle's centre is outside"
    explanation = hd.seg.Segmentation.from_dataset(results["SEG 903"])
    assert explanation.SegmentationType == "BINARY"
    assert (explanation.Rows, explanation.Columns) == (cr.Rows, cr.Columns)

    shown = view(ohif, ct.StudyInstanceUID, ["segmentation:", "report:"], tmp_path / "ct")
    shown_cr = view(ohif, cr.StudyInstanceUID, ["explanation:", "report:"], tmp_path / "cr")
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
    # An SR that is not OHIF's own is displayed, not hydrated: its values are drawn with the
    # circle in the viewport (the measurement panel lists tracked, hydrated measurements only).
    assert re.search(r"Volume: [\d.]+ ml", ct_report["text"])
    assert re.search(r"Mean: -?[\d.]+ \[hnsf'U\]", ct_report["text"])
    assert re.search(r"Standard Deviation: [\d.]+ \[hnsf'U\]", ct_report["text"])
    cr_report = shown_cr["series"]["report:"]["text"]
    assert re.search(r"Probability: [\d.]+", cr_report)
    explanation = shown_cr["series"]["explanation:"]["panels"]["panelSegmentation"]["text"]
    assert "evidence" in explanation
