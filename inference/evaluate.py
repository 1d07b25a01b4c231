"""Evaluate a classifier bundle's committed weights on its validation patients: fit the
calibration, choose the operating threshold, write both into ``configs/metadata.json``, and write
the model card (``docs/``). Training ends with it; it runs alone, without retraining:

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

from inference.bundle import Bundle
from inference.calibration import Calibration
from inference.datasets import LOADERS, Split
from inference.model_card import ValidationReport, write_model_card

DEFAULT_SEED = 20261122
DEFAULT_VAL_FRACTION = 0.15


def network_logits(bundle: Bundle, images: torch.Tensor, batch: int = 64) -> np.ndarray:
    """The network's raw (N, C) outputs for pre-processed images, in float32 as the node runs
    it."""
    outputs = []
    with torch.no_grad():
        for start in range(0, len(images), batch):
            outputs.append(bundle.network(images[start : start + batch].float()))
    return torch.cat(outputs).numpy()


def evaluate(bundle_path: Path, split: Split, command: str) -> ValidationReport:
    """Calibrate and choose the threshold on ``split``'s validation part with the weights in
    ``bundle_path``, record them and the figures in the bundle, and write its model card."""
    bundle = Bundle.load(bundle_path)
    labels = split.val.labels.numpy()
    logits = network_logits(bundle, split.val.images)
    calibration = Calibration.fit(logits, labels)
    report = ValidationReport.from_logits(labels, logits, split.val.patients, calibration)
    metadata_path = bundle_path / "configs" / "metadata.json"
    metadata = json.loads(metadata_path.read_text())
    metadata["threshold"] = round(report.threshold, 4)
    metadata["calibration"] = calibration.as_metadata()
    metadata["validation"] = report.summary()
    metadata["evaluation"] = {"command": command}
    metadata_path.write_text(json.dumps(metadata, indent=4) + "\n")
    write_model_card(bundle_path, metadata, report)
    return report


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
        Path(args.data), bundle.preprocessing, args.val_fraction, args.seed, with_train=False
    )
    report = evaluate(Path(args.bundle), split, command_line("evaluate", args))
    print(json.dumps(report.summary(), indent=2))


if __name__ == "__main__":
    main()
