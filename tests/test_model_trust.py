"""The classifier bundles' contract of trust: calibrated probabilities (fitted on validation,
stored in the bundle, applied to every result), a threshold chosen on validation on that scale,
and a model card with its figures, reproducible by ``python -m inference.evaluate``."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from dicom_node.config import BUILTIN_BUNDLES
from inference.bundle import Bundle
from inference.calibration import Calibration, expected_calibration_error
from inference.evaluate import main as evaluate_main
from inference.image2d import load_image2d
from inference.run import classify

from .conftest import SHARED_DATA

CLASSIFIERS = ["cxr_pneumonia", "breast_us"]
BREASTMNIST = SHARED_DATA / "breastmnist" / "breastmnist.npz"
KERMANY = SHARED_DATA / "chest_xray_kermany_224" / "train"
CARD_FIGURES = ("roc.png", "reliability.png", "confusion.png")


def test_calibration_recovers_a_known_temperature_and_bias():
    """Labels drawn from sigmoid(d / 2 - 1) of known logit differences d: the fit finds T = 2 and
    b = -1, and its probabilities are calibrated where the raw softmax is not."""
    rng = np.random.default_rng(7)
    difference = rng.normal(0, 4, 20000)
    labels = (rng.random(difference.size) < 1 / (1 + np.exp(-(difference / 2 - 1)))).astype(int)
    logits = np.stack([np.zeros_like(difference), difference], axis=1)
    fitted = Calibration.fit(logits, labels)
    assert fitted.temperature == pytest.approx(2.0, rel=0.05)
    assert fitted.bias == pytest.approx(-1.0, abs=0.1)
    assert expected_calibration_error(labels, fitted.positive_probability(logits)) < 0.02
    assert expected_calibration_error(labels, Calibration().positive_probability(logits)) > 0.05


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_bundle_states_calibration_threshold_and_card(name):
    bundle = Bundle.load(BUILTIN_BUNDLES / name)
    metadata = bundle.metadata
    calibration = metadata["calibration"]
    assert calibration["temperature"] > 0 and "validation" in calibration["method"]
    validation = metadata["validation"]
    assert bundle.threshold == validation["threshold"]
    assert (
        validation["expected_calibration_error"]
        < validation["expected_calibration_error_uncalibrated"]
    )
    for figure in ("sensitivity", "specificity", "accuracy", "auc"):
        low, high = validation[f"{figure}_95ci"]
        assert low <= validation[figure] <= high
    docs = bundle.path / "docs"
    card = (docs / "README.md").read_text()
    for figure in CARD_FIGURES:
        assert f"({figure})" in card
        assert (docs / figure).stat().st_size < 60_000
    assert "## Who it was trained on" in card and "## Intended use" in card
    assert f"**{validation['threshold']}**" in card
    assert metadata["evaluation"]["command"].startswith("python -m inference.evaluate")


def test_chest_model_is_calibrated_to_target():
    validation = Bundle.load(BUILTIN_BUNDLES / "cxr_pneumonia").metadata["validation"]
    assert validation["expected_calibration_error"] <= 0.03


def test_results_report_the_calibrated_probability():
    """What ``classify`` reports is the stored calibration applied to the network's outputs,
    not the raw softmax."""
    bundle = Bundle.load(BUILTIN_BUNDLES / "cxr_pneumonia")
    jpeg = sorted((KERMANY / "PNEUMONIA").glob("*.jpeg"))[0]
    pixels = load_image2d(jpeg)
    (result,) = classify(bundle, [pixels])
    with torch.no_grad():
        logits = bundle.network(torch.as_tensor(bundle.preprocessing(pixels))[None].float())
    calibration = Calibration.from_metadata(bundle.metadata)
    expected = calibration.positive_probability(logits.numpy())[0]
    raw = torch.softmax(logits, dim=1)[0, 1].item()
    assert result.probabilities["pneumonia"] == pytest.approx(expected, abs=1e-5)
    assert abs(expected - raw) > 1e-3
    assert result.threshold == bundle.threshold


def test_evaluation_reproduces_the_committed_calibration_threshold_and_card(tmp_path):
    """``python -m inference.evaluate`` on the committed weights and the validation split gives
    the calibration, threshold and figures the bundle ships (breast_us: seconds)."""
    copy = tmp_path / "breast_us"
    shutil.copytree(BUILTIN_BUNDLES / "breast_us", copy)
    metadata_path = copy / "configs" / "metadata.json"
    shipped = json.loads(metadata_path.read_text())
    blank = {k: v for k, v in shipped.items() if k not in {"calibration", "threshold"}}
    metadata_path.write_text(json.dumps(blank))
    for figure in CARD_FIGURES:
        (copy / "docs" / figure).unlink()
    evaluate_main(
        ["breastmnist", "--data", str(BREASTMNIST), "--bundle", str(copy), "--threads", "1"]
    )
    made = json.loads(metadata_path.read_text())
    assert made["threshold"] == shipped["threshold"]
    assert made["calibration"] == pytest.approx(shipped["calibration"], abs=2e-4)
    assert made["validation"] == shipped["validation"]
    assert all((copy / "docs" / figure).is_file() for figure in CARD_FIGURES)
