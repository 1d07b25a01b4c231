"""Upload and predict as a person does it, in Debian's chromium (tests/viewer/console_predict.mjs,
playwright-core): a real chest radiograph JPEG with the patient's details, the NEMA chest CR and
the shared chest CT, each through the page's file input with its model chosen in the dropdown.
The page shows the probability and the model's threshold, the explanation drawn over the image
(a pixel of the overlay in the explanation's colour at full opacity), the tissue volumes, a 3D
view that rendered (its WebGL canvas read back, non-blank, and changed by a drag) and the slices;
axe-core finds no serious or critical violation. Screenshots stay in the test's folder, or under
$DICOM_NODE_TEST_ARTEFACTS. Skipped where chromium, tests/viewer's packages or the console's
three.js bundle (`npm run build --prefix dicom_node/console/frontend`) are missing."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from .conftest import CR_CHEST, CT_SERIES
from .test_console_predict import BAND_COLOURS, PNEUMONIA_JPEG, READER, WRITER, console_node

VIEWER = Path(__file__).parent / "viewer"
CHROMIUM = Path("/usr/bin/chromium")
THREE = Path(__file__).parents[1] / "dicom_node" / "console" / "static" / "vendor" / "three.js"

pytestmark = [
    pytest.mark.skipif(
        not CHROMIUM.is_file()
        or not (VIEWER / "node_modules" / "playwright-core").is_dir()
        or not THREE.is_file(),
        reason="needs /usr/bin/chromium, `npm ci --prefix tests/viewer` and the console's "
        "three.js bundle (`npm ci --prefix dicom_node/console/frontend && npm run build "
        "--prefix dicom_node/console/frontend`)",
    ),
    pytest.mark.parametrize("database_kind", ["sqlite"]),
]


def serious(violations: list[dict]) -> list[dict]:
    return [v for v in violations if v["impact"] in ("serious", "critical")]


def test_a_person_uploads_and_reads_the_predictions(make_node, tmp_path):
    node, _ = console_node(make_node)
    out = Path(os.environ.get("DICOM_NODE_TEST_ARTEFACTS", tmp_path)) / "console_predict"
    out.mkdir(parents=True, exist_ok=True)
    uploads = [
        {
            "name": "jpeg",
            "files": [str(PNEUMONIA_JPEG)],
            "models": ["cxr_pneumonia"],
            "details": {"patient_name": "Doe^Jane", "patient_id": "BROWSER-1"},
            "kind": "finding",
        },
        {"name": "cr", "files": [str(CR_CHEST)], "models": ["cxr_pneumonia"], "kind": "finding"},
        {
            "name": "ct",
            "files": [str(p) for p in sorted(CT_SERIES.glob("*.dcm"))],
            "models": ["ct_tissue"],
            "kind": "measurements",
        },
    ]
    arguments = {
        "url": f"http://127.0.0.1:{node.http_port}/ui/",
        "user": WRITER["username"],
        "password": WRITER["password"],
        "out": str(out),
        "uploads": uploads,
    }
    run = subprocess.run(
        ["node", str(VIEWER / "console_predict.mjs"), json.dumps(arguments)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout)
    assert report["errors"] == []
    assert {"cxr_pneumonia", "ct_tissue"} <= set(report["models"])
    assert serious(report["axeBefore"]) == [] and serious(report["axeAfter"]) == []

    jpeg, cr, ct = report["uploads"]
    for shown in (jpeg, cr):
        assert "done" in shown["heading"]
        ((label, probability, threshold),) = shown["classification"]
        assert label in ("normal", "pneumonia")
        assert probability.endswith(" %") and 0 <= float(probability[:-2]) <= 100
        assert threshold == "49.0 %"
        overlay = shown["overlay"]
        assert 0 < overlay["changed"] < overlay["width"] * overlay["height"]
        assert tuple(overlay["first"]["full"]) in BAND_COLOURS
        assert tuple(overlay["first"]["none"]) not in BAND_COLOURS

    assert "done" in ct["heading"]
    volumes = {row[0]: float(row[1]) for row in ct["volumes"]}
    assert {"lung", "fat", "soft tissue", "bone"} <= set(volumes)
    assert 1000 < volumes["lung"] < 8000
    assert ct["before"]["drawn"] > 0.05 * ct["before"]["total"]
    assert ct["turned"]["drawn"] > 0 and ct["turned"]["hash"] != ct["before"]["hash"]
    assert ct["slice"] == {"width": 512, "height": 512}
    assert READER["username"] not in json.dumps(report["errors"])
