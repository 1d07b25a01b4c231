"""Upload and predict as a person does it, in Debian's chromium (tests/viewer/console_predict.mjs,
playwright-core): a BreastMNIST ultrasound picture and the NEMA chest CR dropped on the drop zone
(a real drop event), a real chest radiograph JPEG with the patient's details and 80 slices of the
shared chest CT (the whole series goes through the console in test_console_predict.py) through
the page's file input, each with its model chosen in the dropdown. The page shows the
probability and the model's threshold (for the adult CR, outside the model's 0-17 years, and the
ultrasound, unlike its training images: *not assessed* and why), where each model ran, the
explanation drawn over the image (a pixel of the overlay in the explanation's colour at full
opacity), the tissue volumes, a 3D view that rendered (its WebGL canvas read back, non-blank,
changed by a drag and by arrow keys, described by the volumes table) and the slices; axe-core
finds no serious or critical violation. Screenshots stay in the test's folder, or under
$DICOM_NODE_TEST_ARTEFACTS. Skipped where chromium, tests/viewer's packages or the console's
three.js bundle (`npm run build --prefix dicom_node/console/frontend`) are missing."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .browser import artefacts, browser_report, needs_chromium, serious
from .conftest import CR_CHEST, CT_THROUGH_LUNGS
from .test_console_predict import (
    BAND_COLOURS,
    CXR_THRESHOLD,
    PNEUMONIA_JPEG,
    READER,
    WRITER,
    console_node,
)
from .test_model_trust import BREASTMNIST

THREE = Path(__file__).parents[1] / "dicom_node" / "console" / "static" / "vendor" / "three.js"

pytestmark = [
    needs_chromium,
    pytest.mark.skipif(
        not THREE.is_file(),
        reason="needs the console's three.js bundle (`npm ci --prefix dicom_node/console/frontend"
        " && npm run build --prefix dicom_node/console/frontend`)",
    ),
    pytest.mark.parametrize("database_kind", ["sqlite"]),
]


def breast_png(folder: Path) -> Path:
    """A BreastMNIST ultrasound as a 224 px PNG: a picture the chest model was not trained on."""
    images = np.load(BREASTMNIST)["test_images"]
    path = folder / "breast.png"
    Image.fromarray(images[0]).resize((224, 224), Image.Resampling.BILINEAR).save(path)
    return path


def test_a_person_uploads_and_reads_the_predictions(make_node, tmp_path):
    node, _ = console_node(make_node)
    out = artefacts(tmp_path, "console_predict")
    uploads = [
        {
            "name": "breast",
            "files": [str(breast_png(tmp_path))],
            "models": ["cxr_pneumonia"],
            "kind": "finding",
            "via": "drop",
        },
        {
            "name": "cr",
            "files": [str(CR_CHEST)],
            "models": ["cxr_pneumonia"],
            "kind": "finding",
            "via": "drop",
        },
        {
            "name": "jpeg",
            "files": [str(PNEUMONIA_JPEG)],
            "models": ["cxr_pneumonia"],
            "details": {"patient_name": "Doe^Jane", "patient_id": "BROWSER-1"},
            "kind": "finding",
        },
        {
            "name": "ct",
            "files": [str(p) for p in CT_THROUGH_LUNGS],
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
    report = browser_report("console_predict.mjs", arguments, timeout=900)
    assert report["errors"] == []
    assert {"cxr_pneumonia", "ct_tissue"} <= set(report["models"])
    assert serious(report["axeBefore"]) == [] and serious(report["axeAfter"]) == []

    breast, cr, jpeg, ct = report["uploads"]
    assert breast["dropped"] == ["breast.png"] and cr["dropped"] == [CR_CHEST.name]
    for shown in (breast, cr, jpeg):
        assert "done" in shown["heading"]
        ((label, probability, threshold),) = shown["classification"]
        assessed = shown is jpeg
        assert shown["title"] == f"cxr_pneumonia: {label}"
        assert (label in ("normal", "pneumonia")) if assessed else (label == "not assessed")
        assert probability.endswith(" %" if assessed else " % (not reliable)")
        assert 0 <= float(probability.split(" %")[0]) <= 100
        assert threshold == f"{CXR_THRESHOLD * 100:.1f} %"
        (ran,) = shown["ran"]
        assert re.search(r": cxr_pneumonia \S+ on cpu \(\d+\.\d s\)", ran), ran
        if not assessed:
            (reason,) = shown["reason"]
            assert "not assessed, input outside the model's domain" in reason
        overlay = shown["overlay"]
        assert 0 < overlay["changed"] < overlay["width"] * overlay["height"]
        assert tuple(overlay["first"]["full"]) in BAND_COLOURS
        assert tuple(overlay["first"]["none"]) not in BAND_COLOURS

    assert "patient age outside the trained 0-17 years" in cr["reason"][0]
    assert "image unlike the training images (feature distance" in breast["reason"][0]
    assert "done" in ct["heading"]
    volumes = {row[0]: float(row[1]) for row in ct["volumes"]}
    assert {"lung", "fat", "soft tissue", "bone"} <= set(volumes)
    assert 1000 < volumes["lung"] < 8000
    assert ct["before"]["drawn"] > 0.05 * ct["before"]["total"]
    assert ct["turned"]["drawn"] > 0 and ct["turned"]["hash"] != ct["before"]["hash"]
    # operable by keyboard (arrow keys move it), and the volumes table is its text alternative
    assert ct["focused3d"] == "ct-3d" and ct["describedBy"] == "Tissue volumes"
    assert ct["keyed"]["drawn"] > 0 and ct["keyed"]["hash"] != ct["turned"]["hash"]
    assert ct["slice"] == {"width": 512, "height": 512}
    assert READER["username"] not in json.dumps(report["errors"])
