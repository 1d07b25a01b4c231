"""The training data sets, split the one way training and evaluation both use (fixed seed, by
patient), so the validation half an evaluation reads is exactly the one training held out."""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from inference.image2d import image_file_pixels

CXR_PATIENT = re.compile(r"^(person\d+|(?:NORMAL2-)?IM-\d+)")

Preprocess = Callable[[np.ndarray], object]


@dataclass
class Part:
    """Pre-processed images (N, 1, S, S) float32, integer labels and the patient of each image
    (the unit a bootstrap resamples: images of one patient are not independent)."""

    images: torch.Tensor
    labels: torch.Tensor
    patients: list[str]


@dataclass
class Split:
    """The training and validation parts (training None when only validation was asked for)."""

    train: Part | None
    val: Part
    description: str


def cxr_patient(name: str) -> str:
    """The patient a Kermany file belongs to (``person12_...`` or ``IM-0115-...``)."""
    match = CXR_PATIENT.match(name)
    if not match:
        raise ValueError(f"cannot tell the patient of {name}")
    return match.group(1)


def preprocessed(preprocess: Preprocess, pixels: Iterable) -> torch.Tensor:
    """Display-space images through the bundle's deterministic pre-processing, stacked
    (N, 1, S, S) float32: the network's inputs, as the node would make them."""
    return torch.stack([torch.as_tensor(preprocess(p)) for p in pixels]).float()


def cxr_split_files(
    data: Path, val_fraction: float, seed: int
) -> tuple[list[tuple[Path, int]], list[tuple[Path, int]], int]:
    """(file, label) of the Kermany train folder's training and validation patients (shuffled
    patients, the first ``val_fraction`` held out), and the number of patients."""
    files = [
        (path, label)
        for label, folder in enumerate(("NORMAL", "PNEUMONIA"))
        for path in sorted((data / folder).glob("*.jp*g"))
    ]
    patients = sorted({cxr_patient(path.name) for path, _ in files})
    random.Random(seed).shuffle(patients)
    held_out = set(patients[: round(len(patients) * val_fraction)])
    val = [(p, label) for p, label in files if cxr_patient(p.name) in held_out]
    train = [(p, label) for p, label in files if cxr_patient(p.name) not in held_out]
    return train, val, len(patients)


def load_cxr(
    data: Path, preprocess: Preprocess, val_fraction: float, seed: int, with_train: bool = True
) -> Split:
    """Kermany train folder, split by patient so no patient is on both sides."""
    train, val, patients = cxr_split_files(data, val_fraction, seed)

    def part(chosen: list[tuple[Path, int]]) -> Part:
        return Part(
            preprocessed(preprocess, [image_file_pixels(p) for p, _ in chosen]),
            torch.tensor([label for _, label in chosen]),
            [cxr_patient(p.name) for p, _ in chosen],
        )

    held_out = len({cxr_patient(p.name) for p, _ in val})
    return Split(
        part(train) if with_train else None,
        part(val),
        f"{len(train) + len(val)} images of {patients} patients from `{data.name}`; "
        f"{held_out} patients ({len(val)} images) held out for validation by patient",
    )


def load_breastmnist(
    data: Path, preprocess: Preprocess, val_fraction: float, seed: int, with_train: bool = True
) -> Split:
    """BreastMNIST's own train/val split (one image per patient in the source data set); labels
    flipped so that 1 is the finding (malignant) and the threshold applies to it."""
    arrays = np.load(data)

    def part(key: str) -> Part:
        images = [image[None].astype(np.float32) / 255.0 for image in arrays[f"{key}_images"]]
        labels = torch.as_tensor(1 - arrays[f"{key}_labels"][:, 0].astype(np.int64))
        patients = [f"{key}{i}" for i in range(len(labels))]
        return Part(preprocessed(preprocess, images), labels, patients)

    return Split(
        part("train") if with_train else None,
        part("val"),
        f"BreastMNIST official split: {len(arrays['train_images'])} training, "
        f"{len(arrays['val_images'])} validation images",
    )


LOADERS = {"cxr": load_cxr, "breastmnist": load_breastmnist}
