"""Train a classifier bundle's weights from the shared data (fixed seed, patient-wise split).

    python -m inference.train cxr --data ../shared/data/chest_xray_kermany_224/train \
        --bundle config/bundles/cxr_pneumonia
    python -m inference.train breastmnist --data ../shared/data/breastmnist/breastmnist.npz \
        --bundle config/bundles/breast_us

The architecture and the deterministic pre-processing come from the bundle's
``configs/inference.json``
(one definition for training and inference); augmentation lives here. Writes ``models/model.pt``
and the training record into ``configs/metadata.json``, then evaluates the saved weights on the
validation patients (:mod:`inference.evaluate`: calibration, threshold, model card).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from monai.bundle import ConfigParser
from monai.data import DataLoader
from monai.transforms import (
    Compose,
    RandAdjustContrast,
    RandAffine,
    RandBiasField,
    RandCoarseDropout,
    RandGaussianNoise,
    RandGaussianSharpen,
    RandGaussianSmooth,
    RandHistogramShift,
    RandScaleIntensity,
    ThresholdIntensity,
)
from monai.utils import set_determinism

from inference.datasets import LOADERS, Part
from inference.device import choose_device, device_label
from inference.evaluate import add_data_arguments, command_line, evaluate
from inference.model_card import roc_auc


def augmentation(size: int) -> Compose:
    """Geometry, exposure and processing changes seen across sites and devices, strong enough
    that one hospital's look is not what the network learns: framing (zoom by up to 30 %), tone
    curves (gamma, a nonlinear histogram shift), uneven exposure (a smooth bias field),
    sharpening or blur (sigma up to 2 % of the side), noise, and patches hidden so no single
    region decides. The network trained with milder ones (zoom 15 %, blur 0.5 %) called most
    validation normals pneumonia once they were blurred by 2 % or zoomed by a third. No flips
    (the heart is on the left)."""
    return Compose(
        [
            RandAffine(
                prob=0.9,
                rotate_range=0.17,
                scale_range=(0.3, 0.3),
                shear_range=(0.05, 0.05),
                translate_range=(0.08 * size, 0.08 * size),
                padding_mode="zeros",
            ),
            RandAdjustContrast(prob=0.6, gamma=(0.5, 2.0)),
            RandHistogramShift(prob=0.3, num_control_points=(5, 10)),
            RandBiasField(prob=0.3, coeff_range=(0.0, 0.3)),
            RandScaleIntensity(prob=0.3, factors=0.15),
            RandGaussianSmooth(prob=0.3, sigma_x=(0.3, 0.022 * size), sigma_y=(0.3, 0.022 * size)),
            RandGaussianSharpen(prob=0.15),
            RandGaussianNoise(prob=0.3, std=0.03),
            RandCoarseDropout(
                holes=1, max_holes=4, spatial_size=size // 10, max_spatial_size=size // 5, prob=0.3
            ),
            # back to the 0..1 range the deterministic pre-processing always gives
            ThresholdIntensity(threshold=1.0, above=False, cval=1.0),
            ThresholdIntensity(threshold=0.0, above=True, cval=0.0),
        ]
    )


class AugmentedPart(torch.utils.data.Dataset):
    """A training part's images, each augmented afresh whenever it is read. MONAI's DataLoader
    seeds ``transform`` in each loader worker, so augmenting in parallel (``--workers``: what
    keeps a GPU fed) stays reproducible for a given number of workers."""

    def __init__(self, part: Part, transform: Compose) -> None:
        self.part, self.transform = part, transform

    def __len__(self) -> int:
        return len(self.part.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.as_tensor(self.transform(self.part.images[index])), self.part.labels[index]


def predict(network: torch.nn.Module, images: torch.Tensor, batch: int = 128) -> np.ndarray:
    """Probability of class 1 for each image."""
    network.eval()
    device = next(network.parameters()).device
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch):
            chunk = images[start : start + batch].to(device, memory_format=torch.channels_last)
            out.append(torch.softmax(network(chunk), dim=1)[:, 1].cpu())
    return torch.cat(out).numpy()


def save_half_precision(network: torch.nn.Module, path: Path) -> None:
    """Weights as float16: half the size in the repository, same predictions (loads cast back)."""
    state = network.state_dict()
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, path)


def train(args: argparse.Namespace) -> None:
    """Fit, save the weights and the training record, then evaluate them on validation."""
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

    device = choose_device(args.device)
    network = parser.get_parsed_content("network_def").to(device, memory_format=torch.channels_last)
    assert split.train is not None
    counts = torch.bincount(split.train.labels, minlength=2).float()
    loss_fn = torch.nn.CrossEntropyLoss(
        weight=(counts.sum() / (2 * counts)).to(device), label_smoothing=0.1
    )
    optimizer = torch.optim.AdamW(network.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    loader = DataLoader(
        AugmentedPart(split.train, augmentation(size)),
        batch_size=args.batch,
        shuffle=True,
        generator=torch.Generator().manual_seed(args.seed),
        num_workers=args.workers,
        persistent_workers=args.workers > 0,
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=args.lr, total_steps=len(loader) * args.epochs
    )
    # An exponential moving average of the weights (BatchNorm statistics too), often a flatter
    # optimum than the last step's at no cost when the model runs; for the chest model (26
    # epochs, decay 0.998) it held up no better on the shifted validation images.
    averaged = (
        torch.optim.swa_utils.AveragedModel(
            network,
            multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(args.ema),
            use_buffers=True,
        )
        if args.ema
        else None
    )
    for epoch in range(args.epochs):
        network.train()
        total = 0.0
        for images, labels in loader:
            labels = labels.to(device)
            loss = loss_fn(network(images.to(device, memory_format=torch.channels_last)), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            if averaged is not None:
                averaged.update_parameters(network)
            total += loss.item() * len(labels)
        auc = roc_auc(split.val.labels.numpy(), predict(network, split.val.images))
        print(
            f"epoch {epoch + 1}/{args.epochs} loss {total / len(split.train.labels):.4f} "
            f"val AUC {auc:.4f} ({time.monotonic() - started:.0f} s)",
            flush=True,
        )
    if averaged is not None:
        network = averaged.module

    (bundle / "models").mkdir(exist_ok=True)
    save_half_precision(network.cpu(), bundle / "models" / "model.pt")
    metadata_path = bundle / "configs" / "metadata.json"
    metadata = json.loads(metadata_path.read_text())
    metadata["training"] = {
        "command": command_line("train", args, *training_options(args)),
        "seed": args.seed,
        "epochs": args.epochs,
        "device": device_label(device),
        "minutes": round((time.monotonic() - started) / 60, 1),
        "data": split.description,
    }
    metadata_path.write_text(json.dumps(metadata, indent=4) + "\n")
    report = evaluate(bundle, split, command_line("evaluate", args), device)
    print(json.dumps(report.summary(), indent=2))


def training_options(args: argparse.Namespace) -> list[str]:
    """The options that shape the weights, as the recorded command repeats them (the device and
    the number of loader workers change only the speed and the random streams)."""
    options = [f"--epochs {args.epochs}"]
    if args.ema:
        options.append(f"--ema {args.ema}")
    return options


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m inference.train", description=__doc__.splitlines()[0]
    )
    add_data_arguments(parser)
    parser.add_argument("--epochs", type=int, default=14)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument(
        "--ema", type=float, default=0.0, help="decay of the weights' moving average (0: none)"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument(
        "--workers", type=int, default=0, help="processes that augment the training images"
    )
    train(parser.parse_args(argv))


if __name__ == "__main__":
    main()
