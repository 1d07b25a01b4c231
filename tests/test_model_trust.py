"""The classifier bundles' contract of trust: calibrated probabilities (fitted on validation,
stored in the bundle, applied to every result), a threshold chosen on validation on that scale,
a model card with its figures, reproducible by ``python -m inference.evaluate``, and inputs
outside the model's domain (adults, lateral views, other body parts and modalities, inverted or
windowed-out images) answered with "not assessed" rather than a finding."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pydicom
import pytest
import torch
from PIL import Image

from dicom_node.config import BUILTIN_BUNDLES
from inference.acquisition_shifts import SHIFTS, blurred, gamma, zoomed
from inference.bundle import Bundle
from inference.calibration import Calibration, expected_calibration_error
from inference.datasets import cxr_split_files
from inference.evaluate import DEFAULT_SEED, DEFAULT_VAL_FRACTION, inverted, windowed_out
from inference.evaluate import main as evaluate_main
from inference.image2d import display_pixels, load_image2d
from inference.input_domain import patient_age_years
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
    shifts = metadata["validation_shifts"]
    assert set(shifts) == set(SHIFTS)
    for name, figures in shifts.items():
        assert f"| {name} | {figures['sensitivity']:.3f} | {figures['specificity']:.3f} |" in card
    assert metadata["evaluation"]["command"].startswith("python -m inference.evaluate")


def test_chest_model_is_calibrated_to_target():
    validation = Bundle.load(BUILTIN_BUNDLES / "cxr_pneumonia").metadata["validation"]
    assert validation["expected_calibration_error"] <= 0.03
    assert validation["expected_calibration_error_cross_fitted"] <= 0.03


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
    assert made["input_domain"] == shipped["input_domain"]
    assert made["validation_shifts"] == shipped["validation_shifts"]
    assert all((copy / "docs" / figure).is_file() for figure in CARD_FIGURES)


def test_training_with_loader_workers_and_averaged_weights_writes_a_usable_bundle(tmp_path):
    """``python -m inference.train`` with augmenting workers and a moving average of the
    weights (the options a GPU run uses): weights that load, a record that repeats the options
    that shape them and names the device, and the evaluation that follows (breast_us: seconds)."""
    copy = tmp_path / "breast_us"
    shutil.copytree(BUILTIN_BUNDLES / "breast_us", copy)
    (copy / "models" / "model.pt").unlink()
    result = subprocess.run(
        [sys.executable, "-m", "inference.train", "breastmnist", "--data", str(BREASTMNIST)]
        + ["--bundle", str(copy), "--epochs", "1", "--workers", "2", "--ema", "0.9"]
        + ["--device", "cpu", "--threads", "1"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert "epoch 1/1" in result.stdout
    metadata = json.loads((copy / "configs" / "metadata.json").read_text())
    assert metadata["training"]["command"].endswith("--epochs 1 --ema 0.9")
    assert metadata["training"]["device"] == "cpu"
    assert 0.0 < metadata["threshold"] < 1.0 and "calibration" in metadata
    image = np.load(BREASTMNIST)["val_images"][:1].astype(np.float32) / 255.0
    (classification,) = classify(Bundle.load(copy), [image])
    assert sum(classification.probabilities.values()) == pytest.approx(1.0, abs=1e-5)


def test_acquisition_shifts_change_what_they_say_and_keep_the_rest():
    """The card's shifted images: same shape and range; a flat image stays flat under blur and
    framing; gamma darkens mid-greys only; zooming in enlarges the middle, zooming out shrinks
    the image into the middle of the frame."""
    flat = torch.full((1, 1, 64, 64), 0.4)
    for shift in SHIFTS.values():
        assert shift(flat).shape == flat.shape
        assert torch.allclose(shift(flat), shift(flat).mean(), atol=1e-5)
    ramp = torch.linspace(0, 1, 64).repeat(64, 1)[None, None]
    assert gamma(1.5)(ramp)[..., 0, 32] < ramp[..., 0, 32] and gamma(1.5)(ramp).max() == 1.0
    square = torch.zeros(1, 1, 64, 64)
    square[..., 24:40, 24:40] = 1.0
    assert float(zoomed(0.5)(square).mean()) == pytest.approx(4 * float(square.mean()), rel=0.05)
    assert float(zoomed(2.0)(square).mean()) == pytest.approx(float(square.mean()) / 4, rel=0.05)
    assert zoomed(1.0)(square).equal(square)
    spread = blurred(0.05)(square)
    assert float(spread.sum()) == pytest.approx(float(square.sum()), rel=1e-3)
    assert spread.max() < 1.0


# Inputs outside the model's domain -------------------------------------------------------------

CT_SLICE = SHARED_DATA / "ct_chest_midrc_ricord_1a" / "1-050.dcm"
ADULT_CHESTS = sorted((SHARED_DATA / "cxr_dicom").glob("*.dcm"))
#: every 40th validation image (21 films, both classes): what the model was made for
VALIDATION_FILMS = [
    path for path, _ in cxr_split_files(KERMANY, DEFAULT_VAL_FRACTION, DEFAULT_SEED)[1][::40]
]


def chest_model() -> Bundle:
    return Bundle.load(BUILTIN_BUNDLES / "cxr_pneumonia")


def test_validation_films_are_assessed_and_their_transforms_are_not():
    """Children's frontal films from the validation patients get a finding; the same films
    inverted (MONOCHROME1 read as MONOCHROME2) or through a narrow window get none, and say why:
    the inverted ones by the network's features, the windowed-out ones by their tones (the
    network, trained on strong contrast changes, sees some of them as ordinary films)."""
    bundle = chest_model()
    films = [load_image2d(path) for path in VALIDATION_FILMS]
    plain = classify(bundle, films)
    assert sum(not r.assessed for r in plain) <= 1
    assert all(r.finding in {"normal", "pneumonia"} for r in plain if r.assessed)
    rng = np.random.default_rng(1)
    expected = {
        "inverted": (inverted, "image unlike the training images"),
        "windowed out": (
            lambda image: windowed_out(image, rng),
            "image nearly all black and white",
        ),
    }
    flagged_in_evaluation = bundle.metadata["input_domain"]["flagged_on_validation"]
    for name, (transform, reason) in expected.items():
        assert flagged_in_evaluation[name] == 1.0
        changed = [transform(torch.as_tensor(film)).numpy() for film in films]
        results = classify(bundle, changed)
        assert all(r.finding is None for r in results)
        assert all(any(c.startswith(reason) for c in r.concerns) for r in results)


@pytest.mark.parametrize(
    ("given", "years"),
    [
        ({"PatientAge": "081Y"}, 81),
        ({"PatientAge": "81"}, 81),
        ({"PatientAge": "018M"}, 1.5),
        ({"PatientBirthDate": "19400305", "StudyDate": "20040826"}, 64.5),
        ({"PatientAge": "", "StudyDate": "20040826"}, None),
    ],
)
def test_patient_age_from_the_header(given, years):
    ds = pydicom.Dataset()
    for keyword, value in given.items():
        setattr(ds, keyword, value)
    age = patient_age_years(ds)
    assert age == (None if years is None else pytest.approx(years, abs=0.1))


def test_adult_lateral_and_non_chest_inputs_are_not_assessed(tmp_path):
    """`dicom-node infer` on the two adult chest radiographs (flagged by their age), the child's
    film as a lateral view, a CT slice and a breast ultrasound image (flagged by their pixels):
    no finding, and the reason in the result."""
    lateral = pydicom.dcmread(ADULT_CHESTS[1])
    del lateral.PatientAge
    lateral.ViewPosition = "LL"
    lateral.save_as(tmp_path / "lateral.dcm")
    breast = np.load(BREASTMNIST)["test_images"][0]
    Image.fromarray(breast).save(tmp_path / "breast.png")
    inputs = [*ADULT_CHESTS, tmp_path / "lateral.dcm", CT_SLICE, tmp_path / "breast.png"]
    result = subprocess.run(
        [sys.executable, "-m", "dicom_node", "infer", "--json", "--model", "cxr_pneumonia"]
        + [str(path) for path in inputs],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["path"] for line in lines] == [str(path) for path in inputs]
    for line in lines:
        assert line["finding"] is None and line["out_of_domain"]
    adult_a, adult_b, side, ct, ultrasound = (line["out_of_domain"] for line in lines)
    for concerns in (adult_a, adult_b):
        assert "patient age outside the trained 0-17 years" in concerns
    assert "view position LL, not AP/PA" in side
    for concerns in (ct, ultrasound):
        assert any(c.startswith("image unlike the training images") for c in concerns)
    text = subprocess.run(
        [sys.executable, "-m", "dicom_node", "infer", str(ADULT_CHESTS[0])],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "not assessed, outside the model's domain: patient age outside" in text.stdout


# Colour and 16-bit inputs ----------------------------------------------------------------------


def secondary_capture(pixels: np.ndarray, photometric: str, bits: int = 8, **attributes):
    """A child's film as a DX Secondary Capture of the given encoding (pixels stored as given)."""
    ds = pydicom.Dataset()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.SOPClassUID = pydicom.uid.SecondaryCaptureImageStorage
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = (
        pydicom.uid.generate_uid(),
        pydicom.uid.generate_uid(),
    )
    ds.Modality, ds.PatientAge, ds.ViewPosition = "DX", "003Y", "AP"
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.SamplesPerPixel = 3 if pixels.ndim == 3 else 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8 if bits == 8 else 16, bits, bits - 1
    ds.PixelRepresentation = int(pixels.dtype.kind == "i")
    if pixels.ndim == 3:
        ds.PlanarConfiguration = attributes.pop("PlanarConfiguration", 0)
        if ds.PlanarConfiguration:
            pixels = pixels.transpose(2, 0, 1)
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    return ds


def test_colour_and_16_bit_films_give_the_jpegs_answer(tmp_path):
    """The same child's film stored as 16-bit, 12-bit, signed with a rescale, MONOCHROME1,
    RGB (interleaved and planar), YBR_FULL and PALETTE COLOR: `dicom-node infer` gives each the
    JPEG's probability and finding."""
    jpeg = VALIDATION_FILMS[0]
    grey = np.asarray(Image.open(jpeg).convert("L"))
    unit = grey / 255.0
    rgb = np.repeat(grey[..., None], 3, axis=2)
    ramp = (np.arange(256)[::-1] * 257).astype(np.uint16).tobytes()  # index i: grey 255 - i
    palette = {
        f"{c}PaletteColorLookupTable{part}": value
        for c in ("Red", "Green", "Blue")
        for part, value in (("Descriptor", [256, 0, 16]), ("Data", ramp))
    }
    variants = {
        "uint16": secondary_capture(np.round(unit * 65535).astype(np.uint16), "MONOCHROME2", 16),
        "12-bit": secondary_capture(np.round(unit * 4095).astype(np.uint16), "MONOCHROME2", 12),
        "signed": secondary_capture(
            np.round(unit * 3000 - 1000).astype(np.int16),
            "MONOCHROME2",
            16,
            RescaleSlope=2,
            RescaleIntercept=-24,
        ),
        "monochrome1": secondary_capture(
            np.round((1 - unit) * 65535).astype(np.uint16), "MONOCHROME1", 16
        ),
        "rgb": secondary_capture(rgb, "RGB"),
        "rgb-planar": secondary_capture(rgb, "RGB", PlanarConfiguration=1),
        "ybr-full": secondary_capture(
            pydicom.pixels.convert_color_space(rgb, "RGB", "YBR_FULL"), "YBR_FULL"
        ),
        "palette": secondary_capture(255 - grey, "PALETTE COLOR", **palette),
    }
    paths = []
    for name, ds in variants.items():
        paths.append(tmp_path / f"{name}.dcm")
        ds.save_as(paths[-1], enforce_file_format=True)
    result = subprocess.run(
        [sys.executable, "-m", "dicom_node", "infer", "--json", "--model", "cxr_pneumonia"]
        + [str(jpeg), *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    reference, *lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert reference["finding"] in {"normal", "pneumonia"}
    for path, line in zip(paths, lines, strict=True):
        assert line["path"] == str(path)
        assert line["finding"] == reference["finding"], path.name
        assert line["probabilities"]["pneumonia"] == pytest.approx(
            reference["probabilities"]["pneumonia"], abs=2e-3
        ), path.name


def test_breast_model_refuses_a_radiograph_by_its_modality():
    """The breast model's features do not tell a chest film from its training images; its
    header check on the modality does."""
    breast = Bundle.load(BUILTIN_BUNDLES / "breast_us")
    grey = np.asarray(Image.open(VALIDATION_FILMS[0]).convert("L"))
    film = secondary_capture(grey, "MONOCHROME2")
    (result,) = classify(breast, [display_pixels(film)], headers=[film])
    assert result.finding is None
    assert result.concerns == ["modality DX, not US"]
    film.Modality = "US"
    (result,) = classify(breast, [display_pixels(film)], headers=[film])
    assert result.assessed
