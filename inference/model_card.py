"""Validation figures of a binary classifier (calibrated), with bootstrap confidence intervals, and
the bundle's model card (``docs/README.md`` and its figures), written for a clinician."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from inference.calibration import Calibration, expected_calibration_error, reliability
from inference.card_figures import draw_confusion, draw_reliability, draw_roc

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 20261130


@dataclass
class ValidationReport:
    """What a hospital asks of a classifier before trusting it, computed on held-out data: the
    network's (N, 2) ``logits`` for images of known ``labels`` (1 = the finding), the patient of
    each image, and the calibration fitted on them."""

    labels: np.ndarray
    logits: np.ndarray
    patients: list[str]
    calibration: Calibration
    threshold: float

    @classmethod
    def from_logits(
        cls, labels: np.ndarray, logits: np.ndarray, patients: list[str], calibration: Calibration
    ) -> ValidationReport:
        """The report at the threshold in the middle of those that maximise Youden's J
        (sensitivity + specificity) on the calibrated probabilities."""
        probabilities = calibration.positive_probability(logits)
        grid = np.round(np.arange(0.02, 0.99, 0.01), 2)
        youden = np.array(
            [
                _sensitivity(labels, probabilities >= t) + _specificity(labels, probabilities >= t)
                for t in grid
            ]
        )
        best = grid[youden >= youden.max() - 0.005]
        return cls(labels, logits, patients, calibration, float(np.median(best)))

    @cached_property
    def probabilities(self) -> np.ndarray:
        """Calibrated probabilities of the finding."""
        return self.calibration.positive_probability(self.logits)

    @cached_property
    def uncalibrated(self) -> np.ndarray:
        return Calibration().positive_probability(self.logits)

    @property
    def predicted(self) -> np.ndarray:
        return self.probabilities >= self.threshold

    @property
    def auc(self) -> float:
        return roc_auc(self.labels, self.probabilities)

    def confusion(self) -> dict[str, int]:
        positive, predicted = self.labels == 1, self.predicted
        return {
            "true_positive": int((positive & predicted).sum()),
            "false_negative": int((positive & ~predicted).sum()),
            "true_negative": int((~positive & ~predicted).sum()),
            "false_positive": int((~positive & predicted).sum()),
        }

    def point_estimates(self, rows: np.ndarray | None = None) -> dict[str, float]:
        """AUC, accuracy, sensitivity and specificity at the threshold, of ``rows`` (all images
        when None)."""
        labels, probabilities = self.labels, self.probabilities
        if rows is not None:
            labels, probabilities = labels[rows], probabilities[rows]
        return self._figures(labels, probabilities)

    def under_shift(self, logits: np.ndarray) -> dict[str, float]:
        """The same figures, threshold and calibration for the network's ``logits`` of the same
        images changed (:mod:`inference.acquisition_shifts`), rounded as the metadata keeps them."""
        figures = self._figures(self.labels, self.calibration.positive_probability(logits))
        return {name: round(value, 4) for name, value in figures.items()}

    def _figures(self, labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
        predicted = probabilities >= self.threshold
        return {
            "auc": roc_auc(labels, probabilities),
            "accuracy": float((predicted == (labels == 1)).mean()),
            "sensitivity": _sensitivity(labels, predicted),
            "specificity": _specificity(labels, predicted),
        }

    @cached_property
    def confidence_intervals(self) -> dict[str, tuple[float, float]]:
        """95 % percentile bootstrap intervals, resampling patients (a patient's images are not
        independent) with a fixed seed; the threshold stays fixed."""
        patients = np.array(self.patients)
        unique, inverse = np.unique(patients, return_inverse=True)
        members = [np.flatnonzero(inverse == i) for i in range(len(unique))]
        rng = np.random.default_rng(BOOTSTRAP_SEED)
        samples: dict[str, list[float]] = {}
        for _ in range(BOOTSTRAP_RESAMPLES):
            chosen = rng.integers(0, len(unique), len(unique))
            rows = np.concatenate([members[i] for i in chosen])
            if len(set(self.labels[rows].tolist())) < 2:
                continue
            for name, value in self.point_estimates(rows).items():
                samples.setdefault(name, []).append(value)
        return {
            name: (float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5)))
            for name, values in samples.items()
        }

    def cross_fitted_calibration_error(self) -> float:
        """The calibration error measured on images it was not fitted on: the patients split in
        two halves (fixed seed), fitted on each half and measured on the other, averaged."""
        patients = np.array(self.patients)
        unique = np.unique(patients)
        half = set(np.random.default_rng(BOOTSTRAP_SEED).permutation(unique)[: len(unique) // 2])
        first = np.array([p in half for p in patients])
        errors = []
        for fit_rows, measure_rows in ((first, ~first), (~first, first)):
            fitted = Calibration.fit(self.logits[fit_rows], self.labels[fit_rows])
            probabilities = fitted.positive_probability(self.logits[measure_rows])
            errors.append(expected_calibration_error(self.labels[measure_rows], probabilities))
        return float(np.mean(errors))

    def summary(self) -> dict[str, object]:
        """The figures ``metadata.json`` keeps (rounded), calibrated unless said otherwise."""
        figures: dict[str, object] = {"images": len(self.labels)}
        for name, value in self.point_estimates().items():
            low, high = self.confidence_intervals[name]
            figures[name] = round(value, 4)
            figures[f"{name}_95ci"] = [round(low, 4), round(high, 4)]
        figures |= {
            "threshold": round(self.threshold, 4),
            "expected_calibration_error": round(
                expected_calibration_error(self.labels, self.probabilities), 4
            ),
            "expected_calibration_error_cross_fitted": round(
                self.cross_fitted_calibration_error(), 4
            ),
            "expected_calibration_error_uncalibrated": round(
                expected_calibration_error(self.labels, self.uncalibrated), 4
            ),
            "confusion": self.confusion(),
        }
        return figures

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


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve as the Mann-Whitney statistic (ties count half)."""
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # average ranks of tied scores
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    average = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(average, counts)
    positives = labels == 1
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _interval(summary: dict, name: str) -> str:
    low, high = summary[f"{name}_95ci"]
    return f"{summary[name]:.3f} (95% CI {low:.3f}-{high:.3f})"


def _domain_text(domain: dict) -> str:
    """The card's section on inputs outside the model's domain."""
    if not domain:
        return "The node does not check this model's inputs for being within its domain."
    text = (
        "Before answering, the node checks that an input looks like what the model was trained "
        f"on: {domain['description']} An input that fails a check is reported as *not assessed* "
        "(no finding; the SR's presence is Indeterminate, with the reason) instead of a "
        "confident answer."
    )
    flagged = domain.get("flagged_on_validation")
    if flagged:
        rates = ", ".join(f"{name} {share:.1%}" for name, share in flagged.items())
        text += (
            f"\n\nFeature check: distance > {domain['feature_threshold']} "
            f"({domain['feature_threshold_rule']})."
        )
        if "min_mid_tone_share" in domain:
            text += (
                f" Tone check: mid-tones < {domain['min_mid_tone_share']:.1%} of the pixels "
                f"({domain['min_mid_tone_share_rule']})."
            )
        text += f" Flagged by either on validation: {rates}."
    return text


def _shifts_text(shifts: dict[str, dict[str, float]], summary: dict) -> str:
    """The card's table of figures on the validation images changed as another site might."""
    if not shifts:
        return ""
    rows = "\n".join(
        f"| {name} | {f['sensitivity']:.3f} | {f['specificity']:.3f} | {f['auc']:.3f} |"
        for name, f in shifts.items()
    )
    return f"""
The same validation images, changed as another hospital's might be (tone curve, sharpness,
framing), at the same threshold; a drop here is a drop to expect elsewhere:

| images | sensitivity | specificity | AUC |
|---|---|---|---|
| as they are | {summary["sensitivity"]:.3f} | {summary["specificity"]:.3f} | {summary["auc"]:.3f} |
{rows}
"""


def write_model_card(bundle: Path, metadata: dict, report: ValidationReport) -> None:
    """``docs/README.md`` and its figures from the bundle's metadata (description, intended use,
    population, limitations, input domain) and the validation report."""
    docs = bundle / "docs"
    docs.mkdir(exist_ok=True)
    summary, training = report.summary(), metadata["training"]
    channels = metadata["network_data_format"]["outputs"]["pred"]["channel_def"]
    negative, positive = channels["0"], channels["1"]
    operating = (1 - summary["specificity"], summary["sensitivity"])
    draw_roc(report.roc_points(), report.auc, operating, report.threshold, docs / "roc.png")
    draw_reliability(
        reliability(report.labels, report.uncalibrated),
        reliability(report.labels, report.probabilities),
        docs / "reliability.png",
    )
    confusion = summary["confusion"]
    draw_confusion(confusion, positive, negative, docs / "confusion.png")
    calibration = "\n".join(
        f"| {p:.2f} | {o:.2f} | {n} |"
        for p, o, n in reliability(report.labels, report.probabilities)
    )
    domain_text = _domain_text(metadata.get("input_domain", {}))
    (docs / "README.md").write_text(
        f"""# {metadata["name"]} (version {metadata["version"]})

{metadata["description"]}

## Intended use
{metadata["intended_use"]}

## Who it was trained on
{metadata["population"]}

## Limitations
{metadata["limitations"]}

## Inputs outside its domain
{domain_text}

## How well it does on held-out patients ({summary["images"]} images)
The probability a result reports is calibrated: of the images given p({positive}) = 0.8, about
80 % had {positive} (on validation data). The result says {positive} when that probability is at
least **{summary["threshold"]}**, the middle of the thresholds that maximise sensitivity +
specificity on the validation patients (chosen on the calibrated scale; no test data was used).

| | value (95% bootstrap CI, resampling patients) |
|---|---|
| sensitivity (of {positive} images, flagged) | {_interval(summary, "sensitivity")} |
| specificity (of {negative} images, not flagged) | {_interval(summary, "specificity")} |
| accuracy | {_interval(summary, "accuracy")} |
| AUC | {_interval(summary, "auc")} |

Confusion matrix at the threshold (`confusion.png`):

| | predicted {positive} | predicted {negative} |
|---|---|---|
| {positive} | {confusion["true_positive"]} | {confusion["false_negative"]} |
| {negative} | {confusion["false_positive"]} | {confusion["true_negative"]} |

ROC curve with the operating point marked: `roc.png`.
{_shifts_text(metadata.get("validation_shifts", {}), summary)}
![ROC](roc.png) ![Confusion matrix](confusion.png)

## Calibration
Logistic scaling of the network's logit difference: p = sigmoid(difference / T + b), with
T = {report.calibration.temperature:.4f} and b = {report.calibration.bias:.4f} fitted on the
validation patients and stored in `configs/metadata.json` (`calibration`); applied to every
probability the node reports. It keeps the order of the images (AUC unchanged) and holds at
the validation prevalence of {positive} ({report.labels.mean():.0%}); where {positive} is
rarer, the same probability overstates it.
Expected calibration error {summary["expected_calibration_error_uncalibrated"]} before,
{summary["expected_calibration_error"]} after (`reliability.png`: before in grey, after in blue);
{summary["expected_calibration_error_cross_fitted"]} when fitted on half of the validation patients
and measured on the other half (the fairer figure: the others are measured on the images the
calibration was fitted on).

![Reliability](reliability.png)

| mean calibrated p({positive}) | observed fraction {positive} | images |
|---|---|---|
{calibration}

## Reading these figures
The validation patients come from the same hospital, period and preparation as the training
patients, so these figures flatter the model; on other data (other sites, adults, other devices)
expect lower specificity (the table of changed images above shows how far a change in the images
alone can move it).

## Data and training
- Data: {training["data"]}. {metadata["data_source"]}
- Network: see `configs/inference.json`; pre-processing: the same deterministic transforms for
  training and inference (resize, robust contrast stretch); augmentation during training only
  (affine, tone curves, uneven exposure, intensity scale, blur or sharpening, noise, hidden
  patches).
- Reproduce: `{training["command"]}` (seed {training["seed"]}, {training["epochs"]} epochs,
  {training["minutes"]} minutes on the 2-core CPU it was trained on). This report alone:
  `{metadata["evaluation"]["command"]}`.
"""
    )
