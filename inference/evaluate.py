"""Evaluate a classifier bundle's committed weights on its validation patients: fit the
calibration, choose the operating threshold, fit the input-domain check (its statistics on the
training images, its threshold on the validation images), write them into
``configs/metadata.json`` and ``models/``, and write the model card (``docs/``). Training ends
with it; it runs alone, without retraining:

    python -m inference.evaluate cxr --data ../shared/data/chest_xray_kermany_224/train \
        --bundle config/bundles/cxr_pneumonia
    python -m inference.evaluate breastmnist --data ../shared/data/breastmnist/breastmnist.npz \
        --bundle config/bundles/breast_us

The validation split is the one training held out (same loader, fraction and seed); no test data
is read.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from inference.acquisition_shifts import SHIFTS
from inference.bundle import Bundle
from inference.calibration import Calibration
from inference.datasets import LOADERS, Split, preprocessed
from inference.input_domain import (
    FEATURE_COMPONENTS,
    FEATURE_PERCENTILE,
    FEATURE_STATISTICS,
    MID_TONES,
    TONE_PERCENTILE,
    FeatureStatistics,
    feature_hook,
    mid_tone_share,
)
from inference.model_card import ValidationReport, write_model_card

DEFAULT_SEED = 20261122
DEFAULT_VAL_FRACTION = 0.15


def network_outputs(
    bundle: Bundle, images: torch.Tensor, layer: str | None = None, batch: int = 64
) -> tuple[np.ndarray, np.ndarray | None]:
    """The network's raw (N, C) outputs for pre-processed images, in float32 as the node runs
    it, and the (N, D) features at ``layer`` if one is named."""
    outputs: list[torch.Tensor] = []
    features: list[torch.Tensor] = []
    network = bundle.network
    hook = feature_hook(network, layer, features) if layer else None
    try:
        with torch.no_grad():
            for start in range(0, len(images), batch):
                outputs.append(network(images[start : start + batch].float().to(bundle.device)))
    finally:
        if hook is not None:
            hook.remove()
    return torch.cat(outputs).cpu().numpy(), torch.cat(features).cpu().numpy() if features else None


def inverted(image: torch.Tensor) -> torch.Tensor:
    """The image with black and white swapped (a MONOCHROME1 image read as MONOCHROME2)."""
    return 1.0 - image


def windowed_out(image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """The image through a narrow window at a random grey level: mostly black and white."""
    centre = float(np.quantile(image.numpy(), rng.uniform(0.1, 0.9)))
    width = rng.uniform(0.01, 0.05)
    return ((image - centre) / width + 0.5).clamp(0.0, 1.0)


def fit_input_domain(bundle: Bundle, split: Split, val_features: np.ndarray) -> dict[str, object]:
    """Fit the input checks: the feature statistics on the training images' features, the
    feature and tone thresholds on the validation images; measure how often either check flags
    the validation images and synthetic out-of-domain versions of them (inverted, windowed
    out); saves the statistics, returns the metadata to record."""
    domain = bundle.input_domain
    assert domain is not None and domain.feature_layer and split.train is not None
    _, train_features = network_outputs(bundle, split.train.images, domain.feature_layer)
    assert train_features is not None
    statistics = FeatureStatistics.fit(train_features)
    statistics.save(bundle.path / FEATURE_STATISTICS)
    val_distances = statistics.distance(val_features)
    val_tones = mid_tone_share(split.val.images)
    threshold = float(np.percentile(val_distances, FEATURE_PERCENTILE))
    min_tones = float(np.percentile(val_tones, TONE_PERCENTILE))

    def flagged(distances: np.ndarray, tones: np.ndarray) -> float:
        return round(float(((distances > threshold) | (tones < min_tones)).mean()), 4)

    rates = {"validation images": flagged(val_distances, val_tones)}
    rng = np.random.default_rng(DEFAULT_SEED)
    transforms = {
        "inverted": inverted,
        "windowed out": lambda image: windowed_out(image, rng),
    }
    for name, transform in transforms.items():
        images = preprocessed(bundle.preprocessing, (transform(i) for i in split.val.images))
        _, features = network_outputs(bundle, images, domain.feature_layer)
        assert features is not None
        rates[name] = flagged(statistics.distance(features), mid_tone_share(images))
    low, high = MID_TONES
    return {
        "feature_threshold": round(threshold, 3),
        "feature_threshold_rule": f"{FEATURE_PERCENTILE}th percentile of the validation images' "
        f"distances from the first {FEATURE_COMPONENTS} principal components of the training "
        "images' features",
        "min_mid_tone_share": round(min_tones, 3),
        "min_mid_tone_share_rule": f"{TONE_PERCENTILE}th percentile of the validation images' "
        f"share of pre-processed pixels strictly between {low} and {high}",
        "flagged_on_validation": rates,
    }


def evaluate(
    bundle_path: Path, split: Split, command: str, device: str = "cpu"
) -> ValidationReport:
    """Calibrate and choose the threshold on ``split``'s validation part with the weights in
    ``bundle_path`` (run on ``device``), record them and the figures in the bundle, and write
    its model card."""
    bundle = Bundle.load(bundle_path)
    bundle.device = device
    labels = split.val.labels.numpy()
    layer = feature_layer(bundle)
    logits, features = network_outputs(bundle, split.val.images, layer)
    calibration = Calibration.fit(logits, labels)
    report = ValidationReport.from_logits(labels, logits, split.val.patients, calibration)
    metadata_path = bundle_path / "configs" / "metadata.json"
    metadata = json.loads(metadata_path.read_text())
    if features is not None:
        metadata["input_domain"] |= fit_input_domain(bundle, split, features)
    metadata["threshold"] = round(report.threshold, 4)
    metadata["calibration"] = calibration.as_metadata()
    metadata["validation"] = report.summary()
    metadata["validation_shifts"] = {
        # shifted, then pre-processed as such an image would be by the node
        name: report.under_shift(
            network_outputs(bundle, preprocessed(bundle.preprocessing, shift(split.val.images)))[0]
        )
        for name, shift in SHIFTS.items()
    }
    metadata["evaluation"] = {"command": command}
    metadata_path.write_text(json.dumps(metadata, indent=4) + "\n")
    write_model_card(bundle_path, metadata, report)
    return report


def feature_layer(bundle: Bundle) -> str | None:
    """The layer whose features the bundle's input-domain check compares, if it has one."""
    return bundle.input_domain.feature_layer if bundle.input_domain is not None else None


def command_line(tool: str, args: argparse.Namespace, *extra: str) -> str:
    """The command that reproduces a run, as the model card quotes it."""
    return " ".join(
        [f"python -m inference.{tool} {args.dataset} --data {args.data} --bundle {args.bundle}"]
        + list(extra)
    )


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments that fix the data and its split (shared with training)."""
    parser.add_argument("dataset", choices=sorted(LOADERS))
    parser.add_argument("--data", required=True)
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--val-fraction", type=float, default=DEFAULT_VAL_FRACTION)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--threads", type=int, default=2)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m inference.evaluate", description=__doc__.splitlines()[0]
    )
    add_data_arguments(parser)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    bundle = Bundle.load(Path(args.bundle))
    split = LOADERS[args.dataset](
        Path(args.data),
        bundle.preprocessing,
        args.val_fraction,
        args.seed,
        with_train=feature_layer(bundle) is not None,
    )
    report = evaluate(Path(args.bundle), split, command_line("evaluate", args))
    print(json.dumps(report.summary(), indent=2))


if __name__ == "__main__":
    main()
