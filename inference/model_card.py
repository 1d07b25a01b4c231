"""Validation figures of a binary classifier and the bundle's model card (``docs/README.md``, ROC
plot)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from monai.metrics import compute_roc_auc
from PIL import Image, ImageDraw

CALIBRATION_BINS = 10


@dataclass
class ValidationReport:
    """What a hospital asks of a classifier before trusting it, computed on held-out data."""

    labels: np.ndarray
    probabilities: np.ndarray
    auc: float
    threshold: float

    @classmethod
    def from_predictions(cls, labels: np.ndarray, probabilities: np.ndarray) -> ValidationReport:
        """AUC, and the threshold in the middle of those that maximise Youden's J (sensitivity +
        specificity)."""
        auc = float(compute_roc_auc(torch.as_tensor(probabilities), torch.as_tensor(labels)))
        grid = np.round(np.arange(0.02, 0.99, 0.01), 2)
        youden = np.array(
            [
                _sensitivity(labels, probabilities >= t) + _specificity(labels, probabilities >= t)
                for t in grid
            ]
        )
        best = grid[youden >= youden.max() - 0.005]
        return cls(labels, probabilities, auc, float(np.median(best)))

    @property
    def predicted(self) -> np.ndarray:
        return self.probabilities >= self.threshold

    def confusion(self) -> dict[str, int]:
        positive, predicted = self.labels == 1, self.predicted
        return {
            "true_positive": int((positive & predicted).sum()),
            "false_negative": int((positive & ~predicted).sum()),
            "true_negative": int((~positive & ~predicted).sum()),
            "false_positive": int((~positive & predicted).sum()),
        }

    def calibration(self) -> list[tuple[float, float, int]]:
        """(mean predicted probability, observed positive fraction, count) per decile."""
        bins = np.minimum((self.probabilities * CALIBRATION_BINS).astype(int), CALIBRATION_BINS - 1)
        return [
            (
                float(self.probabilities[bins == b].mean()),
                float(self.labels[bins == b].mean()),
                int((bins == b).sum()),
            )
            for b in range(CALIBRATION_BINS)
            if (bins == b).any()
        ]

    def expected_calibration_error(self) -> float:
        return sum(abs(p - o) * n for p, o, n in self.calibration()) / len(self.labels)

    def summary(self) -> dict[str, float | int | dict[str, int]]:
        return {
            "images": len(self.labels),
            "auc": round(self.auc, 4),
            "threshold": round(self.threshold, 4),
            "accuracy": round(float((self.predicted == (self.labels == 1)).mean()), 4),
            "sensitivity": round(_sensitivity(self.labels, self.predicted), 4),
            "specificity": round(_specificity(self.labels, self.predicted), 4),
            "expected_calibration_error": round(self.expected_calibration_error(), 4),
            "confusion": self.confusion(),
        }

    def roc_points(self) -> list[tuple[float, float]]:
        """(false positive rate, true positive rate) at every distinct threshold."""
        thresholds = np.unique(self.probabilities)[::-1]
        return [(0.0, 0.0)] + [
            (
                1 - _specificity(self.labels, self.probabilities >= t),
                _sensitivity(self.labels, self.probabilities >= t),
            )
            for t in thresholds
        ]


def _sensitivity(labels: np.ndarray, predicted: np.ndarray) -> float:
    return float(predicted[labels == 1].mean())


def _specificity(labels: np.ndarray, predicted: np.ndarray) -> float:
    return float((~predicted[labels == 0]).mean())


def draw_roc(points: list[tuple[float, float]], auc: float, path: Path, size: int = 400) -> None:
    """A plain ROC plot, drawn with Pillow to keep plotting libraries out of the dependencies."""
    margin = 40
    image = Image.new("RGB", (size + 2 * margin, size + 2 * margin), "white")
    draw = ImageDraw.Draw(image)

    def xy(fpr: float, tpr: float) -> tuple[float, float]:
        return margin + fpr * size, margin + (1 - tpr) * size

    draw.rectangle([xy(0, 1), xy(1, 0)], outline="black")
    draw.line([xy(0, 0), xy(1, 1)], fill="grey")
    draw.line([xy(*p) for p in points], fill="navy", width=2)
    draw.text((margin, 10), f"ROC, validation AUC {auc:.4f}", fill="black")
    draw.text((margin + size // 2 - 60, size + margin + 12), "1 - specificity", fill="black")
    draw.text((4, margin + size // 2), "sens.", fill="black")
    image.save(path)


def write_model_card(bundle: Path, metadata: dict, report: ValidationReport) -> None:
    """``docs/README.md`` from the bundle's metadata (description, intended use, limitations) and
    the figures."""
    docs = bundle / "docs"
    docs.mkdir(exist_ok=True)
    draw_roc(report.roc_points(), report.auc, docs / "roc.png")
    summary, training = report.summary(), metadata["training"]
    channels = metadata["network_data_format"]["outputs"]["pred"]["channel_def"]
    negative, positive = channels["0"], channels["1"]
    confusion = summary["confusion"]
    calibration = "\n".join(f"| {p:.2f} | {o:.2f} | {n} |" for p, o, n in report.calibration())
    (docs / "README.md").write_text(
        f"""# {metadata["name"]} (version {metadata["version"]})

{metadata["description"]}

## Intended use
{metadata["intended_use"]}

## Limitations
{metadata["limitations"]}

## Data and training
- Data: {training["data"]}. {metadata["data_source"]}
- Network: see `configs/inference.json`; pre-processing: the same deterministic transforms for
  training and inference (robust contrast stretch, resize); augmentation during training only
  (affine, gamma, intensity scale, blur, noise).
- Reproduce: `{training["command"]}` (seed {training["seed"]}, {training["epochs"]} epochs,
  {training["minutes"]} minutes on the 2-core CPU it was trained on).

## Validation (held out, {summary["images"]} images)
- AUC {summary["auc"]}; at the operating threshold p({positive}) >= {summary["threshold"]}
  (the middle of the thresholds that maximise sensitivity + specificity on validation):
  accuracy {summary["accuracy"]}, sensitivity {summary["sensitivity"]}, specificity
  {summary["specificity"]}.
- Confusion matrix:

| | predicted {positive} | predicted {negative} |
|---|---|---|
| {positive} | {confusion["true_positive"]} | {confusion["false_negative"]} |
| {negative} | {confusion["false_positive"]} | {confusion["true_negative"]} |

- ROC: `roc.png`. Calibration (expected calibration error {summary["expected_calibration_error"]}):

| mean predicted p({positive}) | observed fraction {positive} | images |
|---|---|---|
{calibration}

Reading these figures: the validation patients come from the same hospital, period and
preparation as the training patients, so they flatter the model; on other data (the official
test split, adults, other sites) expect lower specificity. Training uses label smoothing (0.1),
which keeps probabilities away from 0 and 1: the model is under-confident by design, which the
calibration table shows as observed fractions above the predicted probabilities in the middle.
"""
    )
