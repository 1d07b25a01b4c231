"""Bundles, pre-processing, routing and `dicom-node infer` on real files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
import yaml

from dicom_node.config import BUILTIN_BUNDLES, ConfigError, RouteConfig, parse_config
from dicom_node.jobs.routing import SeriesFacts, route
from inference.bundle import Bundle, BundleError, find_bundles
from inference.dicom_seg import explanation_map
from inference.image2d import (
    NotAnImage2D,
    display_pixels,
    image_transforms,
    jpeg2000_reduction,
    load_image2d,
    shrink,
    to_display,
)
from inference.run import classify

from .conftest import SHARED_DATA, TRANSFER_SYNTAXES

CXR_DICOM = SHARED_DATA / "cxr_dicom"
CR_MONOCHROME1 = CXR_DICOM / "nema_wg04_RG1_J2KI_cr_chest_pa.dcm"
KERMANY = SHARED_DATA / "chest_xray_kermany_224" / "train"
SMALL_CT = SHARED_DATA / "ct_totalsegmentator_example" / "dicom"


def dicom_node(*args: str, config: Path | None = None) -> subprocess.CompletedProcess:
    extra = ["--config", str(config)] if config else []
    return subprocess.run(
        [sys.executable, "-m", "dicom_node", args[0], *extra, *args[1:]],
        capture_output=True,
        text=True,
        timeout=300,
    )


def json_lines(result: subprocess.CompletedProcess) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines()]


# Pre-processing ------------------------------------------------------------------------------


def test_monochrome1_is_shown_inverted_like_monochrome2():
    """A MONOCHROME1 radiograph and the same pixels stored as MONOCHROME2 look the same."""
    ds = pydicom.dcmread(CR_MONOCHROME1)
    ds.decompress()
    as_stored = display_pixels(ds)
    inverted = ds.copy()
    inverted.PhotometricInterpretation = "MONOCHROME2"
    top = (1 << ds.BitsStored) - 1
    inverted.PixelData = (top - ds.pixel_array).astype(ds.pixel_array.dtype).tobytes()
    inverted.WindowCenter = top - float(ds.WindowCenter)
    transform = image_transforms(160)
    difference = np.abs(
        np.asarray(transform(as_stored)) - np.asarray(transform(display_pixels(inverted)))
    )
    assert difference.mean() < 0.01
    # In display space the lungs are darker than the mediastinum and the bones.
    image = np.asarray(transform(as_stored))[0]
    assert image[60:100, 25:55].mean() < image[60:100, 70:90].mean()


def test_jpeg2000_decoded_at_quarter_size_matches_a_full_decode_shrunk_by_four():
    """The CR's codestream decoded two resolution levels down gives the classifier what a full
    decode averaged over 4 x 4 blocks gives it. The two are not bit-equal: the level is the 9/7
    wavelet's low-pass band of a lossy codestream, a smoother filter than a block mean, and one row
    and column longer (OpenJPEG rounds sides up: 489 x 461, where Pillow's own reduce would make
    it 460 wide and refuse the tile). After the contrast stretch and the area resize to the
    network's 224 x 224 they differ by 0.7 % of the grey range on average and the pneumonia
    probability by about 0.001; 1 % and 0.01 leave room for other platforms' float rounding while
    still catching a wrong bit shift, scale or inversion."""
    ds = pydicom.dcmread(CR_MONOCHROME1)
    reduced = display_pixels(ds)
    assert reduced.shape == (1, 489, 461)  # a quarter of 1955 x 1841, rounded up
    reference = to_display(shrink(ds.pixel_array, 4), ds)
    transform = image_transforms(224)
    difference = np.abs(np.asarray(transform(reduced)) - np.asarray(transform(reference)))
    assert difference.mean() < 0.01
    bundle = find_bundles([BUILTIN_BUNDLES])["cxr_pneumonia"]
    (fast,), (full,) = classify(bundle, [reduced]), classify(bundle, [reference])
    assert fast.probabilities["pneumonia"] == pytest.approx(
        full.probabilities["pneumonia"], abs=0.01
    )


def test_jpeg2000_reduction_keeps_the_display_size():
    assert jpeg2000_reduction(1955, 1841) == 2  # 489 x 461; 1/8 would be under 448
    assert jpeg2000_reduction(3000, 2500) == 2  # 750 x 625
    assert jpeg2000_reduction(4096, 4096) == 3  # 512 x 512
    assert jpeg2000_reduction(900, 900) == 1  # 450 x 450
    assert jpeg2000_reduction(800, 900) == 0


def test_window_from_the_header_is_applied():
    ds = pydicom.dcmread(CR_MONOCHROME1)
    ds.WindowCenter, ds.WindowWidth = 1000, 200  # a narrow window saturates most pixels
    values = display_pixels(ds)
    assert np.isclose(values, values.min()).mean() + np.isclose(values, values.max()).mean() > 0.8


def test_colour_images_become_grey_whatever_their_colour_space():
    """The same picture stored as RGB and as YBR_FULL (JPEG) gives the same grey image."""
    rgb = display_pixels(pydicom.dcmread(TRANSFER_SYNTAXES / "SC_rgb_jpeg_gdcm.dcm"))
    ybr = display_pixels(pydicom.dcmread(TRANSFER_SYNTAXES / "SC_rgb_jpeg_dcmtk.dcm"))
    assert rgb.shape == ybr.shape == (1, 100, 100)
    assert np.abs(rgb - ybr).mean() < 2.0


def test_multiframe_is_refused():
    with pytest.raises(NotAnImage2D, match="multi-frame"):
        display_pixels(pydicom.dcmread(TRANSFER_SYNTAXES / "examples_ybr_color.dcm"))


def test_jpeg_and_dicom_end_in_the_same_range():
    jpeg = next(iter(sorted((KERMANY / "NORMAL").glob("*.jpeg"))))
    transform = image_transforms(160)
    for pixels in (load_image2d(jpeg), load_image2d(CR_MONOCHROME1)):
        image = np.asarray(transform(pixels))
        assert image.shape == (1, 160, 160)
        assert image.min() == pytest.approx(0.0) and image.max() == pytest.approx(1.0)


# Routing -------------------------------------------------------------------------------------


def facts(**overrides) -> SeriesFacts:
    values = dict(
        modality="CT",
        body_part="",
        sop_class="1.2.840.10008.5.1.4.1.1.2",
        image_type=("ORIGINAL", "PRIMARY", "AXIAL"),
        series_description="",
        study_description="",
        instances=200,
    )
    return SeriesFacts(**(values | overrides))


@pytest.mark.parametrize(
    "series, models",
    [
        (facts(body_part="CHEST"), ("ct_tissue",)),
        (facts(series_description="ROUTINE CHEST NON-CON"), ("ct_tissue",)),
        (facts(body_part="CHEST", instances=5), ()),  # a scout or a few slices: no volume
        (facts(body_part="HEAD"), ()),
        (
            facts(modality="DX", sop_class="1.2.840.10008.5.1.4.1.1.1.1", instances=1),
            ("cxr_pneumonia",),
        ),
        (facts(modality="CR", body_part="CHEST", instances=2), ("cxr_pneumonia",)),
        (facts(modality="CR", body_part="HAND", instances=1), ()),
        (
            facts(
                modality="OT", sop_class="1.2.840.10008.5.1.4.1.1.7", study_description="Chest PA"
            ),
            ("cxr_pneumonia",),
        ),
        (facts(modality="US", body_part="BREAST", instances=1), ("breast_us",)),
        (facts(modality="MR"), ()),
    ],
)
def test_default_routes(series, models):
    decision = route(parse_config({}).inference.routes, series)
    assert decision.models == models
    if not models:
        assert decision.reason.startswith("no routing rule matches (Modality=")


def test_route_conditions_combine_and_models_run_once():
    routes = [
        RouteConfig(name="a", models=["m1", "m2"], modality=["ct"], image_type=["ORIGINAL"]),
        RouteConfig(name="b", models=["m2"], description="(?i)lung", max_instances=300),
        RouteConfig(name="c", models=["m3"], image_type=["DERIVED"]),
    ]
    decision = route(routes, facts(series_description="Lung 1mm"))
    assert decision.models == ("m1", "m2") and decision.routes == ("a", "b")


def test_bad_route_regex_names_the_key():
    config = {"inference": {"routes": [{"name": "x", "models": ["m"], "description": "(["}]}}
    with pytest.raises(ConfigError, match=r"inference.routes.0.description"):
        parse_config(config)


# Bundles -------------------------------------------------------------------------------------


def zoo_style_bundle(folder: Path) -> Path:
    """A bundle as the MONAI Model Zoo writes them: a different network, dictionary transforms that
    load files, a checkpoint under "model"; plus the node's adapter file overriding the
    pre-processing. Random weights."""
    bundle = folder / "mr_sequence"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "models").mkdir()
    network_def = {
        "_target_": "DenseNet121",
        "spatial_dims": 2,
        "in_channels": 1,
        "out_channels": 3,
    }
    inference = {
        "imports": ["$import monai"],
        "network_def": network_def,
        "preprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "LoadImaged", "keys": "image"},
                {"_target_": "EnsureChannelFirstd", "keys": "image"},
                {"_target_": "ScaleIntensityd", "keys": "image"},
            ],
        },
        "postprocessing": {"_target_": "Activations", "softmax": True},
    }
    adapter = {
        "preprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "ScaleIntensity"},
                {"_target_": "Resize", "spatial_size": [64, 64]},
            ],
        }
    }
    metadata = {
        "version": "0.3.1",
        "task": "classification",
        "network_data_format": {
            "outputs": {"pred": {"channel_def": {"0": "t1", "1": "t2", "2": "flair"}}}
        },
    }
    (bundle / "configs" / "inference.json").write_text(json.dumps(inference))
    (bundle / "configs" / "node.json").write_text(json.dumps(adapter))
    (bundle / "configs" / "metadata.json").write_text(json.dumps(metadata))
    torch.manual_seed(0)
    from monai.networks.nets import DenseNet121

    network = DenseNet121(spatial_dims=2, in_channels=1, out_channels=3)
    torch.save({"model": network.state_dict()}, bundle / "models" / "model.pt")
    return bundle


def test_a_bundle_written_elsewhere_runs_with_an_adapter_file(tmp_path):
    zoo_style_bundle(tmp_path / "bundles")
    config = tmp_path / "node.yaml"
    settings = {
        "inference": {
            "bundles": [str(tmp_path / "bundles"), str(BUILTIN_BUNDLES)],
            "routes": [{"name": "mr", "models": ["mr_sequence"], "modality": ["MR"]}],
        }
    }
    config.write_text(yaml.safe_dump(settings))
    result = dicom_node("infer", "--json", str(TRANSFER_SYNTAXES / "MR_small.dcm"), config=config)
    assert result.returncode == 0, result.stderr
    (line,) = json_lines(result)
    assert line["model"] == "mr_sequence" and line["version"] == "0.3.1"
    assert set(line["probabilities"]) == {"t1", "t2", "flair"}
    assert sum(line["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)


def test_bundle_errors_name_the_folder(tmp_path):
    (tmp_path / "broken" / "configs").mkdir(parents=True)
    (tmp_path / "broken" / "configs" / "metadata.json").write_text("{}")
    with pytest.raises(BundleError, match=r"broken: configs/inference.json is missing"):
        find_bundles([tmp_path])
    bundle = zoo_style_bundle(tmp_path / "other")
    (bundle / "models" / "model.pt").unlink()
    with pytest.raises(BundleError, match="models/model.pt is missing"):
        Bundle.load(bundle).network  # noqa: B018


# The shipped chest X-ray classifier ----------------------------------------------------------


def test_infer_chest_radiographs_json():
    files = sorted(CXR_DICOM.glob("*.dcm"))
    jpeg = next(iter(sorted((KERMANY / "PNEUMONIA").glob("*.jpeg"))))
    result = dicom_node("infer", "--json", *map(str, files), str(jpeg))
    assert result.returncode == 0, result.stderr
    lines = json_lines(result)
    assert [line["path"] for line in lines] == [*map(str, files), str(jpeg)]
    for line in lines:
        assert line["model"] == "cxr_pneumonia"
        assert set(line["probabilities"]) == {"normal", "pneumonia"}
        assert sum(line["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    # the two DICOM radiographs are adults' (outside the model's domain), the JPEG a child's
    assert [line["finding"] is None for line in lines] == [True, True, False]
    assert lines[-1]["finding"] in {"normal", "pneumonia"}


def test_gradcam_map_lies_on_the_source_image():
    bundle = find_bundles([BUILTIN_BUNDLES])["cxr_pneumonia"]
    pixels = load_image2d(CR_MONOCHROME1)
    (result,) = classify(bundle, [pixels], explain=True)
    assert result.heatmap is not None and result.heatmap.shape == pixels.shape[1:]
    assert 0.0 <= result.heatmap.min() and result.heatmap.max() <= 1.0 + 1e-6
    # Computed on the half-size decode, the map is laid over the full 1955 x 1841 image.
    header = pydicom.dcmread(CR_MONOCHROME1, stop_before_pixels=True)
    assert explanation_map(result, header).shape == (1955, 1841)
    (plain,) = classify(bundle, [pixels])
    assert plain.probabilities == pytest.approx(result.probabilities, abs=1e-5)


def test_infer_series_folders_text_and_skips(tmp_path):
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for name in ("CT_small.dcm", "MR_small.dcm"):
        (mixed / name).write_bytes((TRANSFER_SYNTAXES / name).read_bytes())
    result = dicom_node(
        "infer",
        "--model",
        "ct_tissue",
        str(SMALL_CT),
        str(mixed),
        str(tmp_path / "missing"),
    )
    assert result.returncode == 1
    small_ct, two_series, missing = result.stdout.splitlines()
    assert small_ct.startswith(f"{SMALL_CT}: ct_tissue 1.0.0: lung ")
    assert "body" in small_ct
    assert two_series == f"{mixed}: error: {mixed} holds 2 series; give one folder per series"
    assert missing.endswith("error: no such file or folder: " + str(tmp_path / "missing"))
    skipped = dicom_node("infer", str(TRANSFER_SYNTAXES / "MR_small.dcm"))
    assert skipped.returncode == 0
    assert "skipped: no routing rule matches (Modality=MR" in skipped.stdout


def test_check_config_refuses_a_route_to_a_missing_bundle(tmp_path):
    config = tmp_path / "node.yaml"
    routes = [{"name": "ct", "models": ["ct_tissue", "lung_nodules"], "modality": ["CT"]}]
    config.write_text(yaml.safe_dump({"inference": {"routes": routes}}))
    result = dicom_node("check-config", str(config))
    assert result.returncode == 3
    assert "inference names models that no bundle folder holds: lung_nodules" in result.stderr
    shipped = dicom_node("check-config", "config/node.yaml")
    assert (
        "models: breast_us 1.0.0 (classification), ct_tissue 1.0.0 (segmentation)" in shipped.stdout
    )


def test_unknown_model_lists_the_bundles():
    result = dicom_node("infer", "--model", "nope", str(SMALL_CT))
    assert result.returncode == 3
    assert "unknown model 'nope'" in result.stderr and "cxr_pneumonia" in result.stderr


def test_check_config_refuses_a_routed_bundle_whose_results_lack_codes(tmp_path):
    bundle = tmp_path / "bundles" / "cxr_local"
    shutil.copytree(
        BUILTIN_BUNDLES / "cxr_pneumonia", bundle, ignore=shutil.ignore_patterns("*.pt")
    )
    metadata = json.loads((bundle / "configs" / "metadata.json").read_text())
    del metadata["finding_codes"]
    (bundle / "configs" / "metadata.json").write_text(json.dumps(metadata))
    config = tmp_path / "node.yaml"
    inference = {
        "bundles": [str(tmp_path / "bundles"), str(BUILTIN_BUNDLES)],
        "routes": [{"name": "cr", "models": ["cxr_local"], "modality": ["CR"]}],
    }
    config.write_text(yaml.safe_dump({"inference": inference}))
    result = dicom_node("check-config", str(config))
    assert result.returncode == 3
    assert "model cxr_local is routed, its results cannot be encoded" in result.stderr
    assert "metadata.json needs finding_codes.pneumonia as SCHEME:VALUE:MEANING" in result.stderr
