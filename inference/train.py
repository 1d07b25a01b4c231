"""Train a classifier bundle's weights from the shared data (fixed seed, patient-wise split).

    python -m inference.train cxr --data ../shared/data/chest_xray_kermany_224/train \
        --bundle config/bundles/cxr_pneumonia
    python -m inference.train breastmnist --data ../shared/data/breastmnist/breastmnist.npz \
        --bundle config/bundles/breast_us

The architecture and the deterministic pre-processing come from the bundle's
``configs/inference.json``
(one definition for training and inference); augmentation lives here. Writes ``models/model.pt``,
the operating threshold and validation figures into ``configs/metadata.json`` and the model card.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from monai.bundle import ConfigParser
from monai.transforms import (
    Compose,
    RandAdjustContrast,
    RandAffine,
    RandGaussianNoise,
    RandGaussianSmooth,
    RandScaleIntensity,
)
from monai.utils import set_determinism

from inference.image2d import image_file_pixels
from inference.model_card import ValidationReport, write_model_card

CXR_PATIENT = re.compile(r"^(person\d+|(?:NORMAL2-)?IM-\d+)")


@dataclass
class Split:
    """Pre-processed images (N, 1, S, S) float32 and integer labels, for training and validation."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor
    description: str


def cxr_patient(name: str) -> str:
    """The patient a Kermany file belongs to (``person12_...`` or ``IM-0115-...``)."""
    match = CXR_PATIENT.match(name)
    if not match:
        raise ValueError(f"cannot tell the patient of {name}")
    return match.group(1)


def load_cxr(data: Path, preprocess: Compose, val_fraction: float, seed: int) -> Split:
    """Kermany train folder, split by patient so no patient is on both sides."""
    files = [
        (path, label)
        for label, folder in enumerate(("NORMAL", "PNEUMONIA"))
        for path in sorted((data / folder).glob("*.jp*g"))
    ]
    patients = sorted({cxr_patient(path.name) for path, _ in files})
    random.Random(seed).shuffle(patients)
    held_out = set(patients[: round(len(patients) * val_fraction)])
    images = torch.stack(
        [torch.as_tensor(preprocess(image_file_pixels(path))) for path, _ in files]
    )
    labels = torch.tensor([label for _, label in files])
    is_val = torch.tensor([cxr_patient(path.name) in held_out for path, _ in files])
    return Split(
        images[~is_val],
        labels[~is_val],
        images[is_val],
        labels[is_val],
        f"{len(files)} images of {len(patients)} patients from `{data.name}`; "
        f"{len(held_out)} patients "
        f"({int(is_val.sum())} images) held out for validation by patient",
    )


def load_breastmnist(data: Path, preprocess: Compose, val_fraction: float, seed: int) -> Split:
    """BreastMNIST's own train/val split (one image per patient in the source data set); labels
    flipped so that 1 is the finding (malignant) and the threshold applies to it."""
    arrays = np.load(data)

    def images(key: str) -> torch.Tensor:
        return torch.stack(
            [
                torch.as_tensor(preprocess(image[None].astype(np.float32) / 255.0))
                for image in arrays[key]
            ]
        )

    return Split(
        images("train_images"),
        torch.as_tensor(1 - arrays["train_labels"][:, 0].astype(np.int64)),
        images("val_images"),
        torch.as_tensor(1 - arrays["val_labels"][:, 0].astype(np.int64)),
        f"BreastMNIST official split: {len(arrays['train_images'])} training, "
        f"{len(arrays['val_images'])} validation images",
    )


LOADERS = {"cxr": load_cxr, "breastmnist": load_breastmnist}


def augmentation(size: int) -> Compose:
    """Geometry and exposure changes seen across sites and devices; no flips (the heart is on the
    left)."""
    return Compose(
        [
            RandAffine(
                prob=0.9,
                rotate_range=0.17,
                scale_range=(0.15, 0.15),
                shear_range=(0.05, 0.05),
                translate_range=(0.08 * size, 0.08 * size),
                padding_mode="zeros",
            ),
            RandAdjustContrast(prob=0.5, gamma=(0.6, 1.6)),
            RandScaleIntensity(prob=0.3, factors=0.15),
            RandGaussianSmooth(prob=0.2, sigma_x=(0.3, 1.2), sigma_y=(0.3, 1.2)),
            RandGaussianNoise(prob=0.3, std=0.03),
        ]
    )


def predict(network: torch.nn.Module, images: torch.Tensor, batch: int = 128) -> np.ndarray:
    """Probability of class 1 for each image."""
    network.eval()
    out = []
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        for start in range(0, len(images), batch):
            chunk = images[start : start + batch].contiguous(memory_format=torch.channels_last)
            out.append(torch.softmax(network(chunk).float(), dim=1)[:, 1])
    return torch.cat(out).numpy()


def save_half_precision(network: torch.nn.Module, path: Path) -> None:
    """Weights as float16: half the size in the repository, same predictions (loads cast back)."""
    state = network.state_dict()
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, path)


def train(args: argparse.Namespace) -> None:
    """Fit, pick the threshold on validation, save weights, metadata and the model card."""
    torch.set_num_threads(args.threads)
    set_determinism(seed=args.seed)
    bundle = Path(args.bundle)
    parser = ConfigParser()
    parser.read_config(bundle / "configs" / "inference.json")
    preprocess = parser.get_parsed_content("preprocessing")
    size = int(parser.get_parsed_content("image_size"))
    started = time.monotonic()
    split = LOADERS[args.dataset](Path(args.data), preprocess, args.val_fraction, args.seed)
    print(split.description, flush=True)

    network = parser.get_parsed_content("network_def").to(memory_format=torch.channels_last)
    counts = torch.bincount(split.train_labels, minlength=2).float()
    loss_fn = torch.nn.CrossEntropyLoss(weight=counts.sum() / (2 * counts), label_smoothing=0.1)
    optimizer = torch.optim.AdamW(network.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    steps = (len(split.train_labels) + args.batch - 1) // args.batch
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=args.lr, total_steps=steps * args.epochs
    )
    augment = augmentation(size)
    generator = torch.Generator().manual_seed(args.seed)
    for epoch in range(args.epochs):
        network.train()
        order = torch.randperm(len(split.train_labels), generator=generator)
        total = 0.0
        for start in range(0, len(order), args.batch):
            index = order[start : start + args.batch]
            images = torch.stack(
                [torch.as_tensor(augment(image)) for image in split.train_images[index]]
            )
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = loss_fn(
                    network(images.contiguous(memory_format=torch.channels_last)).float(),
                    split.train_labels[index],
                )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(index)
        report = ValidationReport.from_predictions(
            split.val_labels.numpy(), predict(network, split.val_images)
        )
        print(
            f"epoch {epoch + 1}/{args.epochs} loss {total / len(order):.4f} "
            f"val AUC {report.auc:.4f} "
            f"({time.monotonic() - started:.0f} s)",
            flush=True,
        )

    (bundle / "models").mkdir(exist_ok=True)
    save_half_precision(network, bundle / "models" / "model.pt")
    metadata_path = bundle / "configs" / "metadata.json"
    metadata = json.loads(metadata_path.read_text())
    metadata["threshold"] = round(report.threshold, 4)
    metadata["validation"] = report.summary()
    metadata["training"] = {
        "command": (
            f"python -m inference.train {args.dataset} --data {args.data} --bundle {args.bundle} "
            f"--epochs {args.epochs}"
        ),
        "seed": args.seed,
        "epochs": args.epochs,
        "minutes": round((time.monotonic() - started) / 60, 1),
        "data": split.description,
    }
    metadata_path.write_text(json.dumps(metadata, indent=4) + "\n")
    write_model_card(bundle, metadata, report)
    print(json.dumps(metadata["validation"], indent=2))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m inference.train", description=__doc__.splitlines()[0]
    )
    parser.add_argument("dataset", choices=sorted(LOADERS))
    parser.add_argument("--data", required=True)
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--epochs", type=int, default=14)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--val-fraction", type=float, default=0.15)
    parser.add_argument("--seed", type=int, default=20261122)
    parser.add_argument("--threads", type=int, default=2)
    train(parser.parse_args(argv))


if __name__ == "__main__":
    main()
